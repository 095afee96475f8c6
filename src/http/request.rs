//! The three shapes of a transcription request, reduced to one `ChunkRequest`:
//! `multipart/form-data` (field `audio_file`), a raw audio body, and
//! `application/json` `{"audio": "<base64>", …}`. Options may also come as query parameters;
//! a body field wins over the query. Every option is read in one place, `set_option`,
//! whichever of the shapes carried it.

use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream;
use serde_json::Value;

use super::error::ApiError;
use crate::audio::MediaType;
use crate::service::ChunkRequest;

/// The multipart field that carries the audio (what the original browser client sends).
pub const AUDIO_FIELD: &str = "audio_file";

/// The longest `prompt` (characters); Whisper reads at most 224 tokens of it.
pub const MAX_PROMPT_CHARS: usize = 1000;

/// The query string's parameters, as sent (checked when a request takes them as options).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct QueryOptions(Vec<(String, String)>);

impl QueryOptions {
    /// Reads a raw query string (the Functions host adds `code=` for keys; parameters that
    /// are no option are ignored).
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                "the query string is not valid URL encoding",
            )
        })?;
        Ok(Self::from_pairs(pairs))
    }

    /// The parameters from name/value pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        QueryOptions(pairs.into_iter().collect())
    }

    /// The value of parameter `name` (the last one, when it is repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An option's value as the request carried it: text (a query parameter, a multipart
/// field) or a JSON member, which must have the option's own JSON type.
enum Given {
    /// A query parameter or a multipart text field.
    Text(String),
    /// A member of a JSON body.
    Json(Value),
}

impl Given {
    fn text(self, name: &str) -> Result<String, ApiError> {
        match self {
            Given::Text(text) | Given::Json(Value::String(text)) => Ok(text),
            Given::Json(_) => Err(wrong_json_type(name, "a string")),
        }
    }

    fn boolean(self, name: &str) -> Result<bool, ApiError> {
        match self {
            Given::Text(text) => parse_bool(name, &text),
            Given::Json(Value::Bool(b)) => Ok(b),
            Given::Json(_) => Err(wrong_json_type(name, "true or false")),
        }
    }

    fn number<T>(
        self,
        name: &str,
        parse: fn(&str, &str) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        match self {
            Given::Text(text) => parse(name, &text),
            Given::Json(Value::Number(n)) => parse(name, &n.to_string()),
            Given::Json(_) => Err(wrong_json_type(name, "a number")),
        }
    }
}

fn wrong_json_type(name: &str, want: &str) -> ApiError {
    ApiError::bad_request("invalid_json", format!("field {name} must be {want}"))
}

/// Sets option `name` of `request`, however the request carried it; `false` when `name` is
/// no option. The one list of the options of `/api/transcribe`.
fn set_option(request: &mut ChunkRequest, name: &str, value: Given) -> Result<bool, ApiError> {
    match name {
        "language" => request.language = Some(value.text(name)?),
        "format" => request.audio_type = Some(value.text(name)?),
        "context" => request.context = Some(value.text(name)?),
        "final" => request.last = Some(value.boolean(name)?),
        "session_id" => request.session_id = Some(value.text(name)?),
        "seq" => request.seq = Some(value.number(name, parse_seq)?),
        "diarize" => request.diarize = Some(value.boolean(name)?),
        "max_speakers" => request.max_speakers = Some(value.number(name, parse_speakers)?),
        "min_speakers" => request.min_speakers = Some(value.number(name, parse_speakers)?),
        "keep_audio" => request.keep_audio = Some(value.boolean(name)?),
        "prompt" => request.prompt = Some(value.text(name)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Whether `name` is an option (asked of `set_option` itself, so that the list stays one).
fn is_option(name: &str) -> bool {
    set_option(&mut ChunkRequest::default(), name, Given::Json(Value::Null)) != Ok(false)
}

/// Parses a request body according to its content type, over the query's options.
pub async fn parse_transcribe(
    content_type: Option<&str>,
    query: &QueryOptions,
    body: Bytes,
) -> Result<ChunkRequest, ApiError> {
    let essence = content_type
        .map(|t| MediaType::parse(t).essence)
        .unwrap_or_default();
    let mut request = ChunkRequest::default();
    for (name, value) in &query.0 {
        set_option(&mut request, name, Given::Text(value.clone()))?;
    }
    match essence.as_str() {
        "multipart/form-data" => {
            parse_multipart(&mut request, content_type.unwrap_or_default(), body).await?
        }
        "application/json" => parse_json(&mut request, &body)?,
        _ => {
            request.audio = body;
            request.audio_type = content_type.map(str::to_string);
        }
    }
    // `format` names what the bytes are: the query's wins over a raw body's or a multipart
    // part's declared type, not over the JSON body's own field.
    if let Some(format) = query.get("format") {
        if essence != "application/json" || request.audio_type.is_none() {
            request.audio_type = Some(format.to_string());
        }
    }
    request.prompt = checked_prompt(request.prompt.take())?;
    // An empty last chunk may end a stream (it commits the pending words; without a stream
    // to end, decoding refuses it); anything else needs audio.
    if request.audio.is_empty() && request.last != Some(true) {
        return Err(ApiError::bad_request(
            "empty_body",
            "the request carries no audio: send the audio bytes as the body, as multipart field audio_file, or as base64 in JSON field audio (only a stream's final=true chunk may be empty)",
        ));
    }
    Ok(request)
}

/// The members of a JSON object, in order; a member given twice is refused.
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members: Vec<(String, Value)> = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    if members.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate field `{name}`"
                        )));
                    }
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// `{"audio": "<base64>", "tail"?: "<base64>", <option>: <its JSON type>, …}`.
fn parse_json(request: &mut ChunkRequest, body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the JSON request body is empty",
        ));
    }
    let invalid = |why: String| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not a valid request ({why}); expected {{\"audio\": \"<base64>\", \"language\"?: \"en\", \"format\"?: \"audio/wav\"}}"),
        )
    };
    let Members(members) = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    let base64 = |name: &str, value: Value| {
        let Value::String(text) = value else {
            return Err(wrong_json_type(name, "base64 text"));
        };
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(Bytes::from)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_base64",
                    format!("field {name} is not valid base64: {e}"),
                )
            })
    };
    let mut audio = None;
    for (name, value) in members {
        match name.as_str() {
            _ if value.is_null() => {}
            "audio" => audio = Some(base64("audio", value)?),
            "tail" => request.tail = Some(base64("tail", value)?),
            _ => {
                if !set_option(request, &name, Given::Json(value))? {
                    return Err(invalid(format!("unknown field `{name}`")));
                }
            }
        }
    }
    request.audio = audio.ok_or_else(|| invalid("missing field `audio`".into()))?;
    Ok(())
}

