//! The Functions host's payload mode: the request arrives as a JSON envelope at
//! `POST /<function>`; the reply must be 2xx JSON with the HTTP response inside
//! `Outputs.res` (any other status fails the invocation and drops `Logs`).
//!
//! The host base64-encodes `Body` only for `application/octet-stream` and `multipart/*`;
//! any other type arrives as text, so binary audio sent as e.g. `audio/wav` is already
//! corrupted here and must be refused, not transcribed.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::StatusCode;

use super::error::ApiError;
use super::request::QueryOptions;
use crate::audio::MediaType;

/// The request inside a payload-mode envelope.
#[derive(Debug, Clone)]
pub struct EnvelopeRequest {
    /// The original content type, if any.
    pub content_type: Option<String>,
    /// Query options from `Query` (an object or a JSON string).
    pub query: QueryOptions,
    /// The body bytes, base64-decoded where the host encoded them.
    pub body: Bytes,
    /// The `X-Prepis-Context` header, if any.
    pub context: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Data")]
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    /// The HTTP trigger binding is named `req` in function.json; accept any single binding.
    #[serde(flatten)]
    bindings: BTreeMap<String, Value>,
}

/// Whether a body looks like a payload-mode envelope (a JSON object with `Data`).
pub fn is_envelope(body: &[u8]) -> bool {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    start.is_some_and(|i| body[i] == b'{') && serde_json::from_slice::<Envelope>(body).is_ok()
}

/// Unpacks the HTTP request carried by an envelope.
pub fn parse(body: &[u8]) -> Result<EnvelopeRequest, ApiError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_envelope",
            format!("not a Functions invocation envelope: {e}"),
        )
    })?;
    let req = envelope
        .data
        .bindings
        .get("req")
        .or_else(|| {
            envelope
                .data
                .bindings
                .values()
                .find(|v| v.get("Method").is_some())
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_envelope",
                "the envelope has no HTTP request in Data",
            )
        })?;

    let content_type = header(req, "content-type");
    let query = match req.get("Query") {
        Some(Value::Object(map)) => pairs(map),
        Some(Value::String(text)) if !text.trim().is_empty() => {
            let value: Value = serde_json::from_str(text).map_err(|_| {
                ApiError::bad_request(
                    "invalid_envelope",
                    "Query is a string but not a JSON object",
                )
            })?;
            value.as_object().map(pairs).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let query = QueryOptions::from_pairs(query);

    let text = match req.get("Body") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let essence = content_type
        .as_deref()
        .map(|t| MediaType::parse(t).essence)
        .unwrap_or_default();
    let body = if essence == "application/octet-stream" || essence.starts_with("multipart/") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_envelope",
                    "Body should be base64 for this content type but is not",
                )
            })?;
        Bytes::from(decoded)
    } else if essence == "application/json" || text.is_empty() {
        Bytes::from(text)
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "binary_body_as_text",
            format!(
                "in payload mode the Functions host passes a {essence} body as text, which corrupts binary audio; \
                 send application/octet-stream or multipart/form-data, or enable enableForwardingHttpRequest in host.json"
            ),
        ));
    };
    let context = header(req, "x-prepis-context");
    Ok(EnvelopeRequest {
        content_type,
        query,
        body,
        context,
    })
}

/// The reply envelope for an HTTP response with `status`, JSON `body` and extra headers.
pub fn reply(
    status: StatusCode,
    body: &str,
    headers: &[(&str, String)],
    logs: &[String],
) -> String {
    let mut header_map = serde_json::Map::new();
    header_map.insert("Content-Type".into(), json!("application/json"));
    for (name, value) in headers {
        header_map.insert((*name).into(), json!(value));
    }
    json!({
        "Outputs": {"res": {"statusCode": status.as_u16(), "headers": header_map, "body": body}},
        "Logs": logs,
        "ReturnValue": null,
    })
    .to_string()
}

fn header(req: &Value, name: &str) -> Option<String> {
    let headers = req.get("Headers")?.as_object()?;
    let (_, value) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))?;
    match value {
        Value::Array(values) => values.first().and_then(Value::as_str).map(str::to_string),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn pairs(map: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(content_type: &str, body: &str, query: Value) -> Vec<u8> {
        json!({"Data": {"req": {"Url": "http://localhost:7071/api/transcribe", "Method": "POST",
            "Query": query, "Headers": {"Content-Type": [content_type]}, "Params": {}, "Body": body}},
            "Metadata": {}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn octet_stream_bodies_are_base64_decoded() {
        let raw = envelope(
            "application/octet-stream",
            "UklGRg==",
            json!({"language": "en"}),
        );
        assert!(is_envelope(&raw));
        let r = parse(&raw).unwrap();
        assert_eq!(&r.body[..], b"RIFF");
        assert_eq!(r.query.get("language"), Some("en"));
    }

    #[test]
    fn query_may_be_a_json_string() {
        let r = parse(&envelope(
            "application/json",
            "{}",
            json!("{\"language\":\"de\"}"),
        ))
        .unwrap();
        assert_eq!(r.query.get("language"), Some("de"));
        assert_eq!(&r.body[..], b"{}");
    }

    #[test]
    fn binary_types_sent_as_text_are_refused() {
        let e = parse(&envelope(
            "audio/wav",
            "RIFF\u{fffd}\u{fffd}WAVE",
            json!({}),
        ))
        .unwrap_err();
        assert_eq!(e.code, "binary_body_as_text");
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn non_envelopes_are_told_apart() {
        assert!(!is_envelope(b"RIFF...."));
        assert!(!is_envelope(br#"{"audio":"UklGRg=="}"#));
        assert!(parse(b"{}").is_err());
    }

    #[test]
    fn reply_wraps_status_headers_and_body() {
        let v: Value = serde_json::from_str(&reply(
            StatusCode::TOO_MANY_REQUESTS,
            "{\"a\":1}",
            &[("Retry-After", "1".into())],
            &["log".into()],
        ))
        .unwrap();
        assert_eq!(v["Outputs"]["res"]["statusCode"], 429);
        assert_eq!(v["Outputs"]["res"]["headers"]["Retry-After"], "1");
        assert_eq!(v["Outputs"]["res"]["body"], "{\"a\":1}");
        assert_eq!(v["Logs"][0], "log");
    }
}
