//! The one place where failures become HTTP: a safe `{code, message}` for the client,
//! the status from a small table, and `Retry-After` where waiting helps.

use serde::Serialize;
use warp::http::StatusCode;

use crate::asr::AsrError;
use crate::audio::AudioError;
use crate::context::{ContextError, TokenError};
use crate::inference::InferenceError;
use crate::service::ChunkError;
use crate::stream::TailError;

/// An error as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code (`empty_body`, `undecodable_audio`, …).
    pub code: &'static str,
    /// What happened and what to do, in plain words.
    pub message: String,
    /// Seconds the client should wait before retrying, when retrying helps.
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A request body over the configured limit.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the {limit} bytes allowed (PREPIS_MAX_BODY_BYTES); send shorter chunks"),
        )
    }

    /// A bug in the handler (a panic while answering); nothing about the request says why.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the service failed while answering this request (a bug, logged as handler_panic); retrying may help",
        )
    }

    /// The instance is draining after SIGTERM; another instance (or this one's successor)
    /// takes the request.
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this instance is shutting down; retry the same request (it may reach another instance)",
        )
        .retry_after(1)
    }

    /// The request body did not arrive in time.
    pub fn body_timeout(timeout: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s (PREPIS_READ_TIMEOUT_SECONDS)",
                timeout.as_secs_f64()
            ),
        )
    }

    /// A 5xx that must not be retried with the same request (`x-should-retry: false`, the
    /// header the OpenAI SDKs honour).
    pub fn not_retryable(&self) -> bool {
        self.code == ENGINE_CRASHED
    }

    /// The JSON body `{"error": {"code", "message"}}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
            },
        })
        .unwrap_or_else(|_| r#"{"error":{"code":"internal","message":"error"}}"#.to_string())
    }
}

impl From<AudioError> for ApiError {
    fn from(e: AudioError) -> Self {
        let message = e.to_string();
        match e {
            AudioError::Empty => Self::bad_request("empty_body", message),
            AudioError::Headerless(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "headerless_chunk",
                message,
            ),
            AudioError::NotAudio(_) => {
                Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_audio", message)
            }
            AudioError::Undecodable(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "undecodable_audio",
                message,
            ),
            AudioError::TooLong { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "audio_too_long", message)
            }
        }
    }
}

impl From<InferenceError> for ApiError {
    fn from(e: InferenceError) -> Self {
        let message = e.to_string();
        match e {
            InferenceError::NotReady => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "model_loading", message).retry_after(2)
            }
            InferenceError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "model_unavailable",
                message,
            )
            .retry_after(60),
            InferenceError::Overloaded => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message).retry_after(1)
            }
            InferenceError::WorkerFailed => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "inference_failed",
                message,
            ),
            InferenceError::Restarting => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "engine_restarting",
                message,
            )
            .retry_after(2),
        }
    }
}

impl From<ChunkError> for ApiError {
    fn from(e: ChunkError) -> Self {
        let message = e.to_string();
        match e {
            ChunkError::SeqZero => Self::bad_request("invalid_parameter", message),
            ChunkError::UnknownLanguage(_) => Self::bad_request("unknown_language", message),
            ChunkError::LanguageNotSupported(_) => {
                Self::bad_request("language_not_supported", message)
            }
            ChunkError::TooSlow { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "response_too_slow",
                message,
            ),
            ChunkError::KeepAudioFormat { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "keep_audio_format",
                message,
            ),
            ChunkError::Tail(TailError::Missing(_)) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "tail_missing", message)
            }
            ChunkError::Tail(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "tail_mismatch", message)
            }
            ChunkError::Context(e) => e.into(),
            ChunkError::Audio(e) => e.into(),
            ChunkError::Engine(e) => e.into(),
            ChunkError::Inference(e) => e.into(),
        }
    }
}

impl From<ContextError> for ApiError {
    fn from(e: ContextError) -> Self {
        let message = e.to_string();
        match e {
            ContextError::InvalidSessionId => Self::bad_request("invalid_session_id", message),
            ContextError::SessionsDisabled => Self::bad_request("sessions_disabled", message),
            ContextError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "sessions_unavailable",
                message,
            )
            .retry_after(2),
            ContextError::Corrupt => Self::new(StatusCode::CONFLICT, "session_corrupt", message),
            ContextError::SequenceConflict { .. } => {
                Self::new(StatusCode::CONFLICT, "sequence_conflict", message)
            }
            ContextError::Token(e) => e.into(),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        let message = e.to_string();
        match e {
            TokenError::Malformed => Self::bad_request("context_malformed", message),
            TokenError::Version(_) => Self::bad_request("context_version", message),
            TokenError::Forged => Self::bad_request("context_invalid", message),
            TokenError::Expired => Self::new(StatusCode::GONE, "context_expired", message),
            TokenError::TooLarge(_) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "context_too_large", message)
            }
        }
    }
}

impl From<AsrError> for ApiError {
    fn from(e: AsrError) -> Self {
        match e {
            // Not retryable with the same audio: it would kill the next worker too. The
            // client skips the chunk and goes on with the context it had (docs/streaming.md).
            AsrError::Crashed(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ENGINE_CRASHED,
                "the speech engine crashed on this audio (its worker was restarted): do not send this chunk again; go on with the next chunk and the context you had before this one",
            ),
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "inference_failed",
                "speech recognition failed on this audio; the error is logged",
            ),
        }
    }
}

/// The code of a request whose audio crashed the engine: never retried as it was.
pub const ENGINE_CRASHED: &str = "engine_crashed";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_table() {
        let cases: Vec<(ApiError, u16, Option<u32>)> = vec![
            (AudioError::Empty.into(), 400, None),
            (AudioError::Headerless("a WebM cluster").into(), 422, None),
            (AudioError::NotAudio("x".into()).into(), 415, None),
            (AudioError::Undecodable("x".into()).into(), 422, None),
            (AudioError::TooLong { limit: 1.0 }.into(), 413, None),
            (InferenceError::NotReady.into(), 503, Some(2)),
            (InferenceError::Overloaded.into(), 429, Some(1)),
            (InferenceError::Restarting.into(), 503, Some(2)),
            (AsrError::Crashed("SIGABRT".into()).into(), 500, None),
            (ApiError::body_too_large(10), 413, None),
            (TokenError::Forged.into(), 400, None),
            (TokenError::Expired.into(), 410, None),
        ];
        for (error, status, retry) in cases {
            assert_eq!(error.status.as_u16(), status, "{error:?}");
            assert_eq!(error.retry_after, retry, "{error:?}");
        }
    }

    #[test]
    fn json_shape_is_code_and_message() {
        let v: serde_json::Value =
            serde_json::from_str(&ApiError::bad_request("x", "say \"hi\"").to_json()).unwrap();
        assert_eq!(v["error"]["code"], "x");
        assert_eq!(v["error"]["message"], "say \"hi\"");
    }
}
