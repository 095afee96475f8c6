//! HTTP: the Functions host's two request modes, routing, and rendering. Knows nothing
//! about Whisper: it parses requests, hands each chunk to `service`, renders the answer.
//!
//! | path | mode |
//! |---|---|
//! | `GET /` | host readiness probe, answered at once even while the model loads; a browser (`Accept: text/html`) gets the live-captions page |
//! | `GET /app.js`, … | the page's modules and style (`web/`) |
//! | `GET /api/status`, `GET /status` | status JSON |
//! | `POST /status` | payload mode: status JSON in the reply envelope |
//! | `GET /api/openapi.json`, `POST /openapi` | the OpenAPI 3.1 document (`openapi.json` here) |
//! | `POST /api/transcribe` | forwarded HTTP (or container): the request itself |
//! | `POST /transcribe` | payload mode envelope (or, if the body is no envelope, as above) |
//! | `POST /v1/audio/transcriptions`, `/v1/audio/translations`, `GET /v1/models` (and under `/api`) | the OpenAI audio API (`openai`) |

mod auth;
mod cors;
mod error;
mod openai;
mod payload;
mod request;
mod sessions;
mod status;
mod transcribe;
mod web;

use std::sync::Arc;

/// The API's OpenAPI 3.1 description, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{FutureExt, Stream, StreamExt};
use warp::filters::path::FullPath;
use warp::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

pub use error::ApiError;
pub use payload::parse as parse_envelope;
pub use request::{parse_transcribe, QueryOptions, AUDIO_FIELD};

use crate::metrics::Metrics;
use crate::service::App;

/// The metadata of one incoming request that handlers use.
#[derive(Clone)]
struct Incoming {
    method: Method,
    path: String,
    query: String,
    content_type: Option<String>,
    content_length: Option<usize>,
    /// `X-Azure-Functions-InvocationId`, carried into every log line of the request.
    invocation_id: Option<String>,
    /// `X-Prepis-Context`: the context token for raw-body requests.
    context: Option<String>,
    /// `Accept`: a browser asking for `/` gets the page, a probe the JSON.
    accept: Option<String>,
    /// Whether the request may use the API (it presents `PREPIS_API_KEY`, or none is set).
    admitted: bool,
}

/// The whole route tree: one filter that extracts, one function that dispatches.
pub fn routes(app: Arc<App>) -> warp::filters::BoxedFilter<(Response,)> {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method: Method, path: FullPath, query: String, headers: HeaderMap, body| {
                let app = Arc::clone(&app);
                async move {
                    let origin = cors::allowed_origin(&app.config.cors_origins, &headers);
                    if method == Method::OPTIONS {
                        return cors::preflight(origin);
                    }
                    let text = |name: header::HeaderName| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let incoming = Incoming {
                        method,
                        path: path.as_str().to_string(),
                        query,
                        content_type: text(header::CONTENT_TYPE),
                        content_length: text(header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
                        invocation_id: headers
                            .get("x-azure-functions-invocationid")
                            .and_then(|v| v.to_str().ok())
                            .map(|v| {
                                v.chars()
                                    .filter(|c| c.is_ascii_graphic())
                                    .take(64)
                                    .collect()
                            }),
                        // Not ASCII: passed on as it is, and refused as a malformed token.
                        context: headers
                            .get("x-prepis-context")
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                        accept: text(header::ACCEPT),
                        admitted: app
                            .config
                            .api_key
                            .as_ref()
                            .is_none_or(|k| k.admits(&headers)),
                    };
                    let payload_mode = incoming.path.trim_end_matches('/') == "/transcribe";
                    let answer = dispatch(&app, incoming, body);
                    let mut response = or_internal_error(answer, &app.metrics, payload_mode).await;
                    cors::allow(&mut response, origin);
                    response
                }
            },
        )
        .boxed()
}

