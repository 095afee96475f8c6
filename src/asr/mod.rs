//! Speech recognition behind a small synchronous trait, so that the engine can change
//! without the service noticing. Engines run on worker threads (see `inference`), never
//! on the async runtime.

mod quality;
mod spread;
mod whisper;
mod words;

pub use spread::{Job, Lender, Spread, WindowFn};
pub use whisper::WhisperEngine;

use serde::{Deserialize, Serialize};

/// How one piece of audio should be decoded.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// Language code to force; `None` detects it.
    pub language: Option<String>,
    /// Text that preceded this audio (conditions the decoder); `None` for none.
    pub prompt: Option<String>,
    /// Whisper's translate task: English text whatever the language spoken (multilingual
    /// models; an English-only model transcribes).
    pub translate: bool,
    /// Sampling temperature; 0 is greedy and deterministic (the default).
    pub temperature: f32,
    /// Told each pass's segments as soon as they are final (a long file's text streams).
    pub progress: Option<Progress>,
}

/// A listener for segments as the engine finishes them (seconds from the start of the
/// audio given).
#[derive(Clone)]
pub struct Progress(std::sync::Arc<Listener>);

type Listener = dyn Fn(&[Segment]) + Send + Sync;

impl Progress {
    pub fn new(f: impl Fn(&[Segment]) + Send + Sync + 'static) -> Self {
        Progress(std::sync::Arc::new(f))
    }

    /// Tells the listener of `segments` (nothing when there are none).
    pub fn tell(&self, segments: &[Segment]) {
        if !segments.is_empty() {
            (self.0)(segments);
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// A word with its time span (seconds from the start of the audio given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

/// A run of recognised text (seconds from the start of the audio given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub text: String,
    pub start: f64,
    pub end: f64,
    /// Mean probability of the segment's text tokens.
    pub confidence: f32,
    /// The model's probability that the window held no speech.
    pub no_speech_probability: f32,
    /// Mean log-probability of the text tokens (Whisper's `avg_logprob`).
    pub avg_logprob: f32,
    pub words: Vec<Word>,
}

impl Segment {
    /// Rewrites the text from the words, after words were taken out.
    pub fn retext(&mut self) {
        let words: Vec<&str> = self.words.iter().map(|w| w.word.as_str()).collect();
        self.text = words.join(" ");
    }
}

/// The engine's answer for one piece of audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub segments: Vec<Segment>,
    /// Language used (forced or detected).
    pub language: Option<String>,
    /// Seconds from which the text cannot be trusted: a loop was cut out there (a pass
    /// that still repeated itself after its retry). `None` when every pass was clean.
    pub unreliable_from: Option<f64>,
}

/// What the service reports about the loaded model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Configured name (`base`, `tiny.en`) or file name.
    pub name: String,
    /// Path of the model file.
    pub path: String,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Engine and version, e.g. `whisper.cpp 1.8.3`.
    pub engine: String,
    /// Whether the model handles languages other than English.
    pub multilingual: bool,
}

#[cfg(test)]
impl ModelInfo {
    /// What a scripted test engine reports.
    pub fn scripted() -> Self {
        ModelInfo {
            name: "scripted".into(),
            path: String::new(),
            size_bytes: 0,
            engine: "test".into(),
            multilingual: false,
        }
    }
}

/// Engine failures (all are server-side problems, never the client's).
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("loading the model: {0}")]
    Load(String),
    #[error("inference failed: {0}")]
    Inference(String),
    /// The worker process running the engine died during the call (a native abort, a
    /// signal, the OOM killer): the audio it was given is not retried.
    #[error("the engine worker died while transcribing: {0}")]
    Crashed(String),
}

/// A speech recogniser that many threads may call at once.
pub trait Transcriber: Send + Sync {
    /// Transcribes 16 kHz mono samples.
    fn transcribe(&self, samples: &[f32], options: &DecodeOptions) -> Result<Transcript, AsrError>;
    /// What was loaded.
    fn info(&self) -> &ModelInfo;
    /// The model's token ids of `text` (empty where the engine has no tokenizer).
    fn tokenize(&self, _text: &str) -> Vec<i32> {
        Vec::new()
    }
}

/// Whisper's compression-ratio measure of text (zlib): over 2.4 it repeats itself.
pub use quality::compression_ratio;

/// The English name Whisper gives a language code (`en` → `english`).
pub fn language_name(code: &str) -> Option<&'static str> {
    language_id(code).and_then(whisper_rs::get_lang_str_full)
}

/// Whether `code` is a language Whisper knows (`en`, `de`, …).
pub fn is_known_language(code: &str) -> bool {
    language_id(code).is_some()
}

/// whisper.cpp's id of a language code; whisper-rs panics on a NUL byte, so none gets there.
fn language_id(code: &str) -> Option<i32> {
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    whisper_rs::get_lang_id(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes_are_checked_before_whisper_sees_them() {
        assert!(is_known_language("en"));
        assert_eq!(language_name("de"), Some("german"));
        for code in ["", "\0", "e\0n", "klingon", "en-US", "é"] {
            assert!(!is_known_language(code), "{code:?}");
        }
    }
}
