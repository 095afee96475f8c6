//! prepis: stateless live transcription with Whisper, served as an Azure Functions
//! custom handler or a plain container.
//!
//! One chunk's path, each module calling only those after it: `http` (Functions modes,
//! routing, parsing, rendering, errors) → `service` (one chunk end to end) → `context`
//! (its state: sealed token or Redis session) and `stream` (the policy: VAD window,
//! Whisper on the `inference` pool, agreement, cuts, speaker labels from `speaker`) →
//! `audio` (sniff, decode, resample), `asr` (the engine trait and whisper.cpp), `vad`.
//! Whisper itself runs in supervised worker processes (`worker`): a native crash costs one
//! request, never the instance. `server` builds the app and serves it; `config` is read
//! once at start. See docs/architecture.md.

pub mod asr;
pub mod audio;
pub mod client;
pub mod config;
pub mod context;
pub mod convert;
pub mod http;
pub mod inference;
mod lifecycle;
mod metrics;
pub mod server;
pub mod service;
pub mod speaker;
pub mod stream;
pub mod vad;
pub mod worker;
