//! Audio intake: recognise what the client sent (magic bytes first, declared type second),
//! decode it, downmix to mono and resample to the 16 kHz Whisper needs.
//!
//! Nothing here knows HTTP or Whisper: bytes and a declared media type come in,
//! `DecodedAudio` or an `AudioError` goes out.

mod alloc_guards;
pub(crate) mod mel;
mod pcm;
mod resample;
mod sniff;
mod symphonia_decode;
mod timeslice;

pub use pcm::s16le;

pub use sniff::{sniff, Container};
pub use timeslice::Recording;

/// The sample rate every model in prepis consumes.
pub const TARGET_RATE: u32 = 16_000;

/// Sample rates accepted from clients; anything outside is a broken or hostile header.
const RATE_RANGE: std::ops::RangeInclusive<u32> = 1_000..=384_000;
/// Channel counts accepted from clients.
const MAX_CHANNELS: usize = 32;

/// One chunk of audio, ready for the models.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// Mono samples at 16 kHz in [-1, 1].
    pub samples: Vec<f32>,
    /// Container or raw format that was decoded (`wav`, `pcm`).
    pub format: &'static str,
    /// Sample rate of the source before resampling.
    pub source_rate: u32,
    /// Channel count of the source before downmixing.
    pub source_channels: usize,
    /// Problems that did not stop decoding (a truncated data chunk, non-finite samples).
    pub warnings: Vec<String>,
}

impl DecodedAudio {
    /// No audio (an empty last chunk of a stream).
    pub fn nothing() -> Self {
        DecodedAudio {
            samples: Vec::new(),
            format: "none",
            source_rate: TARGET_RATE,
            source_channels: 1,
            warnings: Vec::new(),
        }
    }

    /// Duration in seconds.
    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / TARGET_RATE as f64
    }
}

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Longest audio accepted, in seconds of source audio.
    pub max_seconds: f64,
}

/// Why a chunk could not be turned into audio.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AudioError {
    /// Zero bytes.
    #[error("the request carries no audio bytes")]
    Empty,
    /// A MediaRecorder timeslice blob without its container header.
    #[error("this chunk is {0} without the container header (a MediaRecorder timeslice blob): send the recording's first blob, which carries the header, on this stream before the later ones, echoing the context from each response; or restart the MediaRecorder for every chunk so that each blob is a whole file")]
    Headerless(&'static str),
    /// Neither the bytes nor the declared type say audio.
    #[error("{0}: send WAV (audio/wav), raw PCM (audio/L16;rate=N or audio/pcm;rate=N;encoding=s16le|f32le) or application/octet-stream holding WAV")]
    NotAudio(String),
    /// Recognised but broken.
    #[error("the audio could not be decoded: {0}")]
    Undecodable(String),
    /// More audio than one request may carry.
    #[error("the audio is longer than the {limit} s one request may carry")]
    TooLong { limit: f64 },
}

/// Decodes `bytes` into 16 kHz mono. `declared` is the request's content type, if any.
pub fn decode_chunk(
    bytes: &[u8],
    declared: Option<&str>,
    limits: DecodeLimits,
) -> Result<DecodedAudio, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let declared = declared.map(MediaType::parse);
    let raw_format = declared.as_ref().and_then(pcm::RawFormat::from_media_type);
    if let Some(what) = sniff::headerless(bytes) {
        return Err(AudioError::Headerless(what));
    }
    let mut sniffed = sniff(bytes);
    // Raw PCM can start with bytes that look like an MP3 frame sync; a declared raw
    // format wins over that weak signal (but not over an ID3 tag or a real magic).
    if sniffed == Some(Container::Mp3) && raw_format.is_some() && !bytes.starts_with(b"ID3") {
        sniffed = None;
    }
    let (mono, rate, channels, format, warnings) = match sniffed {
        Some(container) => {
            let raw = symphonia_decode::decode_container(bytes, container, limits, false)?;
            (
                raw.mono,
                raw.rate,
                raw.channels,
                container.id(),
                raw.warnings,
            )
        }
        None => match raw_format {
            Some(raw_format) => {
                let raw_format = raw_format?;
                let (mono, warnings) = pcm::decode(bytes, &raw_format, limits)?;
                (mono, raw_format.rate, raw_format.channels, "pcm", warnings)
            }
            None => {
                let what = match &declared {
                    Some(t) if t.is_wav() => {
                        return Err(AudioError::Undecodable(
                            "declared as WAV but the body has no RIFF/WAVE header".into(),
                        ))
                    }
                    Some(t) if t.is_recording() => {
                        return Err(AudioError::Headerless(
                            "a piece of a WebM, Ogg or MP4 recording",
                        ))
                    }
                    Some(t)
                        if t.essence.starts_with("audio/")
                            || t.essence == "application/octet-stream" =>
                    {
                        format!(
                            "the bytes are not a recognised audio format (declared {})",
                            t.essence
                        )
                    }
                    Some(t) => format!("{} is not audio", t.essence),
                    None => "the bytes are not a recognised audio format".to_string(),
                };
                return Err(AudioError::NotAudio(what));
            }
        },
    };
    if mono.is_empty() {
        return Err(AudioError::Undecodable("the audio holds no samples".into()));
    }
    let samples = resample::to_target_rate(&mono, rate)?;
    Ok(DecodedAudio {
        samples,
        format,
        source_rate: rate,
        source_channels: channels,
        warnings,
    })
}

