//! Reader for CTranslate2 `model.bin` files (the format faster-whisper uses).
//!
//! Layout (little-endian): `u32 version (6)`, `str spec_name`, `u32 spec_revision`,
//! `u32 n_vars`, then per variable `str name; u8 rank; u32 dims[rank]; u8 dtype;
//! u32 nbytes; bytes`, then `u32 n_aliases` pairs of `str alias; str target`.
//! A `str` is a `u16` length that counts a trailing NUL, then the bytes.

use std::collections::BTreeMap;
use std::io::Read;

/// Element type of a stored variable, as CTranslate2 numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_code(code: u8) -> Result<Self, Ct2Error> {
        Ok(match code {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::BF16,
            other => return Err(Ct2Error::Format(format!("unknown dtype code {other}"))),
        })
    }

    fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One named tensor (or scalar) of a CTranslate2 model.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Shape in the stored (row-major, numpy) order; empty for scalars.
    pub dims: Vec<usize>,
    /// Element type of `bytes`.
    pub dtype: DType,
    /// Raw little-endian element bytes.
    pub bytes: Vec<u8>,
}

impl Variable {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Whether the variable holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements widened to `f32` (floating types only).
    pub fn to_f32(&self) -> Result<Vec<f32>, Ct2Error> {
        let out = match self.dtype {
            DType::F32 => self
                .bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DType::F16 => self
                .bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => self
                .bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Ct2Error::Format(format!(
                    "expected a floating tensor, found {other:?}"
                )))
            }
        };
        Ok(out)
    }

    /// The value of an integer scalar.
    pub fn scalar_i64(&self) -> Result<i64, Ct2Error> {
        let b = &self.bytes;
        let v = match (self.dtype, b.len()) {
            (DType::I8, 1) => b[0] as i8 as i64,
            (DType::I16, 2) => i16::from_le_bytes([b[0], b[1]]) as i64,
            (DType::I32, 4) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            _ => return Err(Ct2Error::Format("not an integer scalar".into())),
        };
        Ok(v)
    }
}

/// A parsed CTranslate2 model: its spec name and all variables, aliases resolved.
#[derive(Debug)]
pub struct Ct2Model {
    /// `WhisperSpec` for Whisper models.
    pub spec_name: String,
    /// Variables by name.
    pub variables: BTreeMap<String, Variable>,
}

/// What can go wrong reading a CTranslate2 model.
#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    #[error("reading the model file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a CTranslate2 model: {0}")]
    Format(String),
    #[error("the model has no variable {0}")]
    Missing(String),
}

impl Ct2Model {
    /// Parses a whole `model.bin` from a reader.
    pub fn read(mut input: impl Read) -> Result<Self, Ct2Error> {
        let version = read_u32(&mut input)?;
        if version != 6 {
            return Err(Ct2Error::Format(format!(
                "binary version {version} (only 6 is supported)"
            )));
        }
        let spec_name = read_str(&mut input)?;
        let _spec_revision = read_u32(&mut input)?;
        let n_vars = read_u32(&mut input)?;
        let mut variables = BTreeMap::new();
        for _ in 0..n_vars {
            let name = read_str(&mut input)?;
            let rank = read_u8(&mut input)? as usize;
            let dims = (0..rank)
                .map(|_| read_u32(&mut input).map(|d| d as usize))
                .collect::<Result<Vec<_>, _>>()?;
            let dtype = DType::from_code(read_u8(&mut input)?)?;
            let nbytes = read_u32(&mut input)? as usize;
            let expected = dims.iter().product::<usize>() * dtype.size();
            if nbytes != expected {
                return Err(Ct2Error::Format(format!(
                    "{name}: {nbytes} bytes for shape {dims:?} of {dtype:?}"
                )));
            }
            let mut bytes = vec![0u8; nbytes];
            input.read_exact(&mut bytes)?;
            variables.insert(name, Variable { dims, dtype, bytes });
        }
        let n_aliases = read_u32(&mut input)?;
        for _ in 0..n_aliases {
            let alias = read_str(&mut input)?;
            let target = read_str(&mut input)?;
            let var = variables
                .get(&target)
                .cloned()
                .ok_or_else(|| Ct2Error::Missing(target.clone()))?;
            variables.insert(alias, var);
        }
        Ok(Ct2Model {
            spec_name,
            variables,
        })
    }

    /// The variable called `name`.
    pub fn get(&self, name: &str) -> Result<&Variable, Ct2Error> {
        self.variables
            .get(name)
            .ok_or_else(|| Ct2Error::Missing(name.to_string()))
    }
}

fn read_u8(input: &mut impl Read) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    input.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u16(input: &mut impl Read) -> std::io::Result<u16> {
    let mut b = [0u8; 2];
    input.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn read_u32(input: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_str(input: &mut impl Read) -> Result<String, Ct2Error> {
    let len = read_u16(input)? as usize;
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes)?;
    if bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|_| Ct2Error::Format("a name is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn sample_file() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&6u32.to_le_bytes());
        put_str(&mut f, "WhisperSpec");
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&2u32.to_le_bytes());
        // a 2x2 f16 tensor
        put_str(&mut f, "a/weight");
        f.push(2);
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(&2u32.to_le_bytes());
        f.push(4);
        f.extend_from_slice(&8u32.to_le_bytes());
        for v in [1.0f32, -2.0, 0.5, 3.0] {
            f.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
        // an int16 scalar
        put_str(&mut f, "a/num_heads");
        f.push(0);
        f.push(2);
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(&8i16.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        put_str(&mut f, "b/weight");
        put_str(&mut f, "a/weight");
        f
    }

    #[test]
    fn reads_tensors_scalars_and_aliases() {
        let model = Ct2Model::read(&sample_file()[..]).unwrap();
        assert_eq!(model.spec_name, "WhisperSpec");
        let w = model.get("a/weight").unwrap();
        assert_eq!(w.dims, vec![2, 2]);
        assert_eq!(w.to_f32().unwrap(), vec![1.0, -2.0, 0.5, 3.0]);
        assert_eq!(model.get("a/num_heads").unwrap().scalar_i64().unwrap(), 8);
        assert_eq!(model.get("b/weight").unwrap().dims, vec![2, 2]);
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        let file = sample_file();
        assert!(Ct2Model::read(&file[..file.len() - 3]).is_err());
        let mut other = file.clone();
        other[0] = 5;
        assert!(matches!(
            Ct2Model::read(&other[..]),
            Err(Ct2Error::Format(_))
        ));
        assert!(matches!(
            Ct2Model::read(&file[..]).unwrap().get("nope"),
            Err(Ct2Error::Missing(_))
        ));
    }
}
