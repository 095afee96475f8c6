//! Audio read from stdin as it comes: raw PCM in the format the options give, or a WAV
//! stream whose header says it (a WAV written to a pipe has no real data length).

use super::args::Encoding;

/// Raw PCM as it arrives on stdin.
#[derive(Clone, Copy)]
pub(super) struct RawPcm {
    pub(super) rate: u32,
    pub(super) channels: u16,
    pub(super) encoding: Encoding,
}

impl RawPcm {
    pub(super) fn media_type(&self) -> String {
        format!(
            "audio/pcm;rate={};channels={};encoding={}",
            self.rate,
            self.channels,
            self.encoding.name()
        )
    }

    pub(super) fn frame_bytes(&self) -> usize {
        self.encoding.bytes() * self.channels.max(1) as usize
    }
}

/// Parses the WAV header at the start of `bytes` (which start with `RIFF`): `None` while
/// more bytes are needed, else the PCM format and where the samples start. A WAV written
/// to a pipe has no real data length: the samples run to the end of input.
pub(super) fn wav_header(bytes: &[u8]) -> Option<Result<(RawPcm, usize), String>> {
    if bytes.len() < 12 {
        return None;
    }
    if &bytes[8..12] != b"WAVE" {
        return Some(Err("stdin: a RIFF file that is not WAV".into()));
    }
    let mut at = 12;
    let mut format = None;
    loop {
        let header = bytes.get(at..at + 8)?;
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let id = &header[..4];
        if id == b"data" {
            let Some(format) = format else {
                return Some(Err("stdin: WAV data before its fmt chunk".into()));
            };
            return Some(Ok((format, at + 8)));
        }
        let body = bytes.get(at + 8..at + 8 + size)?;
        if id == b"fmt " {
            if body.len() < 16 {
                return Some(Err("stdin: WAV fmt chunk too short".into()));
            }
            let mut tag = u16::from_le_bytes([body[0], body[1]]);
            let channels = u16::from_le_bytes([body[2], body[3]]);
            let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            let bits = u16::from_le_bytes([body[14], body[15]]);
            if tag == 0xFFFE && body.len() >= 26 {
                // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the real tag.
                tag = u16::from_le_bytes([body[24], body[25]]);
            }
            let encoding = match (tag, bits) {
                (1, 16) => Encoding::S16le,
                (3, 32) => Encoding::F32le,
                _ => {
                    return Some(Err(format!(
                    "stdin: WAV with {bits}-bit samples (format {tag}) cannot be streamed live; \
                         send 16-bit PCM or 32-bit float (sox -b 16, ffmpeg -c:a pcm_s16le)"
                )))
                }
            };
            if channels == 0 || rate == 0 {
                return Some(Err("stdin: WAV header with no channels or rate".into()));
            }
            format = Some(RawPcm {
                rate,
                channels,
                encoding,
            });
        }
        at += 8 + size + size % 2;
    }
}
