//! `POST /api/transcribe` in both host modes: parse, check the language, run decode + VAD
//! + Whisper on the inference pool, render the result, count and log it.

use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::ApiError;
use super::request::{parse_transcribe, QueryOptions, TranscribeRequest};
use super::{envelope_response, error_response, json_response, payload, round3, App, Incoming};
use crate::asr;
use crate::audio::{self, DecodeLimits};
use crate::context::sessions::{
    decode_state, encode_state, valid_session_id, Commit, SessionStore,
};
use crate::context::token;
use crate::stream::{
    join_words, process_chunk, ChunkOptions, ChunkOutcome, StreamState, TailAudio,
};

/// One final segment of the response (stream time, seconds).
#[derive(Debug, Serialize, serde::Deserialize)]
pub(super) struct SegmentOut {
    text: String,
    start: f64,
    end: f64,
    /// Speaker label (1, 2, … in order of first appearance in the stream); `null` when
    /// speaker labels are off or none could be computed (never a made-up number).
    speaker: Option<u32>,
    /// 0..1: how clearly the speaker was told apart (low for speech too short to judge).
    speaker_confidence: Option<f64>,
    confidence: f64,
    words: Vec<WordOut>,
    /// Always true: segments in `results` are committed and never revised.
    #[serde(rename = "final")]
    is_final: bool,
}

/// A segment as a Redis session keeps it: the response's segment and its voiceprint (i8,
/// base64) for the end-of-session relabel. Reading the session strips the voiceprint.
#[derive(Serialize)]
struct StoredSegment<'a> {
    #[serde(flatten)]
    segment: &'a SegmentOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    voiceprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    voice_ms: Option<u64>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct WordOut {
    word: String,
    start: f64,
    end: f64,
    probability: f64,
}

/// The current unconfirmed text, replaced by the next response.
#[derive(Debug, Serialize)]
struct PartialOut {
    text: String,
    start: f64,
    end: f64,
}

/// Where the stream stands after this request.
#[derive(Debug, Serialize)]
struct StreamOut {
    id: String,
    /// The Redis session, in session mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    seq: u64,
    committed_until: f64,
    received_until: f64,
    /// When the client keeps the unconfirmed audio (`keep_audio`): how many of the last
    /// 16 kHz samples it sent to send back as `tail` with the next chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    tail_samples: Option<u64>,
}

/// The response body of a successful transcription.
#[derive(Debug, Serialize)]
struct TranscribeResponse {
    /// Final segments committed by this request.
    results: Vec<SegmentOut>,
    /// The texts of `results` joined by spaces.
    text: String,
    partial: Option<PartialOut>,
    /// The token to send with the next chunk of this stream (`null` in Redis session mode).
    context: Option<String>,
    stream: StreamOut,
    language: Option<String>,
    /// Seconds of audio decoded from this request.
    duration: f64,
    processing_ms: u64,
    /// The part of `processing_ms` spent on speaker labels.
    speaker_ms: u64,
    model: String,
    /// Decoding problems that did not stop the request.
    warnings: Vec<String>,
}

/// A rendered success: the body, and what the log line and counters record.
pub(super) struct Reply {
    body: String,
    outcome: Outcome,
}

/// What the log line of a request records.
pub(super) struct Outcome {
    bytes: usize,
    format: &'static str,
    duration: f64,
    segments: usize,
    context_bytes: usize,
    whisper_ran: bool,
    seq: u64,
    processing_ms: u64,
    /// A retry answered from the stored reply (Redis mode).
    replayed: bool,
}

/// Forwarded HTTP (and container mode): the response is the HTTP response.
pub async fn forwarded(app: &App, incoming: &Incoming, body: Bytes) -> Response {
    let started = Instant::now();
    let result = match QueryOptions::parse(&incoming.query) {
        Ok(query) => {
            handle(
                app,
                incoming.content_type.as_deref(),
                incoming.context.clone(),
                &query,
                body,
            )
            .await
        }
        Err(e) => Err(e),
    };
    finish(app, incoming, result, started, false)
}

/// Payload mode: the request and the response travel in envelopes.
pub async fn payload_mode(app: &App, incoming: &Incoming, envelope: &[u8]) -> Response {
    let started = Instant::now();
    let result = match payload::parse(envelope) {
        Ok(req) => {
            handle(
                app,
                req.content_type.as_deref(),
                req.context,
                &req.query,
                req.body,
            )
            .await
        }
        Err(e) => Err(e),
    };
    finish(app, incoming, result, started, true)
}

