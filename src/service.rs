//! One chunk end to end, whatever API carried it: load the stream's state (`context`),
//! decode the audio, run Whisper, the streaming policy and speaker labels on the inference
//! pool (`stream`), and save the new state with the reply. `http` parses requests into a
//! [`ChunkRequest`], calls [`transcribe_chunk`], and renders what it returns.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::asr::{self, AsrError};
use crate::audio::{self, AudioError, DecodeLimits};
use crate::config::Config;
use crate::context::{ContextError, Continuation, Loaded, Saved, SessionStore, Store, Tokens};
use crate::inference::{Inference, InferenceError};
use crate::metrics::Metrics;
use crate::speaker::{SpeakerEncoder, TrackerPolicy};
use crate::stream::{
    process_chunk, ChunkOptions, ChunkOutcome, FinalSegment, StreamState, TailAudio, TailError,
};

/// Everything a request needs, shared by all requests of an instance.
pub struct App {
    /// Validated configuration.
    pub config: Config,
    /// The model and its worker pool.
    pub inference: Arc<Inference>,
    /// Counters for `/api/status`.
    pub metrics: Metrics,
    /// Redis sessions, when `REDIS_URL` is set.
    pub sessions: Option<SessionStore>,
    /// The speaker encoder (`None`: speaker labels are off; `Err`: it failed to load).
    pub speaker: Option<Result<Arc<dyn SpeakerEncoder>, String>>,
    /// Draining after SIGTERM, and the API requests in flight.
    pub lifecycle: crate::lifecycle::Lifecycle,
}

/// One chunk (or whole file) as a client sends it, whichever of the API's shapes carried it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChunkRequest {
    /// The audio bytes as sent.
    pub audio: Bytes,
    /// The media type the client gave the audio (part type, body type or `format`).
    pub audio_type: Option<String>,
    /// Requested language (`auto` or absent: detect).
    pub language: Option<String>,
    /// The context token from the previous response.
    pub context: Option<String>,
    /// Whether this is the stream's last chunk (commit everything).
    pub last: Option<bool>,
    /// Redis mode: the session this chunk belongs to.
    pub session_id: Option<String>,
    /// Redis mode: this chunk's sequence number (1 for the first), for safe retries.
    pub seq: Option<u64>,
    /// Speaker labels on (default) or off for this stream.
    pub diarize: Option<bool>,
    /// Most speakers the stream may have.
    pub max_speakers: Option<u32>,
    /// Speakers the client expects at least (a hint).
    pub min_speakers: Option<u32>,
    /// The client keeps the stream's unconfirmed audio and sends it back (given on the
    /// first chunk; the stream keeps it).
    pub keep_audio: Option<bool>,
    /// The unconfirmed audio sent back: 16 kHz mono 16-bit little-endian PCM.
    pub tail: Option<Bytes>,
    /// Text the speech continues (vocabulary, spellings, style): Whisper's initial prompt,
    /// given on the first chunk.
    pub prompt: Option<String>,
    /// The multipart body's other text fields, in order (the OpenAI API reads its own).
    pub other_fields: Vec<(String, String)>,
}

/// What a request asks of Whisper beyond the stream's options: the OpenAI API's task and
/// temperature, and a listener for a whole file's text as it is decoded.
#[derive(Debug, Clone, Default)]
pub struct Decoding {
    pub translate: bool,
    pub temperature: f32,
    pub progress: Option<asr::Progress>,
    /// Each final segment's token ids are wanted (`Done::tokens`).
    pub tokenize: bool,
}

