//! Writer for whisper.cpp's ggml model files, converting from a CTranslate2 Whisper model.
//!
//! The file is: magic `ggml`, ten hyper-parameters, the file type, the mel filterbank,
//! the vocabulary (raw token bytes, special tokens left out), then every tensor with
//! OpenAI's names, dimensions in reversed (ggml) order. Matrices are stored in the
//! chosen weight type; vectors, conv biases and positional embeddings stay `f32`;
//! conv kernels are `f16` (whisper.cpp's layout for every weight type but `f32`).

use std::collections::BTreeMap;
use std::io::Write;

use super::ct2::{Ct2Error, Ct2Model};
use crate::audio::mel::slaney_mel_filters;

const GGML_MAGIC: u32 = 0x6767_6d6c;
/// Values per block of the quantized types (ggml's QK8_0 and QK4_0).
const Q8_0_BLOCK: usize = 32;

/// Storage type for the weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    F32,
    F16,
    Q8_0,
    Q4_0,
}

impl WeightType {
    /// Parses `f32`, `f16`, `q8_0` or `q4_0`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "f32" => Some(WeightType::F32),
            "f16" => Some(WeightType::F16),
            "q8_0" => Some(WeightType::Q8_0),
            "q4_0" => Some(WeightType::Q4_0),
            _ => None,
        }
    }

    /// whisper.cpp's `ftype` header value.
    fn file_type(self) -> i32 {
        match self {
            WeightType::F32 => 0,
            WeightType::F16 => 1,
            WeightType::Q8_0 => 2007,
            WeightType::Q4_0 => 2002,
        }
    }
}

/// ggml's per-tensor type codes.
#[derive(Debug, Clone, Copy)]
enum TensorType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q8_0 = 8,
}

/// What can go wrong converting a model.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Ct2(#[from] Ct2Error),
    #[error("tokenizer.json: {0}")]
    Tokenizer(String),
    #[error("the model does not look like Whisper: {0}")]
    Shape(String),
    #[error("writing the ggml file: {0}")]
    Io(#[from] std::io::Error),
}

/// The model dimensions whisper.cpp reads from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hparams {
    pub n_vocab: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_mels: usize,
}

impl Hparams {
    /// Reads the dimensions off the CTranslate2 tensors.
    pub fn from_ct2(model: &Ct2Model) -> Result<Self, ConvertError> {
        let dim = |name: &str, axis: usize| -> Result<usize, ConvertError> {
            model
                .get(name)?
                .dims
                .get(axis)
                .copied()
                .ok_or_else(|| ConvertError::Shape(format!("{name} has no axis {axis}")))
        };
        let heads = |name: &str| -> Result<usize, ConvertError> {
            let v = model.get(name)?.scalar_i64()?;
            usize::try_from(v).map_err(|_| ConvertError::Shape(format!("{name} = {v}")))
        };
        let layers = |prefix: &str| {
            (0..)
                .take_while(|i| {
                    model
                        .variables
                        .contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))
                })
                .count()
        };
        Ok(Hparams {
            n_vocab: dim("decoder/embeddings/weight", 0)?,
            n_audio_ctx: dim("encoder/position_encodings/encodings", 0)?,
            n_audio_state: dim("encoder/position_encodings/encodings", 1)?,
            n_audio_head: heads("encoder/num_heads")?,
            n_audio_layer: layers("encoder"),
            n_text_ctx: dim("decoder/position_encodings/encodings", 0)?,
            n_text_state: dim("decoder/embeddings/weight", 1)?,
            n_text_head: heads("decoder/num_heads")?,
            n_text_layer: layers("decoder"),
            n_mels: dim("encoder/conv1/weight", 1)?,
        })
    }

    /// Multilingual models have 51865 tokens; English-only ones 51864.
    pub fn is_multilingual(&self) -> bool {
        self.n_vocab >= 51865
    }

    /// Number of ordinary (non-special) tokens: everything before end-of-text.
    fn n_regular_tokens(&self) -> usize {
        if self.is_multilingual() {
            50257
        } else {
            50256
        }
    }
}