async fn handle(
    app: &App,
    content_type: Option<&str>,
    context_header: Option<String>,
    query: &QueryOptions,
    body: Bytes,
) -> Result<Reply, ApiError> {
    if body.len() > app.config.max_body_bytes {
        return Err(ApiError::body_too_large(app.config.max_body_bytes));
    }
    let request = parse_transcribe(content_type, query, body).await?;
    match run(app, request, context_header, Decoding::default()).await? {
        Ran::Replayed(reply) => Ok(reply),
        Ran::Done(done) => render(app, done).await,
    }
}

/// What a request asks of Whisper beyond the stream's options: the OpenAI API's task and
/// temperature, and a listener for a whole file's text as it is decoded.
#[derive(Debug, Clone, Default)]
pub(super) struct Decoding {
    pub translate: bool,
    pub temperature: f32,
    pub progress: Option<asr::Progress>,
    /// Each final segment's token ids are wanted (`Done::tokens`).
    pub tokenize: bool,
}

/// A request the pipeline has run: a retry answered from its stored reply, or the work done.
pub(super) enum Ran<'a> {
    Replayed(Reply),
    Done(Box<Done<'a>>),
}

/// What one request produced, before any API renders it.
pub(super) struct Done<'a> {
    pub state: StreamState,
    pub outcome: ChunkOutcome,
    pub audio: audio::DecodedAudio,
    /// Problems that did not stop the request (decoding, speaker labels).
    pub warnings: Vec<String>,
    pub model: String,
    pub processing_ms: u64,
    /// The request's audio bytes.
    pub bytes: usize,
    /// Whether this was the stream's last chunk (or a whole file).
    pub last: bool,
    /// Token ids of each final segment's text, when asked for (`Decoding::tokenize`).
    pub tokens: Vec<Vec<i32>>,
    issued_at: u64,
    session: Option<(String, &'a SessionStore)>,
    stored_seq: u64,
}

impl Done<'_> {
    /// What the log line and counters record.
    pub(super) fn outcome_summary(&self, context_bytes: usize) -> Outcome {
        Outcome {
            bytes: self.bytes,
            format: self.audio.format,
            duration: self.audio.duration(),
            segments: self.outcome.segments.len(),
            context_bytes,
            whisper_ran: self.outcome.recognised,
            seq: self.state.seq,
            processing_ms: self.processing_ms,
            replayed: false,
        }
    }

    /// A whole request (or stream) that ends without a single word says so.
    pub(super) fn nothing_heard(&self) -> Option<String> {
        (self.last && self.outcome.segments.is_empty() && self.state.committed_until_ms == 0).then(
            || "no speech was recognised in the audio (silence, noise, or not speech)".to_string(),
        )
    }
}