async fn parse_multipart(
    request: &mut ChunkRequest,
    content_type: &str,
    body: Bytes,
) -> Result<(), ApiError> {
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError::bad_request(
            "invalid_multipart",
            "multipart/form-data without a valid boundary parameter",
        )
    })?;
    let broken = |e: multer::Error| {
        ApiError::bad_request(
            "invalid_multipart",
            format!("the multipart body is malformed: {e}"),
        )
    };
    let mut multipart =
        multer::Multipart::new(stream::iter([Ok::<Bytes, std::io::Error>(body)]), boundary);
    let mut found_audio = false;
    while let Some(field) = multipart.next_field().await.map_err(broken)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            AUDIO_FIELD | "audio" | "file" if !found_audio => {
                found_audio = true;
                request.audio_type = field.content_type().map(|m| m.to_string());
                request.audio = field.bytes().await.map_err(broken)?;
            }
            "tail" => request.tail = Some(field.bytes().await.map_err(broken)?),
            name => {
                let is_file = field.file_name().is_some();
                let bytes = field.bytes().await.map_err(broken)?;
                if is_file && !is_option(name) {
                    continue;
                }
                match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => {
                        let text = text.trim().to_string();
                        if !set_option(request, name, Given::Text(text.clone()))? {
                            // Kept for the API that reads it (the OpenAI API's own fields).
                            request.other_fields.push((name.to_string(), text));
                        }
                    }
                    // A field no API reads may be anything; an option is text.
                    Err(_) if is_option(name) => {
                        return Err(ApiError::bad_request(
                            "invalid_multipart",
                            format!("field {name} is not UTF-8 text"),
                        ))
                    }
                    Err(_) => {}
                }
            }
        }
    }
    if !found_audio {
        return Err(ApiError::bad_request(
            "missing_audio",
            format!("the multipart body has no {AUDIO_FIELD} field"),
        ));
    }
    Ok(())
}

