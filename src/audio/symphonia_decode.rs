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

/// Decodes a complete WAV file held in memory.
pub fn decode_wav(bytes: &[u8], limits: DecodeLimits) -> Result<RawAudio, AudioError> {
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