/// Runs one parsed request: its stream's state from the token, the session or nowhere, the
/// audio decoded, Whisper, the policy and speaker labels on the inference pool.
pub(super) async fn run<'a>(
    app: &'a App,
    request: TranscribeRequest,
    context_header: Option<String>,
    decoding: Decoding,
) -> Result<Ran<'a>, ApiError> {
    if request.seq == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "seq=0: chunks are numbered from 1",
        ));
    }
    let language = requested_language(app, request.language.as_deref())?;
    let context = request
        .context
        .clone()
        .or(context_header)
        .filter(|c| !c.trim().is_empty());
    let session = match request.session_id.as_deref() {
        None => None,
        Some(id) if !valid_session_id(id) => {
            return Err(ApiError::bad_request(
                "invalid_session_id",
                "session_id must be 1-128 letters, digits or -_.:",
            ))
        }
        Some(id) => Some((id.to_string(), session_store(app)?)),
    };
    let now = unix_now();

    // Where the stream's state comes from: the session in Redis, the token, or nowhere.
    let mut stored_seq = 0;
    let (state, issued_at) = if let Some((id, store)) = &session {
        match store.load(id).await.map_err(redis_unavailable)? {
            Some(stored) => {
                stored_seq = stored.seq;
                if let Some(seq) = request.seq {
                    if seq <= stored.seq {
                        return match stored.last_reply {
                            Some((reply_seq, body)) if reply_seq == seq => {
                                Ok(Ran::Replayed(replayed(body, seq)))
                            }
                            _ => Err(sequence_conflict(seq, stored.seq)),
                        };
                    }
                }
                decode_state(&stored.state)
                    .map(|(issued, state)| (state, issued))
                    .ok_or_else(session_corrupt)?
            }
            None => (
                StreamState {
                    id: random_id(),
                    ..StreamState::default()
                },
                now,
            ),
        }
    } else if let Some(token) = &context {
        let opened = token::open(
            &app.config.context_keys,
            token,
            now,
            app.config.max_context_bytes,
        )?;
        (opened.state, opened.issued_at)
    } else {
        (
            StreamState {
                id: random_id(),
                ..StreamState::default()
            },
            now,
        )
    };
    if let Some(seq) = request.seq {
        if seq != state.seq + 1 {
            return Err(sequence_conflict(seq, state.seq));
        }
    }
    // Without a context or session a request is a whole utterance unless the client says otherwise.
    let last = request
        .last
        .unwrap_or(context.is_none() && session.is_none());
    let limits = DecodeLimits {
        max_seconds: app.config.max_audio_seconds,
    };
    let policy = app.config.stream;
    // Speaker options hold for the stream from the chunk that gave them.
    let mut state = state;
    if state.seq == 0 {
        if let Some(prompt) = &request.prompt {
            state.prompt = prompt.clone();
        }
        state.tail = if session.is_some() {
            TailAudio::Pcm16(Vec::new())
        } else if request.keep_audio == Some(true) {
            TailAudio::Client { digest: 0 }
        } else {
            TailAudio::MuLaw(Vec::new())
        };
    }
    let asked = &mut state.speakers.options;
    if let Some(on) = request.diarize {
        asked.off = !on;
    }
    asked.max_speakers = request.max_speakers.or(asked.max_speakers);
    asked.min_speakers = request.min_speakers.or(asked.min_speakers);
    let asked = *asked;
    let mut speaker_warning = None;
    let encoder = match &app.speaker {
        _ if asked.off => None,
        Some(Ok(encoder)) => Some(encoder.clone()),
        Some(Err(e)) => {
            speaker_warning = Some(format!("speaker labels are unavailable: {e}"));
            None
        }
        None => {
            if request.diarize == Some(true) {
                speaker_warning = Some(
                    "speaker labels are off on this service (PREPIS_SPEAKER_MODEL=off)".into(),
                );
            }
            None
        }
    };
    let tracker = encoder.as_ref().map(|_| crate::speaker::TrackerPolicy {
        max_speakers: asked
            .max_speakers
            .map_or(app.config.speakers.max_speakers, |n| n as usize),
        min_speakers: asked.min_speakers.unwrap_or(1) as usize,
        ..app.config.speakers
    });
    let started = Instant::now();
    let bytes = request.audio.len();
    let tokenize = decoding.tokenize;
    // Azure's front end cuts a response after 230 s: refuse at once what would take longer.
    let seconds_per_audio_second = app.metrics.expected_seconds(1.0);
    let response_seconds = app.config.response_seconds;
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
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "response_too_slow",
                format!("{:.0} s of audio would take about {expected:.0} s to transcribe here, and a response is cut after {response_seconds:.0} s (Azure's front end; PREPIS_RESPONSE_SECONDS): stream it in chunks instead (`handler stream FILE` does; `handler transcribe` falls back to it)", audio.duration()),
            ));
        }
        if state.tail.with_client() && state.seq == 0 && !audio.samples.is_empty() {
            let (rate, channels) = (audio.source_rate, audio.source_channels);
            if (rate, channels) != (16_000, 1) {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "keep_audio_format",
                    format!("keep_audio needs 16 kHz mono chunks (audio/pcm;rate=16000, or 16 kHz mono WAV) that the client can send back as they were; this one is {rate} Hz, {channels} channel(s): convert the chunks, or leave keep_audio off"),
                ));
            }
        }
        let resent = request.tail.as_deref().map(crate::audio::s16le);
        let tail = state.tail_audio(resent.as_deref()).map_err(|e| {
            let code = match e {
                crate::stream::TailError::Missing(_) => "tail_missing",
                _ => "tail_mismatch",
            };
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
        })?;
        let options = ChunkOptions {
            last,
            language,
            speakers: tracker,
            translate: decoding.translate,
            temperature: decoding.temperature,
            progress: decoding.progress,
        };
        let (state, outcome) = process_chunk(
            engine,
            encoder.as_deref(),
            state,
            &tail,
            &audio.samples,
            &options,
            &policy,
        )
        .map_err(|e| {
            tracing::error!(event = "inference_error", error = %e);
            ApiError::from(e)
        })?;
        let tokens = if tokenize {
            let text = |s: &crate::stream::FinalSegment| format!(" {}", s.text());
            outcome.segments.iter().map(|s| engine.tokenize(&text(s))).collect()
        } else {
            Vec::new()
        };
        Ok::<_, ApiError>((audio, state, outcome, tokens, engine.info().name.clone()))
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
        issued_at,
        session,
        stored_seq,
    })))
}

