//! `GET` and `DELETE /api/transcribe?session_id=…`: read a Redis session's whole
//! transcript so far (`&relabel=true`: with the speakers found again over the whole
//! session), or end the session and remove its data.

use serde_json::{json, Value};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

use super::error::ApiError;
use super::request::{parse_bool, QueryOptions};
use super::{error_response, json_response, App, Incoming};
use crate::context::sessions::valid_session_id;
use crate::context::{decode_state, ContextError, SessionStore};
use crate::speaker::relabel::{relabel as relabel_prints, RelabelPolicy};
use crate::speaker::{StreamSpeakerOptions, Voiceprint};

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
        .get("session_id")
        .filter(|id| valid_session_id(id))
        .map(str::to_string)
        .ok_or(ContextError::InvalidSessionId)?;
    let store = app
        .sessions
        .as_ref()
        .ok_or(ContextError::SessionsDisabled)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no session {id:?} (ended, expired or never started)"),
        )
    };
    if incoming.method == Method::DELETE {
        return if store.delete(&id).await.map_err(ContextError::from)? {
            tracing::info!(event = "session_deleted");
            Ok(json!({"session_id": id, "deleted": true}))
        } else {
            Err(not_found())
        };
    }
    let relabel = query
        .get("relabel")
        .map(|v| parse_bool("relabel", v))
        .transpose()?
        .unwrap_or(false);
    let (seq, segments) = store
        .segments(&id)
        .await
        .map_err(ContextError::from)?
        .ok_or_else(not_found)?;
    let mut results: Vec<Value> = segments
        .iter()
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect();
    let prints: Vec<Option<Voiceprint>> = results.iter_mut().map(take_voiceprint).collect();
    if relabel {
        let options = stream_options(store, &id).await?.ok_or_else(not_found)?;
        if options.off {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "speakers_off",
                "this session was streamed with diarize=false: it has no voiceprints to relabel",
            ));
        }
        let policy = RelabelPolicy {
            merge_above: app.config.speakers.merge_above,
            min_speakers: options.min_speakers.unwrap_or(1) as usize,
            max_speakers: options
                .max_speakers
                .map_or(app.config.speakers.max_speakers, |n| n as usize),
        };
        let labels = relabel_prints(&prints, &policy);
        if labels.iter().any(Option::is_some) {
            for (segment, label) in results.iter_mut().zip(labels) {
                segment["speaker"] = json!(label.map(|l| l.speaker));
                segment["speaker_confidence"] =
                    json!(label.map(|l| (l.confidence as f64 * 1000.0).round() / 1000.0));
            }
        }
        tracing::info!(event = "session_relabelled", segments = results.len());
    }
    let text = results
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(json!({
        "session_id": id,
        "seq": seq,
        "labels": if relabel { "final" } else { "live" },
        "results": results,
        "text": text,
    }))
}

/// Removes a stored segment's voiceprint fields, returning the voiceprint.
fn take_voiceprint(segment: &mut Value) -> Option<Voiceprint> {
    let object = segment.as_object_mut()?;
    let print = object.remove("voiceprint");
    let speech_ms = object.remove("voice_ms")?.as_u64()?;
    Voiceprint::decode(print?.as_str()?, speech_ms)
}

/// The stream's speaker options, from the stored stream state.
async fn stream_options(
    store: &SessionStore,
    id: &str,
) -> Result<Option<StreamSpeakerOptions>, ApiError> {
    let Some(stored) = store.load(id).await.map_err(ContextError::from)? else {
        return Ok(None);
    };
    decode_state(&stored.state)
        .map(|(_, state)| Some(state.speakers.options))
        .ok_or(ContextError::Corrupt.into())
}
