//! Container decoding through symphonia: WAV (every PCM flavour), Ogg, WebM/Matroska,
//! MP4/M4A (fragmented too), MP3 and FLAC; Opus packets (symphonia 0.5 has no Opus decoder)
//! go to libopus. Decodes what is valid and reports the rest; encoder delay (Opus pre-skip,
//! AAC and MP3 priming) is removed so that stream time stays sample-accurate.

use std::io::Cursor;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{
    CodecParameters, DecoderOptions, CODEC_TYPE_AAC, CODEC_TYPE_NULL, CODEC_TYPE_OPUS,
};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};

use super::sniff::Container;
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

/// Decodes a complete file of `container` held in memory. A panic inside a decoder on
/// hostile bytes becomes a 422 for this request, never a failed worker. A `continuation`
/// (a later timeslice blob behind its recording's header) keeps its first samples: the
/// encoder delay was removed from the recording's first blob.
pub fn decode_container(
    bytes: &[u8],
    container: Container,
    limits: DecodeLimits,
    continuation: bool,
) -> Result<RawAudio, AudioError> {
    if container == Container::Wav {
        check_wav_format(bytes)?;
    }
    if container == Container::Matroska {
        super::alloc_guards::matroska_sizes_fit(bytes).map_err(|why| {
            AudioError::Undecodable(format!("the WebM/Matroska file is damaged: {why}"))
        })?;
    }
    if container == Container::Mp4 {
        super::alloc_guards::mp4_tables_fit(bytes)
            .map_err(|why| AudioError::Undecodable(format!("the MP4 file is damaged: {why}")))?;
    }
    std::panic::catch_unwind(|| decode_checked(bytes, container, limits, continuation))
        .unwrap_or_else(|_| {
            Err(AudioError::Undecodable(format!(
                "the {} decoder rejected this file",
                container.name()
            )))
        })
}

/// The bytes after an ID3v2 tag (whose size is a syncsafe integer in its 10-byte header).
fn without_id3v2(bytes: &[u8]) -> &[u8] {
    match bytes.get(..10) {
        Some(h) if h.starts_with(b"ID3") => {
            let size = h[6..10]
                .iter()
                .fold(0usize, |acc, b| (acc << 7) | (*b & 0x7f) as usize);
            let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
            bytes.get(10 + size + footer..).unwrap_or(&[])
        }
        _ => bytes,
    }
}

/// Frames of silence an AAC encoder puts before the audio (ffmpeg, browsers).
const AAC_PRIMING_FRAMES: usize = 1024;

/// The track's OpusHead (RFC 7845 §5.1), which Matroska and MP4 keep as codec private data.
fn opus_head(params: &CodecParameters) -> Option<&[u8]> {
    params
        .extra_data
        .as_deref()
        .filter(|head| head.starts_with(b"OpusHead"))
}

/// A track's decoder: symphonia's, or libopus for Opus.
enum TrackDecoder {
    Symphonia(Box<dyn symphonia::core::codecs::Decoder>),
    Opus(OpusTrack),
}

/// libopus at 48 kHz with the stream's pre-skip still to drop.
struct OpusTrack {
    decoder: opus::Decoder,
    channels: usize,
    pre_skip: usize,
    buffer: Vec<f32>,
}

impl OpusTrack {
    fn new(params: &CodecParameters, channels: usize, skip: bool) -> Result<Self, AudioError> {
        let layout = match channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => {
                return Err(AudioError::Undecodable(format!(
                    "Opus with {n} channels (multistream) is not supported: record mono or stereo"
                )))
            }
        };
        let decoder = opus::Decoder::new(48_000, layout)
            .map_err(|e| AudioError::Undecodable(format!("Opus decoder: {e}")))?;
        // Ogg gives the pre-skip as the codec delay; Matroska keeps it in the OpusHead.
        let head_pre_skip = opus_head(params)
            .and_then(|head| head.get(10..12))
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32);
        let pre_skip = if skip {
            params.delay.or(head_pre_skip).unwrap_or(0) as usize
        } else {
            0
        };
        Ok(OpusTrack {
            decoder,
            channels,
            pre_skip,
            // The longest Opus packet: 120 ms at 48 kHz.
            buffer: vec![0.0; 5_760 * channels],
        })
    }

    /// Decodes one packet, appending interleaved samples.
    fn decode(&mut self, packet: &[u8], out: &mut Vec<f32>) -> Result<(), opus::Error> {
        let frames = self.decoder.decode_float(packet, &mut self.buffer, false)?;
        let skip = self.pre_skip.min(frames);
        self.pre_skip -= skip;
        out.extend_from_slice(&self.buffer[skip * self.channels..frames * self.channels]);
        Ok(())
    }
}

