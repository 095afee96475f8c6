//! prepis: stateless live transcription with Whisper, served as an Azure Functions
//! custom handler or a plain container.
//!
//! Flow: `http` (Functions modes, routing, errors) → `audio` (sniff, decode, resample)
//! → `transcription` (VAD gate, Whisper, clean-up) on the `inference` pool → `http`.
//! Whisper itself runs in supervised worker processes (`worker`): a native crash costs one
//! request, never the instance.

pub mod asr;
pub mod audio;
pub mod client;
pub mod config;
pub mod context;
pub mod http;
pub mod inference;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod server;
pub mod service;
pub mod speaker;
pub mod stream;
pub mod transcription;
pub mod vad;
pub mod worker;