/// prepis's own answer: final segments, partial, the next token (or the session committed).
async fn render(app: &App, done: Box<Done<'_>>) -> Result<Reply, ApiError> {
    let nothing_heard = done.nothing_heard();
    let mut summary = done.outcome_summary(0);
    let Done {
        state,
        outcome,
        audio,
        warnings,
        model,
        processing_ms,
        issued_at,
        session,
        stored_seq,
        ..
    } = *done;
    let sealed = session.is_none().then(|| {
        token::seal(
            &app.config.context_keys.current,
            issued_at,
            issued_at.saturating_add(app.config.context_ttl_seconds),
            &state,
        )
    });
    let results: Vec<SegmentOut> = outcome.segments.iter().map(segment_out).collect();
    let text = results
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let partial = (!outcome.partial.is_empty()).then(|| PartialOut {
        text: join_words(&outcome.partial),
        start: ms_to_s(outcome.partial[0].start_ms),
        end: ms_to_s(outcome.partial[outcome.partial.len() - 1].end_ms),
    });
    let segment_json: Vec<String> = results
        .iter()
        .zip(&outcome.segments)
        .filter_map(|(segment, finals)| {
            let print = finals.voiceprint.as_ref();
            serde_json::to_string(&StoredSegment {
                segment,
                voiceprint: print.map(|p| {
                    let bytes: Vec<u8> = crate::speaker::encoder::quantise(&p.vector)
                        .into_iter()
                        .map(|q| q as u8)
                        .collect();
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                }),
                voice_ms: print.map(|p| p.speech_ms),
            })
            .ok()
        })
        .collect();
    // A whole request (or stream) that ends without a single word says so.
    summary.context_bytes = sealed.as_ref().map_or(0, String::len);
    let response = TranscribeResponse {
        results,
        text,
        partial,
        context: sealed,
        stream: StreamOut {
            id: format!("{:016x}", state.id),
            session_id: session.as_ref().map(|(id, _)| id.clone()),
            seq: state.seq,
            committed_until: ms_to_s(state.committed_until_ms),
            received_until: samples_to_s(state.received_until),
            tail_samples: state.tail.with_client().then(|| state.tail_samples()),
        },
        language: state.language.clone(),
        duration: round3(audio.duration()),
        processing_ms,
        speaker_ms: outcome.speaker_ms,
        model,
        warnings: warnings.into_iter().chain(nothing_heard).collect(),
    };
    let body = serde_json::to_string(&response).unwrap_or_default();

    if let Some((id, store)) = &session {
        let blob = encode_state(issued_at, &state);
        match store
            .commit(id, stored_seq, state.seq, &blob, &body, &segment_json)
            .await
            .map_err(redis_unavailable)?
        {
            Commit::Done => {}
            Commit::Lost { current_seq } => {
                // A concurrent request (a retry racing its original) committed first.
                let winner = store.load(id).await.map_err(redis_unavailable)?;
                return match winner.and_then(|w| w.last_reply) {
                    Some((seq, body)) if seq == state.seq => Ok(replayed(body, seq)),
                    _ => Err(sequence_conflict(state.seq, current_seq)),
                };
            }
        }
    }
    Ok(Reply {
        body,
        outcome: summary,
    })
}

/// The share of the response limit a request may be expected to take (the estimate is a
/// moving average; the front end's cut is not).
const RESPONSE_MARGIN: f64 = 0.8;

/// The answer to a retried chunk: the stored reply, byte for byte.
fn replayed(body: String, seq: u64) -> Reply {
    Reply {
        body,
        outcome: Outcome {
            bytes: 0,
            format: "replay",
            duration: 0.0,
            segments: 0,
            context_bytes: 0,
            whisper_ran: false,
            seq,
            processing_ms: 0,
            replayed: true,
        },
    }
}

/// 409 for a stored session this build cannot read.
pub(super) fn session_corrupt() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "session_corrupt",
        "the stored session cannot be read (damaged, or stored by another version of the service); DELETE it and start again",
    )
}

fn session_store(app: &App) -> Result<&crate::context::sessions::SessionStore, ApiError> {
    app.sessions.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "sessions_disabled",
            "session_id needs Redis sessions, which this service has not enabled (REDIS_URL); stream with the context token instead",
        )
    })
}

pub(super) fn redis_unavailable(e: crate::context::sessions::StoreError) -> ApiError {
    tracing::error!(event = "redis_unavailable", error = %e);
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "sessions_unavailable",
        "the session store (Redis) is unavailable; retry the same chunk shortly",
    );
    error.retry_after = Some(2);
    error
}