/// Why a chunk was not transcribed (`http::error` gives each its status).
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("seq=0: chunks are numbered from 1")]
    SeqZero,
    #[error("{0:?} is not a Whisper language code (use e.g. en, de, fr, or auto)")]
    UnknownLanguage(String),
    #[error("the loaded model is English-only and cannot transcribe {0:?}")]
    LanguageNotSupported(String),
    #[error("{seconds:.0} s of audio would take about {expected:.0} s to transcribe here, and a response is cut after {limit:.0} s (Azure's front end; PREPIS_RESPONSE_SECONDS): stream it in chunks instead (`handler stream FILE` does; `handler transcribe` falls back to it)")]
    TooSlow {
        seconds: f64,
        expected: f64,
        limit: f64,
    },
    #[error("keep_audio needs 16 kHz mono chunks (audio/pcm;rate=16000, or 16 kHz mono WAV) that the client can send back as they were; this one is {rate} Hz, {channels} channel(s): convert the chunks, or leave keep_audio off")]
    KeepAudioFormat { rate: u32, channels: usize },
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Tail(#[from] TailError),
    #[error(transparent)]
    Engine(#[from] AsrError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// A chunk the service has run: a retry answered from its stored reply, or the work done.
pub enum Ran<'a> {
    /// A retry of the session's last chunk: its stored reply, byte for byte.
    Replayed { seq: u64, reply: String },
    /// The chunk ran; the caller renders it and saves it.
    Done(Box<Done<'a>>),
}

/// What one chunk produced, before an API renders it and the state is saved.
pub struct Done<'a> {
    /// The stream's state after this chunk (what is saved).
    pub state: StreamState,
    /// Final segments, the partial text and the pass's scores.
    pub outcome: ChunkOutcome,
    /// The chunk's audio as decoded (its format and duration are reported).
    pub audio: audio::DecodedAudio,
    /// Problems that did not stop the request (decoding, speaker labels).
    pub warnings: Vec<String>,
    /// The loaded model's name.
    pub model: String,
    /// Time from the start of the work on the pool to its end.
    pub processing_ms: u64,
    /// The request's audio bytes.
    pub bytes: usize,
    /// Whether this was the stream's last chunk (or a whole file).
    pub last: bool,
    /// Token ids of each final segment's text, when asked for (`Decoding::tokenize`).
    pub tokens: Vec<Vec<i32>>,
    /// Where the stream's state is kept, and where this chunk's state came from.
    pub store: Store<'a>,
    from: Continuation,
}

impl Done<'_> {
    /// A whole request (or stream) that ends without a single word says so.
    pub fn nothing_heard(&self) -> Option<String> {
        (self.last && self.outcome.segments.is_empty() && self.state.committed_until_ms == 0).then(
            || "no speech was recognised in the audio (silence, noise, or not speech)".to_string(),
        )
    }

    /// Saves the new state with the reply `render` makes from the next context token
    /// (`None` in a Redis session); see [`Store::save`].
    pub async fn save(
        &self,
        render: impl FnOnce(Option<String>) -> (String, Vec<String>),
    ) -> Result<Saved, ContextError> {
        self.store.save(self.from, &self.state, render).await
    }
}

/// The share of the response limit a request may be expected to take (the estimate is a
/// moving average; the front end's cut is not).
const RESPONSE_MARGIN: f64 = 0.8;

/// Runs one chunk: its stream's state from the token, the session or nowhere, the audio
/// decoded, Whisper, the policy and speaker labels on the inference pool. The caller
/// renders the result and saves it ([`Done::save`]).
pub async fn transcribe_chunk<'a>(
    app: &'a App,
    request: ChunkRequest,
    context_header: Option<String>,
    decoding: Decoding,
) -> Result<Ran<'a>, ChunkError> {
    if request.seq == Some(0) {
        return Err(ChunkError::SeqZero);
    }
    let language = requested_language(app, request.language.as_deref())?;
    let token = request
        .context
        .clone()
        .or(context_header)
        .filter(|c| !c.trim().is_empty());
    let tokens = Tokens {
        keys: &app.config.context_keys,
        ttl_seconds: app.config.context_ttl_seconds,
        max_bytes: app.config.max_context_bytes,
    };
    let store = Store::pick(tokens, app.sessions.as_ref(), request.session_id.as_deref())?;
    let in_session = store.session_id().is_some();
    let fresh = || StreamState {
        id: random_id(),
        ..StreamState::default()
    };
    let (mut state, from) = match store
        .load(token.as_deref(), request.seq, unix_now(), fresh)
        .await?
    {
        Loaded::Replay { seq, reply } => return Ok(Ran::Replayed { seq, reply }),
        Loaded::State(state, from) => (*state, from),
    };
    // Without a context or session a request is a whole utterance unless the client says otherwise.
    let last = request.last.unwrap_or(token.is_none() && !in_session);
    // Options given on a stream's first chunk hold for the whole stream.
    if state.seq == 0 {
        if let Some(prompt) = &request.prompt {
            state.prompt = prompt.clone();
        }
        state.tail = if in_session {
            TailAudio::Pcm16(Vec::new())
        } else if request.keep_audio == Some(true) {
            TailAudio::Client { digest: 0 }
        } else {
            TailAudio::MuLaw(Vec::new())
        };
    }
    let (encoder, tracker, speaker_warning) = speaker_labels(app, &mut state, &request);
    let started = Instant::now();
    let bytes = request.audio.len();
    let limits = DecodeLimits {
        max_seconds: app.config.max_audio_seconds,
    };
    let policy = app.config.stream;
    let tokenize = decoding.tokenize;
    // Azure's front end cuts a response after 230 s: refuse at once what would take longer.
    let seconds_per_audio_second = app.metrics.expected_seconds(1.0);
    let response_seconds = app.config.response_seconds;
    let lender: Arc<dyn asr::Lender> = app.inference.clone();
    let job = app.inference.run(move |engine| {
        tracing::debug!(event = "inference_started", seq = state.seq + 1);
        let mut state = state;
        let audio = if request.audio.is_empty() && last && state.seq > 0 {
            // An empty last chunk ends a stream: the pending words are committed.
            audio::DecodedAudio::nothing()
        } else {
            let (decoded, recording) = audio::decode_stream_chunk(
                &request.audio,
                request.audio_type.as_deref(),
                limits,
                state.recording.as_ref(),
                last,
            )?;
            state.recording = recording;
            decoded
        };
        let expected = audio.duration() * seconds_per_audio_second;
        if expected > RESPONSE_MARGIN * response_seconds {
            return Err(ChunkError::TooSlow {
                seconds: audio.duration(),
                expected,
                limit: response_seconds,
            });
        }
        if state.tail.with_client() && state.seq == 0 && !audio.samples.is_empty() {
            let (rate, channels) = (audio.source_rate, audio.source_channels);
            if (rate, channels) != (16_000, 1) {
                return Err(ChunkError::KeepAudioFormat { rate, channels });
            }
        }
        let resent = request.tail.as_deref().map(audio::s16le);
        let tail = state.tail_audio(resent.as_deref())?;
        let options = ChunkOptions {
            last,
            language,
            speakers: tracker,
            translate: decoding.translate,
            temperature: decoding.temperature,
            progress: decoding.progress,
        };
        // Long audio (a whole file) also runs on the slots that are idle.
        let (state, outcome) = process_chunk(
            &asr::Spread::new(engine, lender, crate::stream::transcribe_speech),
            encoder.as_deref(),
            state,
            &tail,
            &audio.samples,
            &options,
            &policy,
        )
        .inspect_err(|e| tracing::error!(event = "inference_error", error = %e))?;
        let tokens = if tokenize {
            let text = |s: &FinalSegment| format!(" {}", s.text());
            outcome
                .segments
                .iter()
                .map(|s| engine.tokenize(&text(s)))
                .collect()
        } else {
            Vec::new()
        };
        Ok((audio, state, outcome, tokens, engine.info().name.clone()))
    });
    let (audio, state, outcome, tokens, model) = job.await??;
    let processing_ms = started.elapsed().as_millis() as u64;
    let warnings = audio
        .warnings
        .iter()
        .cloned()
        .chain(speaker_warning)
        .collect();
    Ok(Ran::Done(Box::new(Done {
        state,
        outcome,
        audio,
        warnings,
        model,
        processing_ms,
        bytes,
        last,
        tokens,
        store,
        from,
    })))
}

