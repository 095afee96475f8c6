//! The OpenAI audio API, as OpenAI documents it, on prepis's own pipeline:
//! `POST /v1/audio/transcriptions`, `POST /v1/audio/translations`, `GET /v1/models` (and
//! the same under `/api/v1/…`, where the Functions host routes them). A request is one
//! whole file (`service::transcribe_chunk` with `final=true`); only the rendering is OpenAI's:
//! `json`, `text`, `srt`, `vtt`, `verbose_json` (segments and words), `diarized_json`,
//! Server-Sent Events for `stream=true`, and errors as `{"error": {message, type, param,
//! code}}` with statuses the official SDKs turn into their typed exceptions.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply as _, Response};

use super::error::ApiError;
use super::request::{parse_transcribe, QueryOptions};
use super::transcribe;
use super::{json_response, round3, App, Incoming};
use crate::asr::{self, Progress};
use crate::service::{transcribe_chunk, Decoding, Done, Ran};
use crate::stream::{FinalSegment, SegmentScore};

/// Transcription (in the language spoken) or translation (to English).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Task {
    Transcribe,
    Translate,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::Transcribe => "transcribe",
            Task::Translate => "translate",
        }
    }
}

/// The model id every OpenAI client knows; it names the loaded model.
const OPENAI_MODEL: &str = "whisper-1";

/// `response_format`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
    DiarizedJson,
}

/// The OpenAI fields of one request (prepis's own, such as `diarize`, are read as on
/// `/api/transcribe`).
#[derive(Debug, Clone, PartialEq)]
struct Options {
    format: Format,
    temperature: f32,
    words: bool,
    segments: bool,
    stream: bool,
}

/// An error in OpenAI's shape: its status, and the request field it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiError {
    pub error: ApiError,
    pub param: Option<&'static str>,
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        let param = match error.code {
            "not_audio" | "undecodable_audio" | "headerless_chunk" | "empty_body"
            | "missing_audio" | "audio_too_long" | "invalid_multipart" => Some("file"),
            "unknown_language" | "language_not_supported" => Some("language"),
            _ => None,
        };
        OpenAiError { error, param }
    }
}

fn invalid(param: &'static str, message: String) -> OpenAiError {
    OpenAiError {
        error: ApiError::bad_request("invalid_parameter", message),
        param: Some(param),
    }
}

/// `POST /v1/audio/transcriptions` and `/v1/audio/translations` (the body already read).
pub(super) async fn audio(
    app: &Arc<App>,
    incoming: &Incoming,
    body: Bytes,
    task: Task,
) -> Response {
    let started = Instant::now();
    let parsed = parse(app, incoming, body, task).await;
    let (request, options) = match parsed {
        Ok(p) => p,
        Err(e) => {
            transcribe::record(app, incoming, Err(&e.error), started, "openai");
            return error_response(&e);
        }
    };
    let decoding = Decoding {
        translate: task == Task::Translate,
        temperature: options.temperature,
        progress: None,
        tokenize: options.format == Format::VerboseJson && options.segments,
    };
    if options.stream {
        return streamed(app, incoming, request, decoding, started).await;
    }
    match whole_file(app, incoming, request, decoding, started).await {
        Ok(done) => render(&done, &options, task),
        Err(e) => error_response(&e.into()),
    }
}

/// Runs one whole file through the pipeline, and logs and counts it as an OpenAI request.
async fn whole_file<'a>(
    app: &'a App,
    incoming: &Incoming,
    request: crate::service::ChunkRequest,
    decoding: Decoding,
    started: Instant,
) -> Result<Box<Done<'a>>, ApiError> {
    let result = match transcribe_chunk(app, request, None, decoding).await {
        Ok(Ran::Done(done)) => Ok(done),
        // No session, so no replays: a whole file is always run.
        Ok(Ran::Replayed { .. }) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "a whole-file request was answered as a replay",
        )),
        Err(e) => Err(e.into()),
    };
    let summary = result.as_ref().map(|done| transcribe::summary(done, 0));
    transcribe::record(
        app,
        incoming,
        summary.as_ref().map_err(|e| *e),
        started,
        "openai",
    );
    result
}