/// One tensor ready to write: OpenAI name, numpy-order shape, values.
struct Tensor {
    name: String,
    dims: Vec<usize>,
    values: Vec<f32>,
}

/// Converts a CTranslate2 Whisper model plus its `tokenizer.json` into a ggml file.
pub fn convert(
    model: &Ct2Model,
    tokenizer_json: &str,
    weight_type: WeightType,
    out: &mut impl Write,
) -> Result<Hparams, ConvertError> {
    if model.spec_name != "WhisperSpec" {
        return Err(ConvertError::Shape(format!("spec {}", model.spec_name)));
    }
    let hp = Hparams::from_ct2(model)?;
    let vocab = vocabulary_bytes(tokenizer_json, hp.n_regular_tokens())?;
    let tensors = openai_tensors(model, &hp)?;

    out.write_all(&GGML_MAGIC.to_le_bytes())?;
    for v in [
        hp.n_vocab,
        hp.n_audio_ctx,
        hp.n_audio_state,
        hp.n_audio_head,
        hp.n_audio_layer,
        hp.n_text_ctx,
        hp.n_text_state,
        hp.n_text_head,
        hp.n_text_layer,
        hp.n_mels,
    ] {
        write_i32(out, v as i32)?;
    }
    write_i32(out, weight_type.file_type())?;

    let filters = slaney_mel_filters(16_000, 400, hp.n_mels);
    write_i32(out, hp.n_mels as i32)?;
    write_i32(out, 201)?;
    for v in &filters {
        out.write_all(&v.to_le_bytes())?;
    }

    write_i32(out, vocab.len() as i32)?;
    for token in &vocab {
        write_i32(out, token.len() as i32)?;
        out.write_all(token)?;
    }

    for tensor in &tensors {
        write_tensor(out, tensor, weight_type)?;
    }
    out.flush()?;
    Ok(hp)
}

/// The bytes of tokens `0..n` from a Hugging Face `tokenizer.json` (GPT-2 byte-level BPE).
fn vocabulary_bytes(tokenizer_json: &str, n: usize) -> Result<Vec<Vec<u8>>, ConvertError> {
    let doc: serde_json::Value =
        serde_json::from_str(tokenizer_json).map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
    let vocab = doc
        .pointer("/model/vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| ConvertError::Tokenizer("no model.vocab object".into()))?;
    let unicode_to_byte: BTreeMap<char, u8> = byte_to_unicode()
        .into_iter()
        .enumerate()
        .map(|(b, c)| (c, b as u8))
        .collect();
    let mut tokens: Vec<Option<Vec<u8>>> = vec![None; n];
    for (text, id) in vocab {
        let Some(id) = id.as_u64().map(|i| i as usize) else {
            continue;
        };
        if id >= n {
            continue;
        }
        let bytes = text
            .chars()
            .map(|c| unicode_to_byte.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| ConvertError::Tokenizer(format!("token {id} is not byte-level")))?;
        tokens[id] = Some(bytes);
    }
    tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.ok_or_else(|| ConvertError::Tokenizer(format!("token {id} missing"))))
        .collect()
}

/// GPT-2's reversible map from bytes to printable unicode characters.
fn byte_to_unicode() -> Vec<char> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut next_extra = 256u32;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                let c = char::from_u32(next_extra).unwrap_or('?');
                next_extra += 1;
                c
            }
        })
        .collect()
}