/// The stream's speaker options after this chunk's (they hold from the chunk that gave
/// them), and what labelling needs: the encoder and the tracker's policy when labels are
/// on, and a warning when they were asked for and cannot be given.
fn speaker_labels(
    app: &App,
    state: &mut StreamState,
    request: &ChunkRequest,
) -> (
    Option<Arc<dyn SpeakerEncoder>>,
    Option<TrackerPolicy>,
    Option<String>,
) {
    let asked = &mut state.speakers.options;
    if let Some(on) = request.diarize {
        asked.off = !on;
    }
    asked.max_speakers = request.max_speakers.or(asked.max_speakers);
    asked.min_speakers = request.min_speakers.or(asked.min_speakers);
    let asked = *asked;
    let (encoder, warning) = match &app.speaker {
        _ if asked.off => (None, None),
        Some(Ok(encoder)) => (Some(encoder.clone()), None),
        Some(Err(e)) => (None, Some(format!("speaker labels are unavailable: {e}"))),
        None => (
            None,
            (request.diarize == Some(true)).then(|| {
                "speaker labels are off on this service (PREPIS_SPEAKER_MODEL=off)".to_string()
            }),
        ),
    };
    let tracker = encoder.as_ref().map(|_| TrackerPolicy {
        max_speakers: asked
            .max_speakers
            .map_or(app.config.speakers.max_speakers, |n| n as usize),
        min_speakers: asked.min_speakers.unwrap_or(1) as usize,
        ..app.config.speakers
    });
    (encoder, tracker, warning)
}

/// `None` = detect. Unknown codes, and non-English on an English-only model, are refused.
fn requested_language(app: &App, requested: Option<&str>) -> Result<Option<String>, ChunkError> {
    let requested = requested
        .map(|l| l.trim().to_ascii_lowercase())
        .filter(|l| !l.is_empty() && l != "auto")
        .or_else(|| app.config.default_language.clone());
    let Some(lang) = requested else {
        return Ok(None);
    };
    if !asr::is_known_language(&lang) {
        return Err(ChunkError::UnknownLanguage(lang));
    }
    let english_only = app.inference.status().info.is_some_and(|i| !i.multilingual);
    if english_only && lang != "en" {
        return Err(ChunkError::LanguageNotSupported(lang));
    }
    Ok(Some(lang))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).unwrap_or_default();
    u64::from_le_bytes(bytes)
}
