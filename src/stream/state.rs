//! The whole state of a stream between chunks, and where its unconfirmed audio waits.

use serde::{Deserialize, Serialize};

use super::agreement::TimedWord;
use super::tail;

/// The whole state of a stream between two chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StreamState {
    /// Random id given at the first chunk.
    pub id: u64,
    /// Chunks processed so far.
    pub seq: u64,
    /// Stream time (samples) where the tail audio starts.
    pub tail_start: u64,
    /// Stream time (ms) up to which text is committed (the end of the last final word).
    pub committed_until_ms: u64,
    /// Stream time (samples) of the end of all audio received.
    pub received_until: u64,
    /// The audio from `tail_start` on, or where it is (see [`TailAudio`]). It may begin
    /// with committed words (the tail is cut at pauses, so that Whisper never starts inside
    /// a sentence).
    pub tail: TailAudio,
    /// Committed words that lie inside the tail (Whisper will hear them again).
    pub tail_words: Vec<TimedWord>,
    /// The previous pass's unconfirmed words.
    pub pending: Vec<TimedWord>,
    /// The end of the committed text before the tail: Whisper's prompt.
    pub prompt: String,
    /// Language, locked after the first pass that recognised speech.
    pub language: Option<String>,
    /// The MediaRecorder recording the chunks are timeslice blobs of (its header).
    pub recording: Option<crate::audio::Recording>,
    /// The speakers heard so far (voiceprints) and the stream's speaker options.
    pub speakers: crate::speaker::Speakers,
}

/// Where a stream's unconfirmed audio waits for the next chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TailAudio {
    /// In the context token, as μ-law at 16 kHz (one byte a sample: tokens stay small).
    MuLaw(Vec<u8>),
    /// In the Redis session, as 16-bit PCM at 16 kHz (lossless: a session hears the same
    /// audio as a client that keeps its tail).
    Pcm16(Vec<u8>),
    /// With the client (`keep_audio`), which sends back the last
    /// `received_until - tail_start` samples it sent as 16-bit PCM; the state keeps only
    /// the SHA-256 (first 8 bytes) of those samples to check what comes back.
    Client { digest: u64 },
}

impl Default for TailAudio {
    fn default() -> Self {
        Self::MuLaw(Vec::new())
    }
}

impl TailAudio {
    /// The same kind of tail holding `samples` (16 kHz).
    pub(super) fn holding(&self, samples: &[f32]) -> Self {
        match self {
            Self::MuLaw(_) => Self::MuLaw(tail::encode(samples)),
            Self::Pcm16(_) => Self::Pcm16(tail::encode_pcm16(samples)),
            Self::Client { .. } => Self::Client {
                digest: tail_digest(samples),
            },
        }
    }

    /// Whether the client keeps this tail.
    pub fn with_client(&self) -> bool {
        matches!(self, Self::Client { .. })
    }

    /// Bytes of audio the state itself carries.
    pub fn stored_bytes(&self) -> usize {
        match self {
            Self::MuLaw(bytes) | Self::Pcm16(bytes) => bytes.len(),
            Self::Client { .. } => 0,
        }
    }
}

/// Why the tail a client sent back cannot continue its stream.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TailError {
    #[error("this stream's client keeps its unconfirmed audio: send the last {0} samples you sent (16 kHz 16-bit PCM) as field `tail`")]
    Missing(u64),
    #[error("field `tail` holds {got} samples; this stream needs the last {want} samples you sent (16 kHz 16-bit PCM)")]
    Length { got: u64, want: u64 },
    #[error("field `tail` is not the audio this stream was sent: send back exactly the last samples of the 16 kHz 16-bit PCM you sent")]
    Mismatch,
}

impl StreamState {
    /// The tail audio the next chunk continues: the state's own, or the one the client
    /// sent back (`resent`, 16 kHz samples), checked against the state.
    pub fn tail_audio(&self, resent: Option<&[f32]>) -> Result<Vec<f32>, TailError> {
        let digest = match &self.tail {
            TailAudio::MuLaw(bytes) => return Ok(tail::decode(bytes)),
            TailAudio::Pcm16(bytes) => return Ok(crate::audio::s16le(bytes)),
            TailAudio::Client { digest } => *digest,
        };
        let want = self.tail_samples();
        let resent = match resent {
            _ if want == 0 && resent.is_none_or(<[f32]>::is_empty) => return Ok(Vec::new()),
            Some(resent) => resent,
            None => return Err(TailError::Missing(want)),
        };
        if resent.len() as u64 != want {
            return Err(TailError::Length {
                got: resent.len() as u64,
                want,
            });
        }
        if tail_digest(resent) != digest {
            return Err(TailError::Mismatch);
        }
        Ok(resent.to_vec())
    }

    /// Samples of the tail (what a client that keeps it must send back next).
    pub fn tail_samples(&self) -> u64 {
        self.received_until - self.tail_start
    }
}

/// The digest of samples as 16-bit PCM (what a client that keeps the tail sent).
pub fn tail_digest(samples: &[f32]) -> u64 {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for s in samples {
        hash.update(tail::pcm16(*s).to_le_bytes());
    }
    let digest = hash.finalize();
    u64::from_le_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}