/// All tensors under OpenAI's names, fused projections split, key biases dropped.
fn openai_tensors(model: &Ct2Model, hp: &Hparams) -> Result<Vec<Tensor>, ConvertError> {
    let mut out = Vec::new();
    let mut take = |from: &str, to: &str| -> Result<(), ConvertError> {
        let var = model.get(from)?;
        out.push(Tensor {
            name: to.to_string(),
            dims: var.dims.clone(),
            values: var.to_f32()?,
        });
        Ok(())
    };

    take("encoder/conv1/weight", "encoder.conv1.weight")?;
    take("encoder/conv1/bias", "encoder.conv1.bias")?;
    take("encoder/conv2/weight", "encoder.conv2.weight")?;
    take("encoder/conv2/bias", "encoder.conv2.bias")?;
    take(
        "encoder/position_encodings/encodings",
        "encoder.positional_embedding",
    )?;
    take("encoder/layer_norm/gamma", "encoder.ln_post.weight")?;
    take("encoder/layer_norm/beta", "encoder.ln_post.bias")?;
    take(
        "decoder/embeddings/weight",
        "decoder.token_embedding.weight",
    )?;
    take(
        "decoder/position_encodings/encodings",
        "decoder.positional_embedding",
    )?;
    take("decoder/layer_norm/gamma", "decoder.ln.weight")?;
    take("decoder/layer_norm/beta", "decoder.ln.bias")?;

    for (prefix, n_layers) in [("encoder", hp.n_audio_layer), ("decoder", hp.n_text_layer)] {
        for i in 0..n_layers {
            let src = format!("{prefix}/layer_{i}");
            let dst = format!("{prefix}.blocks.{i}");
            take(
                &format!("{src}/self_attention/linear_1/weight"),
                &format!("{dst}.attn.out.weight"),
            )?;
            take(
                &format!("{src}/self_attention/linear_1/bias"),
                &format!("{dst}.attn.out.bias"),
            )?;
            take(
                &format!("{src}/self_attention/layer_norm/gamma"),
                &format!("{dst}.attn_ln.weight"),
            )?;
            take(
                &format!("{src}/self_attention/layer_norm/beta"),
                &format!("{dst}.attn_ln.bias"),
            )?;
            take(
                &format!("{src}/ffn/linear_0/weight"),
                &format!("{dst}.mlp.0.weight"),
            )?;
            take(
                &format!("{src}/ffn/linear_0/bias"),
                &format!("{dst}.mlp.0.bias"),
            )?;
            take(
                &format!("{src}/ffn/linear_1/weight"),
                &format!("{dst}.mlp.2.weight"),
            )?;
            take(
                &format!("{src}/ffn/linear_1/bias"),
                &format!("{dst}.mlp.2.bias"),
            )?;
            take(
                &format!("{src}/ffn/layer_norm/gamma"),
                &format!("{dst}.mlp_ln.weight"),
            )?;
            take(
                &format!("{src}/ffn/layer_norm/beta"),
                &format!("{dst}.mlp_ln.bias"),
            )?;
            if prefix == "decoder" {
                take(
                    &format!("{src}/attention/linear_0/weight"),
                    &format!("{dst}.cross_attn.query.weight"),
                )?;
                take(
                    &format!("{src}/attention/linear_0/bias"),
                    &format!("{dst}.cross_attn.query.bias"),
                )?;
                take(
                    &format!("{src}/attention/linear_2/weight"),
                    &format!("{dst}.cross_attn.out.weight"),
                )?;
                take(
                    &format!("{src}/attention/linear_2/bias"),
                    &format!("{dst}.cross_attn.out.bias"),
                )?;
                take(
                    &format!("{src}/attention/layer_norm/gamma"),
                    &format!("{dst}.cross_attn_ln.weight"),
                )?;
                take(
                    &format!("{src}/attention/layer_norm/beta"),
                    &format!("{dst}.cross_attn_ln.bias"),
                )?;
            }
        }
    }

    for (prefix, n_layers) in [("encoder", hp.n_audio_layer), ("decoder", hp.n_text_layer)] {
        for i in 0..n_layers {
            let src = format!("{prefix}/layer_{i}");
            let dst = format!("{prefix}.blocks.{i}");
            split_fused(
                model,
                &format!("{src}/self_attention/linear_0"),
                &[
                    Some(format!("{dst}.attn.query")),
                    Some(format!("{dst}.attn.key")),
                    Some(format!("{dst}.attn.value")),
                ],
                &mut out,
            )?;
            if prefix == "decoder" {
                split_fused(
                    model,
                    &format!("{src}/attention/linear_1"),
                    &[
                        Some(format!("{dst}.cross_attn.key")),
                        Some(format!("{dst}.cross_attn.value")),
                    ],
                    &mut out,
                )?;
            }
        }
    }
    Ok(out)
}

