//! Container decoding through symphonia (WAV in every PCM flavour today; the same path
//! will take the other containers). Decodes what is valid and reports the rest.

use std::io::Cursor;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::DecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::{check_layout, downmix, AudioError, DecodeLimits};

/// Decoded, downmixed audio at the source rate.
pub struct RawAudio {
    pub mono: Vec<f32>,
    pub rate: u32,
    pub channels: usize,
    pub warnings: Vec<String>,
}

/// Checks the `fmt ` chunk before symphonia sees it: some impossible layouts (a 0 Hz rate)
/// make symphonia panic instead of failing.
fn check_wav_format(bytes: &[u8]) -> Result<(), AudioError> {
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        if id == b"fmt " {
            let fmt = bytes
                .get(pos + 8..pos + 8 + 16)
                .ok_or_else(|| AudioError::Undecodable("the WAV fmt chunk is cut short".into()))?;
            let channels = u16::from_le_bytes([fmt[2], fmt[3]]) as usize;
            let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
            let block_align = u16::from_le_bytes([fmt[12], fmt[13]]);
            let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
            check_layout(rate, channels)?;
            if block_align == 0 || !matches!(bits, 8 | 16 | 24 | 32 | 64) {
                return Err(AudioError::Undecodable(format!(
                    "WAV with {bits}-bit samples and block size {block_align} is not valid PCM"
                )));
            }
            return Ok(());
        }
        pos = pos
            .saturating_add(8)
            .saturating_add(len)
            .saturating_add(len & 1);
    }
    Err(AudioError::Undecodable(
        "the WAV file has no fmt chunk".into(),
    ))
}

/// Decodes a complete WAV file held in memory. A panic inside the decoder on hostile bytes
/// becomes a 422 for this request, never a failed worker.
pub fn decode_wav(bytes: &[u8], limits: DecodeLimits) -> Result<RawAudio, AudioError> {
    check_wav_format(bytes)?;
    std::panic::catch_unwind(|| decode_checked_wav(bytes, limits)).unwrap_or_else(|_| {
        Err(AudioError::Undecodable(
            "the WAV decoder rejected this file".into(),
        ))
    })
}