/// Decodes one chunk of a stream whose earlier chunks may have begun a recording that this
/// chunk continues (`kept`: a MediaRecorder timeslice blob without a header). Returns the
/// audio and what the stream keeps of the recording for its next chunk. On the stream's
/// `last` chunk nothing is kept, and an unfinished element at the end is reported.
pub fn decode_stream_chunk(
    bytes: &[u8],
    declared: Option<&str>,
    limits: DecodeLimits,
    kept: Option<&Recording>,
    last: bool,
) -> Result<(DecodedAudio, Option<Recording>), AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let assembled = match (kept, starts_a_file(bytes)) {
        (Some(kept), None) => timeslice::resume(kept, bytes).map_err(AudioError::Undecodable)?,
        // A whole recording is cut at its last complete element too: symphonia's demuxers
        // can fail (even panic) on a file cut inside one.
        (_, Some(container)) if timeslice::continues(container, bytes) => {
            match timeslice::begin(container, bytes) {
                Ok(assembled) => assembled,
                Err(why) => {
                    // Too much to keep: decode the blob alone; later blobs will be refused.
                    let mut audio = decode_chunk(bytes, declared, limits)?;
                    audio.warnings.push(why);
                    return Ok((audio, None));
                }
            }
        }
        _ => return Ok((decode_chunk(bytes, declared, limits)?, None)),
    };
    let container = assembled.recording.container;
    if last && assembled.file.is_empty() && !kept.is_some_and(|k| k.started) {
        // A whole request with no complete audio element: an error, never an empty answer.
        return Err(AudioError::Undecodable(format!(
            "the {} data ends before its first complete audio element",
            container.name()
        )));
    }
    let mut warnings = assembled.warnings;
    if last && !assembled.recording.pending.is_empty() {
        warnings.push(format!(
            "the recording ends inside an element: its last {} bytes were cut short",
            assembled.recording.pending.len()
        ));
    }
    let audio = if assembled.file.is_empty() {
        warnings.push(if assembled.recording.header_done {
            "the chunk ends inside its first audio element; its bytes are kept for the next chunk"
                .to_string()
        } else {
            "the chunk holds only the recording's header, no audio yet".to_string()
        });
        DecodedAudio {
            samples: Vec::new(),
            format: container.id(),
            source_rate: 0,
            source_channels: 0,
            warnings,
        }
    } else {
        let raw = symphonia_decode::decode_container(
            &assembled.file,
            container,
            limits,
            assembled.continuation,
        )?;
        warnings.extend(raw.warnings);
        DecodedAudio {
            samples: resample::to_target_rate(&raw.mono, raw.rate)?,
            format: container.id(),
            source_rate: raw.rate,
            source_channels: raw.channels,
            warnings,
        }
    };
    Ok((audio, Some(assembled.recording).filter(|_| !last)))
}

/// The container of a body that starts a file by a strong magic (not an MP3 frame sync,
/// which a blob cut at a random byte may start with).
fn starts_a_file(bytes: &[u8]) -> Option<Container> {
    sniff(bytes)
        .filter(|&c| c != Container::Mp3 || bytes.starts_with(b"ID3"))
        .filter(|_| sniff::headerless(bytes).is_none())
}

/// Checks a source rate and channel count from a header or media type.
fn check_layout(rate: u32, channels: usize) -> Result<(), AudioError> {
    if !RATE_RANGE.contains(&rate) {
        return Err(AudioError::Undecodable(format!(
            "sample rate {rate} Hz is outside {}..={} Hz",
            RATE_RANGE.start(),
            RATE_RANGE.end()
        )));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(AudioError::Undecodable(format!(
            "{channels} channels (1..={MAX_CHANNELS} accepted)"
        )));
    }
    Ok(())
}

