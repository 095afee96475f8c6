//! Audio intake: recognise what the client sent (magic bytes first, declared type second),
//! decode it, downmix to mono and resample to the 16 kHz Whisper needs.
//!
//! Nothing here knows HTTP or Whisper: bytes and a declared media type come in,
//! `DecodedAudio` or an `AudioError` goes out.

mod pcm;
mod resample;
mod sniff;
mod symphonia_decode;

pub use sniff::{sniff, Container};

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
            let raw = symphonia_decode::decode_container(bytes, container, limits)?;
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

/// Averages interleaved frames into one channel, replacing non-finite samples by silence.
fn downmix(interleaved: &[f32], channels: usize, non_finite: &mut usize) -> Vec<f32> {
    let scale = 1.0 / channels as f32;
    interleaved
        .chunks_exact(channels)
        .map(|frame| {
            frame
                .iter()
                .map(|s| {
                    if s.is_finite() {
                        *s
                    } else {
                        *non_finite += 1;
                        0.0
                    }
                })
                .sum::<f32>()
                * scale
        })
        .collect()
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
    fn downmix_averages_and_silences_non_finite() {
        let mut bad = 0;
        let mono = downmix(&[0.5, -0.5, 1.0, f32::NAN, 0.2, 0.4], 2, &mut bad);
        assert_eq!(mono, vec![0.0, 0.5, 0.3]);
        assert_eq!(bad, 1);
    }
}
