//! `GET` and `DELETE /api/transcribe?session_id=…`: read a Redis session's whole
//! transcript so far (`&relabel=true`: with the speakers found again over the whole
//! session), or end the session and remove its data. `POST /api/transcribe?relabel=true`
//! with a transcript's segments as the replies gave them (voiceprints included): the same
//! relabel for a token-mode stream, whose client holds the transcript.

use serde_json::{json, Value};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

use super::error::ApiError;
use super::request::{parse_bool, QueryOptions};
use super::{error_response, json_response, App, Incoming};
use crate::context::sessions::valid_session_id;
use crate::context::{decode_state, token, ContextError, SessionStore};
use crate::speaker::relabel::{relabel as relabel_prints, RelabelPolicy};
use crate::speaker::{Speakers, Voiceprint};

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
    let relabel = relabel_asked(&query)?;
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
        let speakers = stream_speakers(store, &id).await?.ok_or_else(not_found)?;
        let options = speakers.options;
        if options.off {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "speakers_off",
                "this session was streamed with diarize=false: it has no voiceprints to relabel",
            ));
        }
        apply_relabel(app, &mut results, &prints, &speakers);
    }
    Ok(json!({
        "session_id": id,
        "seq": seq,
        "labels": if relabel { "final" } else { "live" },
        "text": joined_text(&results),
        "results": results,
    }))
}

fn joined_text(results: &[Value]) -> String {
    results
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Labels the segments again from their voiceprints, all at once: by the stream's own
/// speakers when they are known, else by clustering.
fn apply_relabel(
    app: &App,
    results: &mut [Value],
    prints: &[Option<Voiceprint>],
    speakers: &Speakers,
) {
    let options = speakers.options;
    let policy = RelabelPolicy {
        merge_above: app.config.speakers.merge_above,
        min_speakers: options.min_speakers.unwrap_or(1) as usize,
        max_speakers: options
            .max_speakers
            .map_or(app.config.speakers.max_speakers, |n| n as usize),
    };
    let ms = |segment: &Value, key: &str| (segment[key].as_f64().unwrap_or(0.0) * 1000.0) as u64;
    let spans: Vec<(u64, u64)> = results
        .iter()
        .map(|segment| (ms(segment, "start"), ms(segment, "end")))
        .collect();
    let labels = relabel_prints(prints, &spans, &speakers.voiceprints(), &policy);
    if labels.iter().any(Option::is_some) {
        for (segment, label) in results.iter_mut().zip(labels) {
            segment["speaker"] = json!(label.map(|l| l.speaker));
            segment["speaker_confidence"] =
                json!(label.map(|l| (l.confidence as f64 * 1000.0).round() / 1000.0));
        }
    }
    tracing::info!(event = "session_relabelled", segments = results.len());
}

/// Whether a POST asks for a relabel (`relabel=true`) instead of transcribing a chunk.
pub fn relabel_asked(query: &QueryOptions) -> Result<bool, ApiError> {
    Ok(query
        .get("relabel")
        .map(|v| parse_bool("relabel", v))
        .transpose()?
        .unwrap_or(false))
}

/// `POST /api/transcribe?relabel=true`, body `{"results": [segments], "context": token}`
/// (JSON): the segments with their speakers found again over the whole transcript,
/// voiceprints removed. `context` (the stream's last token, optional) brings the stream's own
/// speakers; `min_speakers` / `max_speakers` bound the count (query or body).
pub fn relabel_transcript(
    app: &App,
    content_type: Option<&str>,
    query: &QueryOptions,
    body: &[u8],
) -> Result<String, ApiError> {
    let essence = content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    if essence.as_deref() != Some("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_json",
            "relabel=true takes the transcript as application/json: {\"results\": [segments as the replies gave them]}",
        ));
    }
    let invalid = |why: String| ApiError::bad_request("invalid_json", why);
    let mut request: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
    let count = |name: &str| -> Result<Option<u32>, ApiError> {
        match query.get(name) {
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("{name} must be a whole number"),
                )
            }),
            None => Ok(request[name]
                .as_u64()
                .map(|n| n.min(u32::MAX as u64) as u32)),
        }
    };
    // The stream's last token, if sent, brings its speakers.
    let mut speakers = match request.get("context").and_then(Value::as_str) {
        Some(token) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            token::open(
                &app.config.context_keys,
                token,
                now,
                app.config.max_context_bytes,
            )
            .map_err(ContextError::from)?
            .state
            .speakers
        }
        None => Speakers::default(),
    };
    if let Some(n) = count("min_speakers")? {
        speakers.options.min_speakers = Some(n);
    }
    if let Some(n) = count("max_speakers")? {
        speakers.options.max_speakers = Some(n);
    }
    let Some(Value::Array(results)) = request.get_mut("results").map(Value::take) else {
        return Err(invalid("the body must be {\"results\": [segments]}".into()));
    };
    let mut results = results;
    let prints: Vec<Option<Voiceprint>> = results.iter_mut().map(take_voiceprint).collect();
    if prints.iter().all(Option::is_none) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_voiceprints",
            "no segment carries a voiceprint (\"voiceprint\" and \"voice_ms\", as the replies gave them): nothing to relabel",
        ));
    }
    apply_relabel(app, &mut results, &prints, &speakers);
    Ok(json!({
        "labels": "final",
        "text": joined_text(&results),
        "results": results,
    })
    .to_string())
}

/// Removes a stored segment's voiceprint fields, returning the voiceprint.
fn take_voiceprint(segment: &mut Value) -> Option<Voiceprint> {
    let object = segment.as_object_mut()?;
    let print = object.remove("voiceprint");
    let speech_ms = object.remove("voice_ms")?.as_u64()?;
    Voiceprint::decode(print?.as_str()?, speech_ms)
}

/// The stream's speakers and speaker options, from the stored stream state.
async fn stream_speakers(store: &SessionStore, id: &str) -> Result<Option<Speakers>, ApiError> {
    let Some(stored) = store.load(id).await.map_err(ContextError::from)? else {
        return Ok(None);
    };
    decode_state(&stored.state)
        .map(|(_, state)| Some(state.speakers))
        .ok_or(ContextError::Corrupt.into())
}