/// Reads the multipart body: the audio and prepis's options as on `/api/transcribe`, then
/// OpenAI's own fields.
async fn parse(
    app: &App,
    incoming: &Incoming,
    body: Bytes,
    task: Task,
) -> Result<(crate::service::ChunkRequest, Options), OpenAiError> {
    if body.len() > app.config.max_body_bytes {
        return Err(ApiError::body_too_large(app.config.max_body_bytes).into());
    }
    let content_type = incoming.content_type.as_deref().unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err(OpenAiError {
            error: ApiError::bad_request(
                "invalid_content_type",
                "send the audio as multipart/form-data with the file in field `file`, as OpenAI's API takes it",
            ),
            param: Some("file"),
        });
    }
    let query = QueryOptions::parse(&incoming.query)?;
    let mut request = parse_transcribe(Some(content_type), &query, body).await?;
    // A whole file, never part of a stream.
    request.last = Some(true);
    request.context = None;
    request.session_id = None;
    request.seq = None;
    request.keep_audio = None;
    request.tail = None;

    let mut options = Options {
        format: Format::Json,
        temperature: 0.0,
        words: false,
        segments: false,
        stream: false,
    };
    let mut granularities = Vec::new();
    for (name, value) in &request.other_fields {
        match name.as_str() {
            "response_format" => {
                options.format = match value.as_str() {
                    "json" => Format::Json,
                    "text" => Format::Text,
                    "srt" => Format::Srt,
                    "vtt" => Format::Vtt,
                    "verbose_json" => Format::VerboseJson,
                    "diarized_json" if task == Task::Transcribe => Format::DiarizedJson,
                    other => {
                        return Err(invalid(
                            "response_format",
                            format!("response_format {other:?} is not one of json, text, srt, verbose_json, vtt{}", if task == Task::Transcribe { ", diarized_json" } else { "" }),
                        ))
                    }
                }
            }
            "temperature" => {
                options.temperature = value
                    .parse::<f32>()
                    .ok()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        invalid(
                            "temperature",
                            format!("temperature {value:?} is not a number from 0 to 1"),
                        )
                    })?;
            }
            "timestamp_granularities[]" | "timestamp_granularities" => {
                for g in value.split(',').map(str::trim) {
                    match g {
                        "word" | "segment" => granularities.push(g.to_string()),
                        other => {
                            return Err(invalid(
                                "timestamp_granularities",
                                format!("timestamp granularity {other:?} is not word or segment"),
                            ))
                        }
                    }
                }
            }
            "stream" => {
                options.stream = super::request::parse_bool("stream", value)
                    .map_err(|e| OpenAiError { error: e, param: Some("stream") })?;
            }
            // `model` names the loaded model whatever it says (see `GET /v1/models`);
            // `chunking_strategy`, `include[]` and `known_speaker_*` have no effect here.
            _ => {}
        }
    }
    if !granularities.is_empty() && options.format != Format::VerboseJson {
        return Err(invalid(
            "timestamp_granularities",
            "timestamp_granularities needs response_format=verbose_json".into(),
        ));
    }
    options.words = granularities.iter().any(|g| g == "word");
    options.segments = granularities.is_empty() || granularities.iter().any(|g| g == "segment");
    if options.stream && !matches!(options.format, Format::Json | Format::Text) {
        return Err(invalid(
            "stream",
            "stream=true streams text: use response_format json or text".into(),
        ));
    }
    Ok((request, options))
}