/// Averages interleaved frames into one channel, clipping samples to [-1, 1]. A few NaN or
/// infinite samples become silence (with a warning); more than 1 % of them means the audio
/// is corrupt, and it is refused.
fn downmix(
    interleaved: &[f32],
    channels: usize,
    warnings: &mut Vec<String>,
) -> Result<Vec<f32>, AudioError> {
    let scale = 1.0 / channels as f32;
    let mut non_finite = 0usize;
    let mono = interleaved
        .chunks_exact(channels)
        .map(|frame| {
            frame
                .iter()
                .map(|s| {
                    if s.is_finite() {
                        s.clamp(-1.0, 1.0)
                    } else {
                        non_finite += 1;
                        0.0
                    }
                })
                .sum::<f32>()
                * scale
        })
        .collect();
    if non_finite.saturating_mul(100) > interleaved.len() {
        return Err(AudioError::Undecodable(format!(
            "{non_finite} of {} samples are NaN or infinite: the audio is corrupt",
            interleaved.len()
        )));
    }
    if non_finite > 0 {
        warnings.push(format!(
            "{non_finite} non-finite samples were replaced by silence"
        ));
    }
    Ok(mono)
}

/// A parsed `Content-Type`: lower-cased essence and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaType {
    /// `type/subtype`, lower case.
    pub essence: String,
    /// `name=value` parameters, names lower case, quotes removed.
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses a header value leniently (unknown shapes give an odd essence, never an error).
    pub fn parse(value: &str) -> Self {
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_string(),
                ))
            })
            .collect();
        MediaType { essence, params }
    }

    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A container MediaRecorder records into (its later blobs need the first one's header).
    fn is_recording(&self) -> bool {
        matches!(
            self.essence.as_str(),
            "audio/webm"
                | "video/webm"
                | "audio/ogg"
                | "audio/mp4"
                | "video/mp4"
                | "audio/x-matroska"
        )
    }

    fn is_wav(&self) -> bool {
        matches!(
            self.essence.as_str(),
            "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits { max_seconds: 60.0 };

    #[test]
    fn media_type_parsing_is_lenient() {
        let t = MediaType::parse("Audio/L16; rate=\"8000\" ;channels=2");
        assert_eq!(t.essence, "audio/l16");
        assert_eq!(t.param("rate"), Some("8000"));
        assert_eq!(t.param("channels"), Some("2"));
        assert_eq!(MediaType::parse("").essence, "");
    }

    #[test]
    fn empty_and_foreign_bodies_are_rejected_clearly() {
        assert_eq!(
            decode_chunk(b"", Some("audio/wav"), LIMITS),
            Err(AudioError::Empty)
        );
        assert!(matches!(
            decode_chunk(b"hello world", Some("text/plain"), LIMITS),
            Err(AudioError::NotAudio(_))
        ));
        assert!(matches!(
            decode_chunk(b"hello world", Some("audio/wav"), LIMITS),
            Err(AudioError::Undecodable(_))
        ));
        assert!(matches!(
            decode_chunk(b"OggS\0\x02rest-of-page", Some("audio/ogg"), LIMITS),
            Err(AudioError::Undecodable(_))
        ));
        assert!(matches!(
            decode_chunk(&[0x1f, 0x43, 0xb6, 0x75, 1], Some("audio/webm"), LIMITS),
            Err(AudioError::Headerless("a WebM cluster"))
        ));
    }

    #[test]
    fn a_recording_cut_inside_an_element_decodes_up_to_it_and_says_so() {
        // Chromium's first timeslice blob cut at 3000 bytes: symphonia's WebM demuxer
        // panics on it (found by cargo fuzz); cut at the last whole block it decodes.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/browser/webm-opus/000.webm"
        );
        let blob = std::fs::read(path).unwrap();
        let (audio, kept) =
            decode_stream_chunk(&blob[..3000], Some("audio/webm"), LIMITS, None, true).unwrap();
        assert!(kept.is_none());
        assert!(audio.duration() > 0.1, "{}", audio.duration());
        assert_eq!(audio.warnings.len(), 1, "{:?}", audio.warnings);
        assert!(audio.warnings[0].contains("cut short"));
    }

    #[test]
    fn downmix_averages_clips_and_silences_a_few_non_finite_samples() {
        let mut warnings = Vec::new();
        let mut frames = vec![0.5, -0.5, 1.0, f32::NAN, 0.2, 0.4, 1e30, -3.0];
        frames.extend(std::iter::repeat_n(0.0, 200));
        let mono = downmix(&frames, 2, &mut warnings).unwrap();
        assert_eq!(mono[..4], [0.0, 0.5, 0.3, 0.0]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");

        let corrupt = [f32::NAN, f32::INFINITY, 0.1, 0.2];
        let e = downmix(&corrupt, 1, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("2 of 4 samples"), "{e}");
    }
}