fn sequence_conflict(sent: u64, stored: u64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "sequence_conflict",
        format!("chunk seq={sent} does not follow the session, which has processed {stored} chunks; send seq={}", stored + 1),
    )
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

fn ms_to_s(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn samples_to_s(samples: u64) -> f64 {
    round3(samples as f64 / 16_000.0)
}

/// `None` = detect. Unknown codes, and non-English on an English-only model, are refused.
fn requested_language(app: &App, requested: Option<&str>) -> Result<Option<String>, ApiError> {
    let requested = requested
        .map(|l| l.trim().to_ascii_lowercase())
        .filter(|l| !l.is_empty() && l != "auto")
        .or_else(|| app.config.default_language.clone());
    let Some(lang) = requested else {
        return Ok(None);
    };
    if !asr::is_known_language(&lang) {
        return Err(ApiError::bad_request(
            "unknown_language",
            format!("{lang:?} is not a Whisper language code (use e.g. en, de, fr, or auto)"),
        ));
    }
    let english_only = app.inference.status().info.is_some_and(|i| !i.multilingual);
    if english_only && lang != "en" {
        return Err(ApiError::bad_request(
            "language_not_supported",
            format!("the loaded model is English-only and cannot transcribe {lang:?}"),
        ));
    }
    Ok(Some(lang))
}

fn finish(
    app: &App,
    incoming: &Incoming,
    result: Result<Reply, ApiError>,
    started: Instant,
    payload_mode: bool,
) -> Response {
    let mode = if payload_mode { "payload" } else { "forwarded" };
    match result {
        Ok(Reply { body, outcome }) => {
            record(app, incoming, Ok(&outcome), started, mode);
            if payload_mode {
                let logs = [format!(
                    "prepis transcribed {:.3} s of audio into {} segments in {} ms",
                    outcome.duration, outcome.segments, outcome.processing_ms
                )];
                envelope_response(StatusCode::OK, &body, &[], &logs)
            } else {
                json_response(StatusCode::OK, &body, &[])
            }
        }
        Err(e) => {
            record(app, incoming, Err(&e), started, mode);
            error_response(&e, payload_mode)
        }
    }
}

/// Counts a request and writes its log line (`mode`: payload, forwarded, openai).
pub(super) fn record(
    app: &App,
    incoming: &Incoming,
    result: Result<&Outcome, &ApiError>,
    started: Instant,
    mode: &str,
) {
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let invocation_id = incoming.invocation_id.as_deref().unwrap_or("");
    match result {
        Ok(outcome) => {
            if !outcome.replayed {
                app.metrics
                    .record_success(outcome.duration, outcome.processing_ms as f64);
            }
            tracing::info!(
                event = "transcribed",
                invocation_id,
                mode,
                bytes = outcome.bytes,
                format = outcome.format,
                duration_s = round3(outcome.duration),
                segments = outcome.segments,
                whisper_ran = outcome.whisper_ran,
                context_bytes = outcome.context_bytes,
                seq = outcome.seq,
                replayed = outcome.replayed,
                processing_ms = outcome.processing_ms,
            );
        }
        Err(e) => {
            app.metrics.record_failure();
            if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(event = "transcribe_failed", invocation_id, mode, status = e.status.as_u16(), code = e.code, message = %e.message, elapsed_ms = round3(elapsed_ms));
            } else {
                tracing::info!(
                    event = "transcribe_rejected",
                    invocation_id,
                    mode,
                    status = e.status.as_u16(),
                    code = e.code,
                    elapsed_ms = round3(elapsed_ms)
                );
            }
        }
    }
}

fn segment_out(segment: &crate::stream::FinalSegment) -> SegmentOut {
    let words = &segment.words;
    let confidence = words
        .iter()
        .map(|w| w.probability_milli as f64)
        .sum::<f64>()
        / words.len().max(1) as f64
        / 1000.0;
    SegmentOut {
        text: join_words(words),
        start: words.first().map_or(0.0, |w| ms_to_s(w.start_ms)),
        end: words.last().map_or(0.0, |w| ms_to_s(w.end_ms)),
        speaker: segment.speaker.map(|l| l.speaker),
        speaker_confidence: segment.speaker.map(|l| round3(l.confidence as f64)),
        confidence: round3(confidence),
        words: words
            .iter()
            .map(|w| WordOut {
                word: w.text.clone(),
                start: ms_to_s(w.start_ms),
                end: ms_to_s(w.end_ms),
                probability: w.probability_milli as f64 / 1000.0,
            })
            .collect(),
        is_final: true,
    }
}
