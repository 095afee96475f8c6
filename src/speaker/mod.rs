//! Speaker labels: an encoder (`Ge2eEncoder`, behind the `SpeakerEncoder` trait) turns
//! stretches of speech into voiceprints, and the stream's tracker (in its context) matches
//! them to the speakers heard so far. `stream::labels` applies them to final segments.

pub mod encoder;
pub(crate) mod relabel;
mod tracker;

pub use encoder::Ge2eEncoder;
pub use tracker::{Label, Speakers, StreamSpeakerOptions, TrackerPolicy, MIN_EVIDENCE_MS};

/// Turns a stretch of 16 kHz mono speech into a unit-length voiceprint of
/// `encoder::DIM` values (`None`: too little speech to judge). The seam between the stream
/// policy and the speaker model, so that the policy runs with a scripted encoder in tests.
pub trait SpeakerEncoder: Send + Sync {
    fn embed(&self, samples: &[f32]) -> Option<Vec<f32>>;
}

/// The label of the nearest labelled slot before `i`, else after it, with its confidence
/// capped at `cap` (it was not computed from slot `i`'s own speech).
pub fn neighbour_label(labels: &[Option<Label>], i: usize, cap: f32) -> Option<Label> {
    labels[..i]
        .iter()
        .rev()
        .chain(labels[i + 1..].iter())
        .find_map(|l| *l)
        .map(|l| Label {
            confidence: l.confidence.min(cap),
            ..l
        })
}

/// A stretch of speech's voiceprint (unit length) and how much speech it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Voiceprint {
    pub vector: Vec<f32>,
    pub speech_ms: u64,
}

impl Voiceprint {
    /// The vector as a session stores it: quantised to i8, base64.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let bytes: Vec<u8> = encoder::quantise(&self.vector)
            .into_iter()
            .map(|q| q as u8)
            .collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// A stored voiceprint ([`Voiceprint::encode`]) of `speech_ms` of speech; `None` when
    /// the text is not one.
    pub fn decode(text: &str, speech_ms: u64) -> Option<Voiceprint> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?;
        (bytes.len() == encoder::DIM).then(|| Voiceprint {
            vector: encoder::dequantise(&bytes.iter().map(|&b| b as i8).collect::<Vec<_>>()),
            speech_ms,
        })
    }

    /// The speech-weighted mean direction of several voiceprints.
    pub fn mean<'a>(prints: impl IntoIterator<Item = &'a Voiceprint>) -> Option<Voiceprint> {
        let mut sum = vec![0.0f32; encoder::DIM];
        let mut speech_ms = 0;
        for p in prints {
            for (s, v) in sum.iter_mut().zip(&p.vector) {
                *s += v * p.speech_ms as f32;
            }
            speech_ms += p.speech_ms;
        }
        (speech_ms > 0).then(|| {
            encoder::normalise(&mut sum);
            Voiceprint {
                vector: sum,
                speech_ms,
            }
        })
    }
}