fn decode_checked(
    bytes: &[u8],
    container: Container,
    limits: DecodeLimits,
    continuation: bool,
) -> Result<RawAudio, AudioError> {
    let name = container.name();
    // The reader of the sniffed container only: symphonia's probe would scan on for any
    // format's magic (an ID3 tag, then a WebM header) and open a file that was not checked.
    let body = match container {
        Container::Mp3 => without_id3v2(bytes),
        _ => bytes,
    };
    let source = MediaSourceStream::new(
        Box::new(Cursor::new(body.to_vec())),
        MediaSourceStreamOptions::default(),
    );
    // Priming and padding of MP4/MP3 come as packet trims; Opus pre-skip is handled here.
    let gapless = matches!(container, Container::Mp4 | Container::Mp3) && !continuation;
    let options = FormatOptions {
        enable_gapless: gapless,
        ..FormatOptions::default()
    };
    use symphonia::default::formats as f;
    let opened: Result<Box<dyn FormatReader>, SymphoniaError> = match container {
        Container::Wav => f::WavReader::try_new(source, &options).map(|r| Box::new(r) as _),
        Container::Matroska => f::MkvReader::try_new(source, &options).map(|r| Box::new(r) as _),
        Container::Ogg => f::OggReader::try_new(source, &options).map(|r| Box::new(r) as _),
        Container::Mp4 => f::IsoMp4Reader::try_new(source, &options).map(|r| Box::new(r) as _),
        Container::Mp3 => f::MpaReader::try_new(source, &options).map(|r| Box::new(r) as _),
        Container::Flac => f::FlacReader::try_new(source, &options).map(|r| Box::new(r) as _),
    };
    let mut reader =
        opened.map_err(|e| AudioError::Undecodable(format!("{name} header: {}", describe(&e))))?;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AudioError::Undecodable(format!("the {name} file has no audio track")))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let opus = params.codec == CODEC_TYPE_OPUS;
    let rate = if opus {
        48_000
    } else {
        params.sample_rate.ok_or_else(|| {
            AudioError::Undecodable(format!("the {name} header gives no sample rate"))
        })?
    };
    let declared_channels = params.channels.map(|c| c.count());
    let max_frames = (limits.max_seconds * rate as f64) as u64;
    if params.n_frames.is_some_and(|n| n > max_frames) && bytes.len() as u64 > max_frames {
        return Err(AudioError::TooLong {
            limit: limits.max_seconds,
        });
    }

    let (mut decoder, mut channels) = if opus {
        // Matroska may leave the layout to the OpusHead (its byte 9).
        let head_channels = opus_head(&params)
            .and_then(|head| head.get(9))
            .map(|&n| n as usize);
        let channels = declared_channels.or(head_channels).unwrap_or(1);
        check_layout(rate, channels)?;
        (
            TrackDecoder::Opus(OpusTrack::new(&params, channels, !continuation)?),
            channels,
        )
    } else {
        let decoder = symphonia::default::get_codecs()
            .make(&params, &DecoderOptions::default())
            .map_err(|e| AudioError::Undecodable(format!("{name} codec: {}", describe(&e))))?;
        // MP4 may leave the layout to the AAC decoder: then the first packet tells (0 here).
        let channels = declared_channels
            .or_else(|| decoder.codec_params().channels.map(|c| c.count()))
            .unwrap_or(0);
        if channels != 0 {
            check_layout(rate, channels)?;
        }
        (TrackDecoder::Symphonia(decoder), channels)
    };

    let mut first_packet = true;
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
        let before = interleaved.len();
        match &mut decoder {
            TrackDecoder::Opus(track) => {
                if let Err(e) = track.decode(&packet.data, &mut interleaved) {
                    warnings.push(format!("a damaged Opus packet was skipped: {e}"));
                    continue;
                }
            }
            TrackDecoder::Symphonia(decoder) => {
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
                if channels == 0 {
                    channels = spec.channels.count();
                    check_layout(rate, channels)?;
                }
                if spec.channels.count() != channels {
                    warnings.push("a packet with another channel layout was skipped".into());
                    continue;
                }
                let needed = decoded.capacity() as u64;
                let buf = match &mut buffer {
                    Some(b) if b.capacity() as u64 >= needed * spec.channels.count() as u64 => b,
                    _ => buffer.insert(SampleBuffer::new(needed, spec)),
                };
                buf.copy_interleaved_ref(decoded);
                interleaved.extend_from_slice(buf.samples());
            }
        }
        // Encoder priming and padding (gapless trims), in frames. AAC without an edit list
        // still starts with the encoder's 1024 priming frames.
        let frames = (interleaved.len() - before) / channels.max(1);
        let mut trim_start = packet.trim_start as usize;
        if first_packet && !continuation && trim_start == 0 && params.codec == CODEC_TYPE_AAC {
            trim_start = AAC_PRIMING_FRAMES;
        }
        first_packet = false;
        let start = trim_start.min(frames);
        let end = frames - (packet.trim_end as usize).min(frames - start);
        if start > 0 || end < frames {
            let kept: Vec<f32> =
                interleaved[before + start * channels..before + end * channels].to_vec();
            interleaved.truncate(before);
            interleaved.extend_from_slice(&kept);
        }
        if (interleaved.len() / channels.max(1)) as u64 > max_frames {
            return Err(AudioError::TooLong {
                limit: limits.max_seconds,
            });
        }
    }
    if let Some(expected) = params.n_frames.filter(|_| container == Container::Wav) {
        let got = (interleaved.len() / channels) as u64;
        if got < expected {
            warnings.push(format!(
                "the file is truncated: the header announces {:.3} s but only {:.3} s are present",
                expected as f64 / rate as f64,
                got as f64 / rate as f64
            ));
        }
    }
    if channels == 0 || interleaved.is_empty() {
        let why = warnings
            .first()
            .cloned()
            .unwrap_or_else(|| "no audio packets".into());
        return Err(AudioError::Undecodable(format!(
            "no audio could be decoded from the {name} data ({why})"
        )));
    }
    let mono = downmix(&interleaved, channels, &mut warnings)?;
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

    fn decode_wav(bytes: &[u8], limits: DecodeLimits) -> Result<RawAudio, AudioError> {
        decode_container(bytes, Container::Wav, limits, false)
    }

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

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/formats/");
        std::fs::read(format!("{path}{name}")).unwrap()
    }

    #[test]
    fn browser_and_ffmpeg_containers_decode_to_the_full_duration() {
        // 10.09 s of speech (LibriVox) in every container, made by ffmpeg (tests/fixtures).
        for (name, container, rate, channels) in [
            ("speech.ogg", Container::Ogg, 48_000, 1),
            ("speech-live.webm", Container::Matroska, 48_000, 2),
            ("speech-frag.m4a", Container::Mp4, 44_100, 2),
            ("speech.mp3", Container::Mp3, 22_050, 1),
            ("speech.flac", Container::Flac, 16_000, 1),
        ] {
            let limits = DecodeLimits { max_seconds: 60.0 };
            let out = decode_container(&fixture(name), container, limits, false).unwrap();
            let seconds = out.mono.len() as f64 / out.rate as f64;
            assert_eq!((out.rate, out.channels), (rate, channels), "{name}");
            assert!((seconds - 10.09).abs() < 0.03, "{name}: {seconds} s");
            assert!(out.warnings.is_empty(), "{name}: {:?}", out.warnings);
        }
    }
}