fn decode_checked_wav(bytes: &[u8], limits: DecodeLimits) -> Result<RawAudio, AudioError> {
    let source = MediaSourceStream::new(
        Box::new(Cursor::new(bytes.to_vec())),
        MediaSourceStreamOptions::default(),
    );
    let mut hint = Hint::new();
    hint.with_extension("wav");
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            source,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| AudioError::Undecodable(format!("WAV header: {}", describe(&e))))?;
    let mut reader = probed.format;
    let track = reader
        .default_track()
        .ok_or_else(|| AudioError::Undecodable("the WAV file has no audio track".into()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let rate = params
        .sample_rate
        .ok_or_else(|| AudioError::Undecodable("the WAV header gives no sample rate".into()))?;
    let channels = params.channels.map_or(0, |c| c.count());
    check_layout(rate, channels)?;
    let max_frames = (limits.max_seconds * rate as f64) as u64;
    if params.n_frames.is_some_and(|n| n > max_frames) && bytes.len() as u64 > max_frames {
        return Err(AudioError::TooLong {
            limit: limits.max_seconds,
        });
    }

    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| AudioError::Undecodable(format!("WAV codec: {}", describe(&e))))?;

    let mut interleaved: Vec<f32> = Vec::new();
    let mut warnings = Vec::new();
    let mut buffer: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match reader.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(e) => {
                warnings.push(format!("decoding stopped early: {}", describe(&e)));
                break;
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymphoniaError::DecodeError(e)) => {
                warnings.push(format!("a damaged packet was skipped: {e}"));
                continue;
            }
            Err(e) => {
                warnings.push(format!("decoding stopped early: {}", describe(&e)));
                break;
            }
        };
        let spec = *decoded.spec();
        let needed = decoded.capacity() as u64;
        let buf = match &mut buffer {
            Some(b) if b.capacity() as u64 >= needed * spec.channels.count() as u64 => b,
            _ => buffer.insert(SampleBuffer::new(needed, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        interleaved.extend_from_slice(buf.samples());
        if (interleaved.len() / channels.max(1)) as u64 > max_frames {
            return Err(AudioError::TooLong {
                limit: limits.max_seconds,
            });
        }
    }
    if let Some(expected) = params.n_frames {
        let got = (interleaved.len() / channels) as u64;
        if got < expected {
            warnings.push(format!(
                "the file is truncated: the header announces {:.3} s but only {:.3} s are present",
                expected as f64 / rate as f64,
                got as f64 / rate as f64
            ));
        }
    }
    let mut non_finite = 0;
    let mono = downmix(&interleaved, channels, &mut non_finite);
    if non_finite > 0 {
        warnings.push(format!(
            "{non_finite} non-finite samples were replaced by silence"
        ));
    }
    Ok(RawAudio {
        mono,
        rate,
        channels,
        warnings,
    })
}

fn describe(e: &SymphoniaError) -> String {
    match e {
        SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the data ends too early".into()
        }
        SymphoniaError::Unsupported(what) => format!("unsupported {what}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits { max_seconds: 10.0 };

    /// A minimal WAV file: `format` 1 (integer PCM) or 3 (float), interleaved sample bytes.
    fn wav(
        format: u16,
        channels: u16,
        rate: u32,
        bits: u16,
        data: &[u8],
        declared_len: u32,
    ) -> Vec<u8> {
        let block = channels * bits / 8;
        let mut f = b"RIFF".to_vec();
        f.extend_from_slice(&(36 + declared_len).to_le_bytes());
        f.extend_from_slice(b"WAVEfmt ");
        f.extend_from_slice(&16u32.to_le_bytes());
        for v in [format, channels] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&rate.to_le_bytes());
        f.extend_from_slice(&(rate * block as u32).to_le_bytes());
        for v in [block, bits] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(b"data");
        f.extend_from_slice(&declared_len.to_le_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn decodes_integer_and_float_pcm_and_downmixes() {
        let pcm16: Vec<u8> = [16384i16, -16384, 0, 32767]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let out = decode_wav(&wav(1, 1, 16_000, 16, &pcm16, 8), LIMITS).unwrap();
        assert_eq!((out.rate, out.channels), (16_000, 1));
        assert_eq!(out.mono.len(), 4);
        assert!((out.mono[0] - 0.5).abs() < 1e-4 && (out.mono[1] + 0.5).abs() < 1e-4);
        assert!(out.warnings.is_empty());

        let stereo: Vec<u8> = [0.5f32, 0.25, -1.0, 1.0]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let out = decode_wav(&wav(3, 2, 48_000, 32, &stereo, 16), LIMITS).unwrap();
        assert_eq!((out.rate, out.channels), (48_000, 2));
        assert_eq!(out.mono, vec![0.375, 0.0]);

        let pcm24: Vec<u8> = [0x00, 0x00, 0x40, 0x00, 0x00, 0xc0].to_vec();
        let out = decode_wav(&wav(1, 1, 8_000, 24, &pcm24, 6), LIMITS).unwrap();
        assert!(
            (out.mono[0] - 0.5).abs() < 1e-4 && (out.mono[1] + 0.5).abs() < 1e-4,
            "{:?}",
            out.mono
        );
    }

    #[test]
    fn a_truncated_file_decodes_what_is_there_and_says_so() {
        let pcm: Vec<u8> = vec![0x10; 3200];
        let out = decode_wav(&wav(1, 1, 16_000, 16, &pcm, 32_000), LIMITS).unwrap();
        assert_eq!(out.mono.len(), 1600);
        assert!(
            out.warnings.iter().any(|w| w.contains("truncated")),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn broken_headers_and_absurd_layouts_are_errors_not_panics() {
        assert!(decode_wav(b"RIFF\0\0\0\0WAVE", LIMITS).is_err());
        assert!(decode_wav(&wav(1, 1, 0, 16, &[0; 4], 4), LIMITS).is_err());
        assert!(decode_wav(&wav(1, 0, 16_000, 16, &[0; 4], 4), LIMITS).is_err());
        assert!(decode_wav(
            &wav(1, 1, 16_000, 16, &vec![0; 16_000 * 2 * 11], 16_000 * 2 * 11),
            LIMITS
        )
        .is_err_and(|e| matches!(e, AudioError::TooLong { .. })));
    }
}
