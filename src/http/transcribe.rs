//! `POST /api/transcribe` in both host modes: parse, check the language, run decode + VAD
//! + Whisper on the inference pool, render the result, count and log it.

use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::ApiError;
use super::request::{parse_transcribe, QueryOptions};
use super::{envelope_response, error_response, json_response, payload, round3, App, Incoming};
use crate::asr::{self, DecodeOptions, Word};
use crate::audio::{self, DecodeLimits};
use crate::transcription::transcribe_chunk;

/// One segment of the response.
#[derive(Debug, Serialize)]
struct SegmentOut {
    text: String,
    start: f64,
    end: f64,
    /// Speaker label; `null` until speaker recognition runs (never a made-up number).
    speaker: Option<u32>,
    confidence: f64,
    words: Vec<WordOut>,
}

#[derive(Debug, Serialize)]
struct WordOut {
    word: String,
    start: f64,
    end: f64,
    probability: f64,
}

/// The response body of a successful transcription.
#[derive(Debug, Serialize)]
struct TranscribeResponse {
    results: Vec<SegmentOut>,
    /// All segment texts joined by spaces.
    text: String,
    language: Option<String>,
    /// Seconds of audio decoded from the request.
    duration: f64,
    processing_ms: u64,
    model: String,
    /// Decoding problems that did not stop the request.
    warnings: Vec<String>,
}

/// What the log line of a request records.
struct Outcome {
    bytes: usize,
    format: &'static str,
    duration: f64,
    segments: usize,
    speech_seconds: f64,
}

/// Forwarded HTTP (and container mode): the response is the HTTP response.
pub async fn forwarded(app: &App, incoming: &Incoming, body: Bytes) -> Response {
    let query = match QueryOptions::parse(&incoming.query) {
        Ok(q) => q,
        Err(e) => return finish(app, incoming, Err(e), Instant::now(), false),
    };
    let started = Instant::now();
    let result = handle(app, incoming.content_type.as_deref(), &query, body).await;
    finish(app, incoming, result, started, false)
}

/// Payload mode: the request and the response travel in envelopes.
pub async fn payload_mode(app: &App, incoming: &Incoming, envelope: &[u8]) -> Response {
    let started = Instant::now();
    let result = match payload::parse(envelope) {
        Ok(req) => {
            if req.body.len() > app.config.max_body_bytes {
                Err(ApiError::body_too_large(app.config.max_body_bytes))
            } else {
                handle(app, req.content_type.as_deref(), &req.query, req.body).await
            }
        }
        Err(e) => Err(e),
    };
    finish(app, incoming, result, started, true)
}

async fn handle(
    app: &App,
    content_type: Option<&str>,
    query: &QueryOptions,
    body: Bytes,
) -> Result<(TranscribeResponse, Outcome), ApiError> {
    if body.len() > app.config.max_body_bytes {
        return Err(ApiError::body_too_large(app.config.max_body_bytes));
    }
    let request = parse_transcribe(content_type, query, body).await?;
    let language = requested_language(app, request.language.as_deref())?;
    let limits = DecodeLimits {
        max_seconds: app.config.max_audio_seconds,
    };
    let started = Instant::now();
    let bytes = request.audio.len();
    let job = app.inference.run(move |engine| {
        let audio = audio::decode_chunk(&request.audio, request.audio_type.as_deref(), limits)?;
        let options = DecodeOptions {
            language,
            prompt: None,
        };
        let transcript = transcribe_chunk(engine, &audio.samples, &options).map_err(|e| {
            tracing::error!(event = "inference_error", error = %e);
            ApiError::from(e)
        })?;
        Ok::<_, ApiError>((audio, transcript, engine.info().name.clone()))
    });
    let (audio, transcript, model) = job.await??;
    let processing_ms = started.elapsed().as_millis() as u64;

    let results: Vec<SegmentOut> = transcript.segments.iter().map(segment_out).collect();
    let text = results
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let outcome = Outcome {
        bytes,
        format: audio.format,
        duration: audio.duration(),
        segments: results.len(),
        speech_seconds: transcript.speech_seconds,
    };
    let response = TranscribeResponse {
        results,
        text,
        language: transcript.language,
        duration: round3(audio.duration()),
        processing_ms,
        model,
        warnings: audio.warnings,
    };
    Ok((response, outcome))
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
    result: Result<(TranscribeResponse, Outcome), ApiError>,
    started: Instant,
    payload_mode: bool,
) -> Response {
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let invocation_id = incoming.invocation_id.as_deref().unwrap_or("");
    match result {
        Ok((response, outcome)) => {
            app.metrics
                .record_success(outcome.duration, response.processing_ms as f64);
            tracing::info!(
                event = "transcribed",
                invocation_id,
                mode = if payload_mode { "payload" } else { "forwarded" },
                bytes = outcome.bytes,
                format = outcome.format,
                duration_s = round3(outcome.duration),
                speech_s = round3(outcome.speech_seconds),
                segments = outcome.segments,
                language = response.language.as_deref().unwrap_or(""),
                processing_ms = response.processing_ms,
                warnings = response.warnings.len(),
            );
            let body = serde_json::to_string(&response).unwrap_or_default();
            if payload_mode {
                let logs = [format!(
                    "prepis transcribed {:.3} s of audio into {} segments in {} ms",
                    outcome.duration, outcome.segments, response.processing_ms
                )];
                envelope_response(StatusCode::OK, &body, &[], &logs)
            } else {
                json_response(StatusCode::OK, &body, &[])
            }
        }
        Err(e) => {
            app.metrics.record_failure();
            if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(event = "transcribe_failed", invocation_id, status = e.status.as_u16(), code = e.code, message = %e.message, elapsed_ms = round3(elapsed_ms));
            } else {
                tracing::info!(
                    event = "transcribe_rejected",
                    invocation_id,
                    status = e.status.as_u16(),
                    code = e.code,
                    elapsed_ms = round3(elapsed_ms)
                );
            }
            error_response(&e, payload_mode)
        }
    }
}

fn segment_out(segment: &asr::Segment) -> SegmentOut {
    SegmentOut {
        text: segment.text.clone(),
        start: round3(segment.start),
        end: round3(segment.end),
        speaker: None,
        confidence: round3(segment.confidence as f64),
        words: segment.words.iter().map(word_out).collect(),
    }
}

fn word_out(word: &Word) -> WordOut {
    WordOut {
        word: word.word.clone(),
        start: round3(word.start),
        end: round3(word.end),
        probability: round3(word.probability as f64),
    }
}
