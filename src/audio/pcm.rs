//! Raw PCM bodies described only by their media type: `audio/L16;rate=N;channels=C`
//! (RFC 2586/3551: big-endian signed 16-bit unless `endianness=little-endian`) and
//! `audio/pcm;rate=N;channels=C;encoding=s16le|s16be|f32le` (little-endian s16 by default).
//! A missing rate means 16 kHz, a missing channel count means mono.

use super::{check_layout, downmix, AudioError, DecodeLimits, MediaType};

/// Sample encodings of raw bodies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoding {
    S16Le,
    S16Be,
    F32Le,
}

impl Encoding {
    fn width(self) -> usize {
        match self {
            Encoding::S16Le | Encoding::S16Be => 2,
            Encoding::F32Le => 4,
        }
    }
}

/// Layout of a raw PCM body.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFormat {
    pub encoding: Encoding,
    pub rate: u32,
    pub channels: usize,
}

impl RawFormat {
    /// The raw format a media type describes: `None` if it is no raw PCM type,
    /// `Some(Err)` if it is one with unusable parameters.
    pub fn from_media_type(t: &MediaType) -> Option<Result<Self, AudioError>> {
        let default_encoding = match t.essence.as_str() {
            "audio/l16" => match t.param("endianness") {
                Some("little-endian") => Encoding::S16Le,
                _ => Encoding::S16Be,
            },
            "audio/pcm" | "audio/x-raw" | "audio/raw" => Encoding::S16Le,
            _ => return None,
        };
        Some(Self::with_params(t, default_encoding))
    }

    fn with_params(t: &MediaType, default_encoding: Encoding) -> Result<Self, AudioError> {
        let number = |name: &str, default: u64| -> Result<u64, AudioError> {
            match t.param(name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    AudioError::Undecodable(format!(
                        "{} parameter {name}={v:?} is not a number",
                        t.essence
                    ))
                }),
            }
        };
        let rate = u32::try_from(number("rate", 16_000)?)
            .map_err(|_| AudioError::Undecodable("sample rate out of range".into()))?;
        let channels = usize::try_from(number("channels", 1)?)
            .map_err(|_| AudioError::Undecodable("channel count out of range".into()))?;
        let encoding = match t.param("encoding").or(t.param("format")) {
            None => default_encoding,
            Some("s16le") | Some("pcm_s16le") => Encoding::S16Le,
            Some("s16be") | Some("pcm_s16be") => Encoding::S16Be,
            Some("f32le") | Some("pcm_f32le") | Some("float32") => Encoding::F32Le,
            Some(other) => {
                return Err(AudioError::Undecodable(format!(
                    "raw encoding {other:?} (s16le, s16be or f32le accepted)"
                )))
            }
        };
        check_layout(rate, channels)?;
        Ok(RawFormat {
            encoding,
            rate,
            channels,
        })
    }
}

/// Decodes a raw body into mono samples at the source rate, plus warnings.
pub fn decode(
    bytes: &[u8],
    format: &RawFormat,
    limits: DecodeLimits,
) -> Result<(Vec<f32>, Vec<String>), AudioError> {
    let frame_bytes = format.encoding.width() * format.channels;
    let frames = bytes.len() / frame_bytes;
    if frames as f64 > limits.max_seconds * format.rate as f64 {
        return Err(AudioError::TooLong {
            limit: limits.max_seconds,
        });
    }
    let mut warnings = Vec::new();
    let whole = &bytes[..frames * frame_bytes];
    if whole.len() != bytes.len() {
        warnings.push(format!(
            "{} trailing bytes do not form a whole sample frame and were ignored",
            bytes.len() - whole.len()
        ));
    }
    let interleaved: Vec<f32> = match format.encoding {
        Encoding::S16Le => s16le(whole),
        Encoding::S16Be => whole
            .chunks_exact(2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]) as f32 / 32768.0)
            .collect(),
        Encoding::F32Le => whole
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    };
    let mono = downmix(&interleaved, format.channels, &mut warnings)?;
    Ok((mono, warnings))
}

/// 16-bit little-endian samples in [-1, 1) (an odd last byte is not a sample).
pub fn s16le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits { max_seconds: 10.0 };

    fn format_of(content_type: &str) -> RawFormat {
        RawFormat::from_media_type(&MediaType::parse(content_type))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn l16_is_big_endian_by_default() {
        let f = format_of("audio/L16;rate=8000");
        assert_eq!(f.encoding, Encoding::S16Be);
        assert_eq!(f.rate, 8000);
        let (mono, _) = decode(&[0x40, 0x00], &f, LIMITS).unwrap();
        assert_eq!(mono, vec![0.5]);
        assert_eq!(
            format_of("audio/L16;endianness=little-endian").encoding,
            Encoding::S16Le
        );
    }

    #[test]
    fn pcm_defaults_to_16k_mono_s16le_and_downmixes() {
        let f = format_of("audio/pcm");
        assert_eq!(
            f,
            RawFormat {
                encoding: Encoding::S16Le,
                rate: 16_000,
                channels: 1
            }
        );
        let stereo = format_of("audio/pcm;rate=48000;channels=2;encoding=f32le");
        let mut bytes = Vec::new();
        let mut samples = vec![0.5f32, 0.25, f32::INFINITY, 0.0];
        samples.extend(std::iter::repeat_n(0.0, 200));
        for v in &samples {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.push(7);
        let (mono, warnings) = decode(&bytes, &stereo, LIMITS).unwrap();
        assert_eq!(mono[..2], [0.375, 0.0]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        // Mostly NaN: corrupt, refused.
        let nan: Vec<u8> = [f32::NAN; 64]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(decode(&nan, &stereo, LIMITS).is_err());
    }

    #[test]
    fn rejects_absurd_parameters_and_too_long_audio() {
        for bad in [
            "audio/pcm;rate=0",
            "audio/pcm;rate=abc",
            "audio/pcm;channels=0",
            "audio/pcm;rate=99999999999",
            "audio/pcm;encoding=mulaw",
        ] {
            let parsed = RawFormat::from_media_type(&MediaType::parse(bad)).unwrap();
            assert!(parsed.is_err(), "{bad}");
        }
        assert!(RawFormat::from_media_type(&MediaType::parse("audio/wav")).is_none());
        let f = format_of("audio/pcm;rate=1000");
        assert!(matches!(
            decode(&vec![0u8; 2 * 11_000], &f, LIMITS),
            Err(AudioError::TooLong { .. })
        ));
    }
}
