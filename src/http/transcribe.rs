//! `POST /api/transcribe` in both host modes: parse the request, run the chunk
//! (`service::transcribe_chunk`), render prepis's answer and save it with the stream's
//! state, count and log it.

use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::ApiError;
use super::request::{parse_transcribe, QueryOptions};
use super::{envelope_response, error_response, json_response, payload, round3, App, Incoming};
use crate::context::Saved;
use crate::service::{transcribe_chunk, Decoding, Done, Ran};
use crate::speaker::Voiceprint;
use crate::stream::join_words;

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
    /// The segment's voiceprint (256 values, i8, base64) and the speech it was computed
    /// from: what a relabel (`relabel=true`) needs. A Redis session keeps them with the
    /// segment; a token-mode client keeps them and sends them back at the end.
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
struct TranscribeResponse<'a> {
    /// Final segments committed by this request.
    results: &'a [SegmentOut],
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
    if super::sessions::relabel_asked(query)? {
        return super::sessions::relabel_transcript(app, content_type, query, &body).map(|body| {
            Reply {
                outcome: Outcome {
                    bytes: body.len(),
                    format: "relabel",
                    duration: 0.0,
                    segments: 0,
                    context_bytes: 0,
                    whisper_ran: false,
                    seq: 0,
                    processing_ms: 0,
                    replayed: false,
                },
                body,
            }
        });
    }
    let request = parse_transcribe(content_type, query, body).await?;
    match transcribe_chunk(app, request, context_header, Decoding::default()).await? {
        Ran::Replayed { seq, reply } => Ok(replayed(reply, seq)),
        Ran::Done(done) => render(&done).await,
    }
}

/// What the log line and counters record of a chunk done.
pub(super) fn summary(done: &Done, context_bytes: usize) -> Outcome {
    Outcome {
        bytes: done.bytes,
        format: done.audio.format,
        duration: done.audio.duration(),
        segments: done.outcome.segments.len(),
        context_bytes,
        whisper_ran: done.outcome.recognised,
        seq: done.state.seq,
        processing_ms: done.processing_ms,
        replayed: false,
    }
}

/// prepis's own answer: final segments, partial, the next token (or the session committed).
async fn render(done: &Done<'_>) -> Result<Reply, ApiError> {
    let state = &done.state;
    let outcome = &done.outcome;
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
    // A session keeps each segment with its voiceprint, for the end-of-session relabel.
    let stored_segments = || {
        results
            .iter()
            .filter_map(|segment| serde_json::to_string(segment).ok())
            .collect::<Vec<String>>()
    };
    let mut context_bytes = 0;
    let saved = done
        .save(|context| {
            context_bytes = context.as_ref().map_or(0, String::len);
            let response = TranscribeResponse {
                results: &results,
                text,
                partial,
                context,
                stream: StreamOut {
                    id: format!("{:016x}", state.id),
                    session_id: done.store.session_id().map(str::to_string),
                    seq: state.seq,
                    committed_until: ms_to_s(state.committed_until_ms),
                    received_until: samples_to_s(state.received_until),
                    tail_samples: state.tail.with_client().then(|| state.tail_samples()),
                },
                language: state.language.clone(),
                duration: round3(done.audio.duration()),
                processing_ms: done.processing_ms,
                speaker_ms: outcome.speaker_ms,
                model: done.model.clone(),
                warnings: done
                    .warnings
                    .iter()
                    .cloned()
                    .chain(done.nothing_heard())
                    .collect(),
            };
            let body = serde_json::to_string(&response).unwrap_or_default();
            let segments = if done.store.session_id().is_some() {
                stored_segments()
            } else {
                Vec::new()
            };
            (body, segments)
        })
        .await?;
    Ok(match saved {
        Saved::Reply(body) => Reply {
            body,
            outcome: summary(done, context_bytes),
        },
        Saved::Replay { seq, reply } => replayed(reply, seq),
    })
}

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

fn ms_to_s(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn samples_to_s(samples: u64) -> f64 {
    round3(samples as f64 / 16_000.0)
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
        voiceprint: segment.voiceprint.as_ref().map(Voiceprint::encode),
        voice_ms: segment.voiceprint.as_ref().map(|p| p.speech_ms),
    }
}