/// The answer, or for a panic while making it (a bug, not the client's fault) a JSON 500,
/// never a dropped connection.
async fn or_internal_error(
    answer: impl std::future::Future<Output = Response>,
    metrics: &Metrics,
    payload_mode: bool,
) -> Response {
    match std::panic::AssertUnwindSafe(answer).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            metrics.record_failure();
            tracing::error!(event = "handler_panic", message = %panic_message(&*panic));
            error_response(&ApiError::internal(), payload_mode)
        }
    }
}

/// What a panic said, for the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

async fn dispatch<S, B>(app: &Arc<App>, incoming: Incoming, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let path = incoming.path.trim_end_matches('/').to_string();
    let path = path.as_str();
    // The OpenAI API: `/v1/…` directly, `/api/v1/…` through the Functions host.
    let v1 = path
        .strip_prefix("/api")
        .unwrap_or(path)
        .strip_prefix("/v1");
    if let Some(rest) = v1.filter(|r| r.is_empty() || r.starts_with('/')) {
        return openai::dispatch(app, incoming.clone(), rest, body).await;
    }
    match (&incoming.method, path) {
        (&Method::GET | &Method::HEAD, "") if !web::wants_page(incoming.accept.as_deref()) => {
            json_response(StatusCode::OK, &status::probe(app), &[])
        }
        (&Method::GET | &Method::HEAD, page) if web::file(page).is_some() => {
            web::file(page).unwrap_or_default()
        }
        (&Method::GET | &Method::HEAD, "/api/status" | "/status") => {
            let report = status::report(app);
            // `?probe=ready`: an orchestrator's readiness probe, which reads the status code.
            let probe = serde_urlencoded::from_str::<Vec<(String, String)>>(&incoming.query)
                .is_ok_and(|q| q.iter().any(|(k, v)| k == "probe" && v == "ready"));
            if probe && report["ready"] != true {
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &report.to_string(),
                    &[("retry-after", "1".to_string())],
                )
            } else {
                json_response(StatusCode::OK, &report.to_string(), &[])
            }
        }
        (&Method::POST, "/status") => {
            let body = status::report(app).to_string();
            envelope_response(StatusCode::OK, &body, &[], &[])
        }
        (&Method::GET | &Method::HEAD, "/api/openapi.json" | "/openapi.json") => {
            json_response(StatusCode::OK, OPENAPI, &[])
        }
        (&Method::POST, "/openapi") => envelope_response(StatusCode::OK, OPENAPI, &[], &[]),
        (&Method::POST | &Method::GET | &Method::DELETE, "/api/transcribe" | "/transcribe")
            if !incoming.admitted =>
        {
            app.metrics.record_failure();
            discard_body(app, body, incoming.content_length).await;
            let mut response = error_response(&auth::refused(), false);
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        (&Method::POST | &Method::GET | &Method::DELETE, "/api/transcribe" | "/transcribe")
            if app.lifecycle.draining() =>
        {
            let mut response = error_response(&ApiError::shutting_down(), path == "/transcribe");
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        (&Method::POST, "/api/transcribe" | "/transcribe") => {
            let Some(_active) = app.lifecycle.begin() else {
                return error_response(&ApiError::shutting_down(), path == "/transcribe");
            };
            let limit = envelope_limit(app.config.max_body_bytes);
            let timeout = std::time::Duration::from_secs_f64(app.config.read_timeout_seconds);
            let body = match read_body(body, incoming.content_length, limit, timeout).await {
                Ok(b) => b,
                Err(e) => {
                    app.metrics.record_failure();
                    return error_response(&e, path == "/transcribe");
                }
            };
            if path == "/transcribe" && payload::is_envelope(&body) {
                transcribe::payload_mode(app, &incoming, &body).await
            } else {
                transcribe::forwarded(app, &incoming, body).await
            }
        }
        (&Method::GET | &Method::DELETE, "/api/transcribe" | "/transcribe") => {
            let Some(_active) = app.lifecycle.begin() else {
                return error_response(&ApiError::shutting_down(), false);
            };
            sessions::session_request(app, &incoming).await
        }
        (_, "/api/transcribe" | "/transcribe" | "/api/status" | "/status") => {
            let e = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed here", incoming.method),
            );
            error_response(&e, false)
        }
        _ => {
            let e = ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint: use POST /api/transcribe, GET /api/status, or the OpenAI API under /v1",
            );
            error_response(&e, false)
        }
    }
}