/// Splits a fused projection (`[k*d, d]` weight, `[k*d]` bias) into `k` equal parts.
/// Key projections have no bias in Whisper, so the bias of a part named `*.key` is dropped.
fn split_fused(
    model: &Ct2Model,
    prefix: &str,
    parts: &[Option<String>],
    out: &mut Vec<Tensor>,
) -> Result<(), ConvertError> {
    let weight = model.get(&format!("{prefix}/weight"))?;
    let bias = model.get(&format!("{prefix}/bias"))?;
    let (rows, cols) = match weight.dims[..] {
        [r, c] if r % parts.len() == 0 => (r / parts.len(), c),
        _ => return Err(ConvertError::Shape(format!("{prefix}: {:?}", weight.dims))),
    };
    let w = weight.to_f32()?;
    let b = bias.to_f32()?;
    if b.len() != rows * parts.len() {
        return Err(ConvertError::Shape(format!(
            "{prefix}/bias: {:?}",
            bias.dims
        )));
    }
    for (k, name) in parts.iter().enumerate() {
        let Some(name) = name else { continue };
        out.push(Tensor {
            name: format!("{name}.weight"),
            dims: vec![rows, cols],
            values: w[k * rows * cols..(k + 1) * rows * cols].to_vec(),
        });
        if !name.ends_with(".key") {
            out.push(Tensor {
                name: format!("{name}.bias"),
                dims: vec![rows],
                values: b[k * rows..(k + 1) * rows].to_vec(),
            });
        }
    }
    Ok(())
}

fn tensor_type(tensor: &Tensor, weight_type: WeightType) -> TensorType {
    let keep_f32 = tensor.dims.len() < 2
        || tensor.name.ends_with("positional_embedding")
        || tensor.name == "encoder.conv1.bias"
        || tensor.name == "encoder.conv2.bias";
    if keep_f32 || weight_type == WeightType::F32 {
        return TensorType::F32;
    }
    let row = tensor.dims.last().copied().unwrap_or(0);
    let blocks = tensor.dims.len() == 2 && row % Q8_0_BLOCK == 0;
    match weight_type {
        WeightType::Q8_0 if blocks => TensorType::Q8_0,
        WeightType::Q4_0 if blocks => TensorType::Q4_0,
        _ => TensorType::F16,
    }
}

fn write_tensor(
    out: &mut impl Write,
    tensor: &Tensor,
    weight_type: WeightType,
) -> Result<(), ConvertError> {
    // Conv biases are stored as [d, 1] so that they broadcast over time in ggml.
    let dims = if tensor.name.starts_with("encoder.conv") && tensor.name.ends_with(".bias") {
        vec![tensor.dims[0], 1]
    } else {
        tensor.dims.clone()
    };
    let ttype = tensor_type(tensor, weight_type);
    write_i32(out, dims.len() as i32)?;
    write_i32(out, tensor.name.len() as i32)?;
    write_i32(out, ttype as i32)?;
    for d in dims.iter().rev() {
        write_i32(out, *d as i32)?;
    }
    out.write_all(tensor.name.as_bytes())?;
    match ttype {
        TensorType::F32 => {
            for v in &tensor.values {
                out.write_all(&v.to_le_bytes())?;
            }
        }
        TensorType::F16 => {
            for v in &tensor.values {
                out.write_all(&half::f16::from_f32(*v).to_le_bytes())?;
            }
        }
        TensorType::Q8_0 => {
            for block in tensor.values.chunks(Q8_0_BLOCK) {
                out.write_all(&quantize_q8_0(block))?;
            }
        }
        TensorType::Q4_0 => {
            for block in tensor.values.chunks(Q8_0_BLOCK) {
                out.write_all(&quantize_q4_0(block))?;
            }
        }
    }
    Ok(())
}