/// A successful answer in the asked format.
fn render(done: &Done, options: &Options, task: Task) -> Response {
    let text = full_text(&done.outcome.segments);
    let duration = done.audio.duration();
    let usage = json!({"type": "duration", "seconds": duration.ceil() as u64});
    match options.format {
        Format::Json => json_response(
            StatusCode::OK,
            &json!({"text": text, "usage": usage}).to_string(),
            &[],
        ),
        Format::Text => plain(format!("{text}\n"), "text/plain; charset=utf-8"),
        Format::Srt => plain(
            srt(&done.outcome.segments),
            "application/x-subrip; charset=utf-8",
        ),
        Format::Vtt => plain(vtt(&done.outcome.segments), "text/vtt; charset=utf-8"),
        Format::VerboseJson => {
            let language = match task {
                Task::Translate => "english".to_string(),
                Task::Transcribe => done
                    .state
                    .language
                    .as_deref()
                    .map(|code| asr::language_name(code).unwrap_or(code).to_string())
                    .unwrap_or_default(),
            };
            let mut body = json!({
                "task": task.name(),
                "language": language,
                "duration": round3(duration),
                "text": text,
                "usage": usage,
            });
            if options.segments {
                body["segments"] = Value::Array(verbose_segments(done, options.temperature));
            }
            if options.words {
                body["words"] = Value::Array(
                    done.outcome
                        .segments
                        .iter()
                        .flat_map(|s| s.words.iter())
                        .map(|w| json!({"word": w.text, "start": seconds(w.start_ms), "end": seconds(w.end_ms)}))
                        .collect(),
                );
            }
            json_response(StatusCode::OK, &body.to_string(), &[])
        }
        Format::DiarizedJson => {
            let segments: Vec<Value> = done
                .outcome
                .segments
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    json!({
                        "type": "transcript.text.segment",
                        "id": format!("seg_{i}"),
                        "start": seconds(start_ms(s)),
                        "end": seconds(end_ms(s)),
                        "text": s.text(),
                        "speaker": s.speaker.map_or_else(|| "unknown".to_string(), |l| speaker_letter(l.speaker)),
                    })
                })
                .collect();
            let body = json!({
                "task": "transcribe",
                "duration": round3(duration),
                "text": text,
                "segments": segments,
                "usage": usage,
            });
            json_response(StatusCode::OK, &body.to_string(), &[])
        }
    }
}

/// `verbose_json` segments: Whisper's own measures for each final segment (those of the
/// Whisper segment it overlaps most), its token ids, and prepis's speaker label.
fn verbose_segments(done: &Done, temperature: f32) -> Vec<Value> {
    done.outcome
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (start, end) = (start_ms(s), end_ms(s));
            let score = best_score(&done.outcome.scores, start, end);
            let text = s.text();
            let mut segment = json!({
                "id": i,
                "seek": start / 10,
                "start": seconds(start),
                "end": seconds(end),
                "text": format!(" {text}"),
                "tokens": done.tokens.get(i).cloned().unwrap_or_default(),
                "temperature": temperature,
                "avg_logprob": score.map_or(0.0, |s| round3(s.avg_logprob as f64)),
                "compression_ratio": round3(asr::compression_ratio(&text)),
                "no_speech_prob": score.map_or(0.0, |s| round3(s.no_speech_probability as f64)),
            });
            if let Some(label) = s.speaker {
                segment["speaker"] = json!(label.speaker);
                segment["speaker_confidence"] = json!(round3(label.confidence as f64));
            }
            segment
        })
        .collect()
}

/// The Whisper segment that overlaps `start..end` most.
fn best_score(scores: &[SegmentScore], start: u64, end: u64) -> Option<&SegmentScore> {
    let overlap = |s: &SegmentScore| s.end_ms.min(end).saturating_sub(s.start_ms.max(start));
    scores
        .iter()
        .filter(|s| overlap(s) > 0 || (s.start_ms <= start && start <= s.end_ms))
        .max_by_key(|s| overlap(s))
}

