//! `GET` and `DELETE /api/transcribe?session_id=…`: read a Redis session's whole
//! transcript so far, or end the session and remove its data.

use serde_json::{json, Value};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

use super::error::ApiError;
use super::request::QueryOptions;
use super::transcribe::redis_unavailable;
use super::{error_response, json_response, App, Incoming};
use crate::context::sessions::valid_session_id;

/// Answers a GET (transcript) or DELETE (end) for a session.
pub async fn session_request(app: &App, incoming: &Incoming) -> Response {
    match handle(app, incoming).await {
        Ok(body) => json_response(StatusCode::OK, &body.to_string(), &[]),
        Err(e) => error_response(&e, false),
    }
}

async fn handle(app: &App, incoming: &Incoming) -> Result<Value, ApiError> {
    let query = QueryOptions::parse(&incoming.query)?;
    let id = query
        .session_id
        .filter(|id| valid_session_id(id))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_session_id",
                "name the session: ?session_id=… (1-128 letters, digits or -_.:)",
            )
        })?;
    let store = app.sessions.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "sessions_disabled",
            "this service has no Redis sessions (REDIS_URL is not set)",
        )
    })?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no session {id:?} (ended, expired or never started)"),
        )
    };
    if incoming.method == Method::DELETE {
        return if store.delete(&id).await.map_err(redis_unavailable)? {
            tracing::info!(event = "session_deleted");
            Ok(json!({"session_id": id, "deleted": true}))
        } else {
            Err(not_found())
        };
    }
    let (seq, segments) = store
        .segments(&id)
        .await
        .map_err(redis_unavailable)?
        .ok_or_else(not_found)?;
    let results: Vec<Value> = segments
        .iter()
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect();
    let text = results
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(json!({"session_id": id, "seq": seq, "results": results, "text": text}))
}
