//! The offline model converter (`handler convert-model`): reads CTranslate2 Whisper
//! directories (what the registries ship) and writes whisper.cpp's ggml format, once, at
//! setup time. The service itself loads ggml files (`asr`).

mod ct2;
mod ggml;

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

pub use ggml::{ConvertError, Hparams, WeightType};

/// Converts the CTranslate2 directory `ct2_dir` (`model.bin`, `tokenizer.json`) into the
/// ggml file `out`, written atomically (a temporary file renamed into place).
pub fn convert_ct2_dir(
    ct2_dir: &Path,
    out: &Path,
    weight_type: WeightType,
) -> Result<Hparams, ConvertError> {
    let model = ct2::Ct2Model::read(BufReader::new(File::open(ct2_dir.join("model.bin"))?))?;
    let tokenizer = std::fs::read_to_string(ct2_dir.join("tokenizer.json"))?;
    let partial = out.with_extension("partial");
    let hp = {
        let mut writer = BufWriter::new(File::create(&partial)?);
        ggml::convert(&model, &tokenizer, weight_type, &mut writer)?
    };
    std::fs::rename(&partial, out)?;
    Ok(hp)
}