/// `stream=true`: each pass's text as a `transcript.text.delta` event as soon as Whisper has
/// it, then `transcript.text.done` with the whole text. A request that fails before its
/// first event gets an ordinary error response.
async fn streamed(
    app: &Arc<App>,
    incoming: &Incoming,
    request: crate::service::ChunkRequest,
    mut decoding: Decoding,
    started: Instant,
) -> Response {
    enum Piece {
        Delta(String),
        Finished(Result<String, ApiError>),
    }
    let (sender, mut pieces) = tokio::sync::mpsc::unbounded_channel::<Piece>();
    let deltas = sender.clone();
    let said_before = std::sync::atomic::AtomicBool::new(false);
    decoding.progress = Some(Progress::new(move |pass| {
        let text = pass.iter().map(|s| s.text.trim()).filter(|t| !t.is_empty());
        let text = text.collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            return;
        }
        let space = if said_before.swap(true, std::sync::atomic::Ordering::Relaxed) {
            " "
        } else {
            ""
        };
        let _ = deltas.send(Piece::Delta(format!("{space}{text}")));
    }));
    let (app, incoming) = (Arc::clone(app), incoming.clone());
    tokio::spawn(async move {
        let result = whole_file(&app, &incoming, request, decoding, started)
            .await
            .map(|done| full_text(&done.outcome.segments));
        let _ = sender.send(Piece::Finished(result));
    });
    let first = match pieces.recv().await {
        Some(Piece::Finished(Err(e))) => return error_response(&e.into()),
        Some(first) => first,
        None => {
            return error_response(
                &ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the transcription ended without an answer",
                )
                .into(),
            )
        }
    };
    let event = |piece: Piece| -> (warp::sse::Event, bool) {
        let (data, last) = match piece {
            Piece::Delta(delta) => (
                json!({"type": "transcript.text.delta", "delta": delta}),
                false,
            ),
            Piece::Finished(Ok(text)) => {
                (json!({"type": "transcript.text.done", "text": text}), true)
            }
            Piece::Finished(Err(e)) => (error_body(&OpenAiError::from(e)), true),
        };
        (warp::sse::Event::default().data(data.to_string()), last)
    };
    let events = futures_util::stream::unfold(
        (Some(first), pieces, false),
        move |(first, mut pieces, ended)| async move {
            if ended {
                return None;
            }
            let piece = match first {
                Some(p) => p,
                None => pieces.recv().await?,
            };
            let (e, last) = event(piece);
            Some((Ok::<_, std::convert::Infallible>(e), (None, pieces, last)))
        },
    );
    let mut response = warp::sse::reply(events).into_response();
    // Proxies that buffer (nginx) pass the events on as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Everything under `/v1/` (and `/api/v1/`): `rest` is the path after `/v1`.
pub(super) async fn dispatch<S, B>(
    app: &Arc<App>,
    incoming: Incoming,
    rest: &str,
    body: S,
) -> Response
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send,
    B: bytes::Buf,
{
    use warp::http::Method;
    if !incoming.admitted {
        app.metrics.record_failure();
        super::discard_body(app, body, incoming.content_length).await;
        return error_response(&OpenAiError {
            error: ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Incorrect or missing API key: send this service's key (PREPIS_API_KEY) as `Authorization: Bearer KEY` (the SDKs' api_key)",
            ),
            param: None,
        });
    }
    let task = match rest {
        "/audio/transcriptions" => Some(Task::Transcribe),
        "/audio/translations" => Some(Task::Translate),
        _ => None,
    };
    match (&incoming.method, rest, task) {
        (&Method::GET | &Method::HEAD, "/models", _) => models(app),
        (&Method::GET | &Method::HEAD, id, _) if id.starts_with("/models/") => {
            one_model(app, &id["/models/".len()..])
        }
        (&Method::POST, _, Some(task)) => {
            if app.lifecycle.draining() {
                return error_response(&ApiError::shutting_down().into());
            }
            let Some(_active) = app.lifecycle.begin() else {
                return error_response(&ApiError::shutting_down().into());
            };
            let limit = app.config.max_body_bytes;
            let timeout = std::time::Duration::from_secs_f64(app.config.read_timeout_seconds);
            match super::read_body(body, incoming.content_length, limit, timeout).await {
                Ok(body) => audio(app, &incoming, body, task).await,
                Err(e) => {
                    app.metrics.record_failure();
                    error_response(&e.into())
                }
            }
        }
        (_, "/models", _) | (_, _, Some(_)) => error_response(&OpenAiError {
            error: ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed here", incoming.method),
            ),
            param: None,
        }),
        _ => error_response(&OpenAiError {
            error: ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such endpoint: /v1{rest} (this service offers POST /v1/audio/transcriptions, POST /v1/audio/translations and GET /v1/models)"),
            ),
            param: None,
        }),
    }
}