/// A prompt trimmed (empty: none), refused when too long to be read.
pub(super) fn checked_prompt(prompt: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(prompt) = prompt
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("prompt is longer than {MAX_PROMPT_CHARS} characters; Whisper reads only its last 224 tokens, so send the words that matter most (names, terms, the text before this audio)"),
        ));
    }
    Ok(Some(prompt))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`).
pub(super) fn parse_bool(name: &str, text: &str) -> Result<bool, ApiError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(ApiError::bad_request(
            "invalid_parameter",
            format!("{name}={other:?}: use true or false"),
        )),
    }
}

/// A speaker count, 1 to 32.
fn parse_speakers(name: &str, text: &str) -> Result<u32, ApiError> {
    text.trim()
        .parse()
        .ok()
        .filter(|n| (1..=32).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("{name}={text:?}: a number of speakers from 1 to 32"),
            )
        })
}

fn parse_seq(name: &str, text: &str) -> Result<u64, ApiError> {
    text.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("{name}={text:?}: a chunk number from 1"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Bytes) {
        let mut body = Vec::new();
        for (name, ty, data) in parts {
            body.extend_from_slice(b"--XyZ\r\n");
            match ty {
                Some(t) => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"a.wav\"\r\nContent-Type: {t}\r\n\r\n").as_bytes(),
                ),
                None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
            }
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--XyZ--\r\n");
        (
            "multipart/form-data; boundary=XyZ".to_string(),
            Bytes::from(body),
        )
    }

    #[tokio::test]
    async fn multipart_takes_audio_file_and_language() {
        let (ct, body) = multipart(&[
            ("language", None, b"de"),
            ("audio_file", Some("audio/wav"), b"RIFF"),
        ]);
        let r = parse_transcribe(Some(&ct), &QueryOptions::default(), body)
            .await
            .unwrap();
        assert_eq!(&r.audio[..], b"RIFF");
        assert_eq!(r.audio_type.as_deref(), Some("audio/wav"));
        assert_eq!(r.language.as_deref(), Some("de"));
    }

    #[tokio::test]
    async fn multipart_without_audio_or_boundary_is_a_clear_400() {
        let (ct, body) = multipart(&[("language", None, b"de")]);
        let e = parse_transcribe(Some(&ct), &QueryOptions::default(), body.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code, "missing_audio");
        let e = parse_transcribe(Some("multipart/form-data"), &QueryOptions::default(), body)
            .await
            .unwrap_err();
        assert_eq!(e.code, "invalid_multipart");
        let broken = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"audio_file\"\r\n\r\nabc",
        );
        let e = parse_transcribe(
            Some("multipart/form-data; boundary=XyZ"),
            &QueryOptions::default(),
            broken,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, "invalid_multipart");
    }

    #[tokio::test]
    async fn json_carries_base64_audio_and_rejects_bad_shapes() {
        let body = Bytes::from_static(br#"{"audio":"UklGRg==","language":"en"}"#);
        let r = parse_transcribe(Some("application/json"), &QueryOptions::default(), body)
            .await
            .unwrap();
        assert_eq!(&r.audio[..], b"RIFF");
        assert_eq!(r.language.as_deref(), Some("en"));
        for (bad, code) in [
            (&br#"{"audio":"@@@"}"#[..], "invalid_base64"),
            (br#"{"audio":1}"#, "invalid_json"),
            (br#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]"#, "invalid_json"),
            (b"", "empty_body"),
            (br#"{"audio":""}"#, "empty_body"),
        ] {
            let e = parse_transcribe(Some("application/json"), &QueryOptions::default(), Bytes::from(bad.to_vec())).await.unwrap_err();
            assert_eq!(e.code, code, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn context_and_final_come_from_any_shape() {
        let (ct, body) = multipart(&[
            ("context", None, b"tok"),
            ("final", None, b"true"),
            ("audio_file", Some("audio/wav"), b"RIFF"),
        ]);
        let r = parse_transcribe(Some(&ct), &QueryOptions::default(), body)
            .await
            .unwrap();
        assert_eq!((r.context.as_deref(), r.last), (Some("tok"), Some(true)));
        let body = Bytes::from_static(br#"{"audio":"UklGRg==","context":"t2","final":false}"#);
        let r = parse_transcribe(Some("application/json"), &QueryOptions::default(), body)
            .await
            .unwrap();
        assert_eq!((r.context.as_deref(), r.last), (Some("t2"), Some(false)));
        let q = QueryOptions::parse("final=0&context=t3").unwrap();
        let r = parse_transcribe(Some("audio/wav"), &q, Bytes::from_static(b"RIFF"))
            .await
            .unwrap();
        assert_eq!((r.context.as_deref(), r.last), (Some("t3"), Some(false)));
        let q = QueryOptions::parse("final=maybe").unwrap();
        let e = parse_transcribe(Some("audio/wav"), &q, Bytes::from_static(b"RIFF"))
            .await
            .unwrap_err();
        assert_eq!(e.code, "invalid_parameter");
    }

    #[tokio::test]
    async fn raw_bodies_keep_their_type_and_take_query_options() {
        let q = QueryOptions::parse("language=fr&code=secret").unwrap();
        let r = parse_transcribe(Some("audio/L16;rate=8000"), &q, Bytes::from_static(b"\0\0"))
            .await
            .unwrap();
        assert_eq!(r.audio_type.as_deref(), Some("audio/L16;rate=8000"));
        assert_eq!(r.language.as_deref(), Some("fr"));
        let q = QueryOptions::parse("format=audio%2Fpcm%3Brate%3D8000").unwrap();
        let r = parse_transcribe(
            Some("application/octet-stream"),
            &q,
            Bytes::from_static(b"\0\0"),
        )
        .await
        .unwrap();
        assert_eq!(r.audio_type.as_deref(), Some("audio/pcm;rate=8000"));
    }
}