/// Payload-mode envelopes carry base64, a third larger than the audio.
fn envelope_limit(max_body_bytes: usize) -> usize {
    max_body_bytes
        .saturating_add(max_body_bytes / 3)
        .saturating_add(64 * 1024)
}

/// Reads the whole body, refusing it as soon as it passes `limit` bytes, or when it has not
/// arrived within `timeout` (408).
async fn read_body<S, B>(
    body: S,
    declared: Option<usize>,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    // A refused body is read and dropped for a moment, so that the client, still sending,
    // gets to read the 413 instead of a broken pipe.
    let drain_for = timeout.min(std::time::Duration::from_secs(5));
    if declared.is_some_and(|n| n > limit) {
        let _ = tokio::time::timeout(drain_for, drain(body, limit)).await;
        return Err(ApiError::body_too_large(limit));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    loop {
        let next = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(next) => next,
            Err(_) => return Err(ApiError::body_timeout(timeout)),
        };
        let Some(chunk) = next else { break };
        let mut chunk = chunk.map_err(|_| {
            ApiError::bad_request(
                "body_read_failed",
                "the request body ended before it was complete",
            )
        })?;
        if buffer.len() + chunk.remaining() > limit {
            let _ = tokio::time::timeout(drain_for, drain(body, limit)).await;
            return Err(ApiError::body_too_large(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buffer.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buffer.freeze())
}

/// Reads and drops the body of a request refused before it was read, so that a client still
/// sending it reads the refusal instead of a broken connection.
async fn discard_body<S, B>(app: &App, body: S, declared: Option<usize>)
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let timeout = std::time::Duration::from_secs_f64(app.config.read_timeout_seconds);
    let _ = read_body(
        body,
        declared,
        envelope_limit(app.config.max_body_bytes),
        timeout,
    )
    .await;
}

/// Reads and drops the rest of a refused body (up to 4 × `limit`).
async fn drain<S, B>(mut body: std::pin::Pin<&mut S>, limit: usize)
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let mut dropped = 0usize;
    while let Some(Ok(chunk)) = body.next().await {
        dropped += chunk.remaining();
        if dropped > limit.saturating_mul(4) {
            break;
        }
    }
}

/// An error as a forwarded response, or inside a reply envelope in payload mode.
fn error_response(e: &ApiError, payload_mode: bool) -> Response {
    let headers: Vec<(&str, String)> = e
        .retry_after
        .map(|s| ("Retry-After", s.to_string()))
        .into_iter()
        .chain(
            e.not_retryable()
                .then(|| ("x-should-retry", "false".to_string())),
        )
        .collect();
    if payload_mode {
        envelope_response(e.status, &e.to_json(), &headers, &[])
    } else {
        json_response(e.status, &e.to_json(), &headers)
    }
}

fn json_response(status: StatusCode, body: &str, headers: &[(&str, String)]) -> Response {
    let mut response = Response::new(body.to_string().into());
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::try_from(*name),
            HeaderValue::from_str(value),
        ) {
            h.insert(name, value);
        }
    }
    response
}

/// Payload mode always answers 200 to the host; the real status is inside.
fn envelope_response(
    status: StatusCode,
    body: &str,
    headers: &[(&str, String)],
    logs: &[String],
) -> Response {
    json_response(
        StatusCode::OK,
        &payload::reply(status, body, headers, logs),
        &[],
    )
}

/// Seconds and milliseconds in responses are rounded to 1/1000.
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_while_answering_is_a_json_500() {
        let metrics = Metrics::default();
        let answer = async { panic!("a bug") };
        let response = or_internal_error(answer, &metrics, false).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