/// `GET /v1/models`: the loaded model, under its own name and as `whisper-1`.
pub(super) fn models(app: &App) -> Response {
    let data: Vec<Value> = model_ids(app).iter().map(|id| model(app, id)).collect();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data}).to_string(),
        &[],
    )
}

/// `GET /v1/models/{id}`.
pub(super) fn one_model(app: &App, id: &str) -> Response {
    if model_ids(app).iter().any(|m| m == id) {
        json_response(StatusCode::OK, &model(app, id).to_string(), &[])
    } else {
        error_response(&OpenAiError {
            error: ApiError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("the model {id:?} does not exist here; GET /v1/models lists them (any model name is accepted for transcription)"),
            ),
            param: Some("model"),
        })
    }
}

fn model_ids(app: &App) -> Vec<String> {
    let mut ids = vec![OPENAI_MODEL.to_string()];
    if let Some(info) = app.inference.status().info {
        ids.push(info.name);
    }
    ids
}

fn model(app: &App, id: &str) -> Value {
    let created = app
        .inference
        .status()
        .info
        .and_then(|i| std::fs::metadata(i.path).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    json!({"id": id, "object": "model", "created": created, "owned_by": "prepis"})
}

/// An error as the OpenAI SDKs expect it. Audio that is not audio is a 400 there (OpenAI's
/// "Invalid file format"), where `/api/transcribe` says 415 or 422.
pub(super) fn error_response(e: &OpenAiError) -> Response {
    let error = &e.error;
    let status = match error.code {
        "not_audio" | "undecodable_audio" | "headerless_chunk" => StatusCode::BAD_REQUEST,
        _ => error.status,
    };
    let mut headers = Vec::new();
    if let Some(seconds) = error.retry_after {
        headers.push(("retry-after", seconds.to_string()));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.push(("www-authenticate", "Bearer".to_string()));
    }
    if error.not_retryable() {
        // The OpenAI SDKs retry a 500 unless told not to: this audio would crash again.
        headers.push(("x-should-retry", "false".to_string()));
    }
    json_response(status, &error_body(e).to_string(), &headers)
}

fn error_body(e: &OpenAiError) -> Value {
    let error = &e.error;
    let (kind, code) = match error.status.as_u16() {
        401 => ("invalid_request_error", "invalid_api_key"),
        429 => ("requests", error.code),
        500.. => ("server_error", error.code),
        _ => ("invalid_request_error", error.code),
    };
    json!({"error": {"message": error.message, "type": kind, "param": e.param, "code": code}})
}

fn full_text(segments: &[FinalSegment]) -> String {
    segments
        .iter()
        .map(FinalSegment::text)
        .collect::<Vec<_>>()
        .join(" ")
}

fn start_ms(s: &FinalSegment) -> u64 {
    s.words.first().map_or(0, |w| w.start_ms)
}

fn end_ms(s: &FinalSegment) -> u64 {
    s.words.last().map_or(0, |w| w.end_ms)
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Speakers 1, 2, … as OpenAI's diarized labels A, B, … (AA after Z).
fn speaker_letter(n: u32) -> String {
    let mut n = n.max(1);
    let mut out = Vec::new();
    while n > 0 {
        n -= 1;
        out.push(b'A' + (n % 26) as u8);
        n /= 26;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// `HH:MM:SS,mmm` (SubRip) or `HH:MM:SS.mmm` (WebVTT).
fn timestamp(ms: u64, separator: char) -> String {
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{separator}{ms:03}")
}

fn srt(segments: &[FinalSegment]) -> String {
    segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (start, end) = (timestamp(start_ms(s), ','), timestamp(end_ms(s), ','));
            format!("{}\n{start} --> {end}\n{}\n\n", i + 1, s.text())
        })
        .collect()
}

/// WebVTT with a voice span per segment when speakers are labelled (`<v Speaker 1>`).
fn vtt(segments: &[FinalSegment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in segments {
        let (start, end) = (timestamp(start_ms(s), '.'), timestamp(end_ms(s), '.'));
        let text = s.text();
        let text = match s.speaker {
            Some(label) => format!("<v Speaker {}>{text}", label.speaker),
            None => text,
        };
        out.push_str(&format!("{start} --> {end}\n{text}\n\n"));
    }
    out
}

fn plain(body: String, content_type: &'static str) -> Response {
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speaker::Label;
    use crate::stream::agreement::TimedWord;

    fn segment(words: &[(&str, u64, u64)], speaker: Option<u32>) -> FinalSegment {
        FinalSegment {
            words: words
                .iter()
                .map(|(t, s, e)| TimedWord {
                    text: t.to_string(),
                    start_ms: *s,
                    end_ms: *e,
                    probability_milli: 900,
                })
                .collect(),
            speaker: speaker.map(|speaker| Label {
                speaker,
                confidence: 0.8,
            }),
            voiceprint: None,
        }
    }

    #[test]
    fn subtitles_have_the_standard_times_cues_and_voices() {
        let segments = [
            segment(&[("Hello", 0, 400), ("there.", 450, 900)], Some(1)),
            segment(&[("Bye.", 3_723_004, 3_724_500)], Some(2)),
        ];
        assert_eq!(
            srt(&segments),
            "1\n00:00:00,000 --> 00:00:00,900\nHello there.\n\n2\n01:02:03,004 --> 01:02:04,500\nBye.\n\n"
        );
        assert_eq!(
            vtt(&segments),
            "WEBVTT\n\n00:00:00.000 --> 00:00:00.900\n<v Speaker 1>Hello there.\n\n01:02:03.004 --> 01:02:04.500\n<v Speaker 2>Bye.\n\n"
        );
    }

    #[test]
    fn speakers_become_letters_and_scores_follow_the_overlap() {
        assert_eq!(speaker_letter(1), "A");
        assert_eq!(speaker_letter(26), "Z");
        assert_eq!(speaker_letter(27), "AA");
        let score = |start_ms, end_ms, avg_logprob| SegmentScore {
            start_ms,
            end_ms,
            avg_logprob,
            no_speech_probability: 0.1,
        };
        let scores = [score(0, 1_000, -0.1), score(1_000, 5_000, -0.5)];
        assert_eq!(
            best_score(&scores, 800, 3_000).map(|s| s.avg_logprob),
            Some(-0.5)
        );
        assert_eq!(
            best_score(&scores, 100, 900).map(|s| s.avg_logprob),
            Some(-0.1)
        );
        assert!(best_score(&scores, 6_000, 7_000).is_none());
    }

    #[test]
    fn errors_are_in_openai_shape_with_sdk_statuses() {
        let garbage: OpenAiError =
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_audio", "not audio").into();
        let response = error_response(&garbage);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = error_body(&garbage);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "file");
        assert_eq!(body["error"]["code"], "not_audio");
        let busy: OpenAiError = ApiError::from(crate::inference::InferenceError::Overloaded).into();
        let response = error_response(&busy);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "1");
        let refused: OpenAiError = super::super::auth::refused().into();
        assert_eq!(error_body(&refused)["error"]["code"], "invalid_api_key");
    }
}