/// One q8_0 block: an `f16` scale, then 32 signed bytes (`x ≈ scale * q`).
fn quantize_q8_0(block: &[f32]) -> [u8; 2 + Q8_0_BLOCK] {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = amax / 127.0;
    let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let mut bytes = [0u8; 2 + Q8_0_BLOCK];
    bytes[..2].copy_from_slice(&half::f16::from_f32(scale).to_le_bytes());
    for (slot, v) in bytes[2..].iter_mut().zip(block) {
        // f32::round rounds half away from zero, as ggml's roundf does.
        *slot = ((v * inverse).round() as i8) as u8;
    }
    bytes
}

/// One q4_0 block: an `f16` scale, then 32 four-bit values offset by 8, value `j` in the
/// low nibble of byte `j` and value `16 + j` in its high nibble (`x ≈ scale * (q - 8)`).
/// The scale maps the value of largest magnitude to -8, as ggml's reference quantizer does.
fn quantize_q4_0(block: &[f32]) -> [u8; 2 + Q8_0_BLOCK / 2] {
    let extreme = block
        .iter()
        .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
    let scale = extreme / -8.0;
    let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let level = |v: f32| ((v * inverse + 8.5) as i8).min(15) as u8;
    let mut bytes = [0u8; 2 + Q8_0_BLOCK / 2];
    bytes[..2].copy_from_slice(&half::f16::from_f32(scale).to_le_bytes());
    let half_block = Q8_0_BLOCK / 2;
    for j in 0..half_block {
        bytes[2 + j] = level(block[j]) | (level(block[half_block + j]) << 4);
    }
    bytes
}

fn write_i32(out: &mut impl Write, v: i32) -> std::io::Result<()> {
    out.write_all(&v.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection_matching_gpt2() {
        let map = byte_to_unicode();
        assert_eq!(map[b'a' as usize], 'a');
        assert_eq!(map[b' ' as usize], 'Ġ');
        assert_eq!(map[b'\n' as usize], 'Ċ');
        let mut sorted = map.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn vocabulary_decodes_byte_level_tokens_in_id_order() {
        let json = r#"{"model":{"vocab":{"Ġhello":1,"!":0,"Ċ":2,"<|endoftext|>":3}}}"#;
        let vocab = vocabulary_bytes(json, 3).unwrap();
        assert_eq!(
            vocab,
            vec![b"!".to_vec(), b" hello".to_vec(), b"\n".to_vec()]
        );
        assert!(vocabulary_bytes(json, 5).is_err());
    }

    #[test]
    fn q8_0_round_trips_within_half_a_step() {
        let block: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) * 0.37).collect();
        let bytes = quantize_q8_0(&block);
        let scale = half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        for (q, v) in bytes[2..].iter().zip(&block) {
            let restored = (*q as i8) as f32 * scale;
            assert!(
                (restored - v).abs() <= scale * 0.5 + 1e-3,
                "{restored} vs {v}"
            );
        }
        let zeros = quantize_q8_0(&[0.0; 32]);
        assert!(zeros.iter().all(|b| *b == 0));
    }

    #[test]
    fn q4_0_round_trips_within_half_a_step() {
        let block: Vec<f32> = (0..32)
            .map(|i| ((i * 7) % 32) as f32 * 0.11 - 2.0)
            .collect();
        let bytes = quantize_q4_0(&block);
        let scale = half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        for (j, v) in block.iter().enumerate() {
            let byte = bytes[2 + j % 16];
            let q = if j < 16 { byte & 0x0f } else { byte >> 4 };
            let restored = (q as f32 - 8.0) * scale;
            assert!(
                (restored - v).abs() <= scale.abs() * 0.5 + 1e-3,
                "value {j}: {restored} vs {v}"
            );
        }
        // The value of largest magnitude sits on level 0 (-8 steps).
        assert_eq!(bytes[2] & 0x0f, 0, "{:?}", &block[..16]);
        assert!(quantize_q4_0(&[0.0; 32])[2..].iter().all(|b| *b == 0x88));
    }
}
