//! The three shapes of a transcription request, reduced to one `ChunkRequest`:
//! `multipart/form-data` (field `audio_file`), a raw audio body, and
//! `application/json` `{"audio": "<base64>", …}`. Scalar options may also come as
//! query parameters; a body field wins over the query.

use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream;
use serde::Deserialize;

use super::error::ApiError;
use crate::audio::MediaType;
use crate::service::ChunkRequest;

/// The multipart field that carries the audio (what the original browser client sends).
pub const AUDIO_FIELD: &str = "audio_file";

/// The longest `prompt` (characters); Whisper reads at most 224 tokens of it.
pub const MAX_PROMPT_CHARS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    audio: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default, rename = "final")]
    last: Option<bool>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    diarize: Option<bool>,
    #[serde(default)]
    max_speakers: Option<u32>,
    #[serde(default)]
    min_speakers: Option<u32>,
    #[serde(default)]
    keep_audio: Option<bool>,
    /// Base64 of the tail's 16-bit PCM.
    #[serde(default)]
    tail: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
}

/// Options that may come from the query string.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct QueryOptions {
    pub language: Option<String>,
    pub format: Option<String>,
    pub context: Option<String>,
    /// `final`: raw text, checked when the request is assembled.
    pub last: Option<String>,
    pub session_id: Option<String>,
    /// `seq`: raw text, checked when the request is assembled.
    pub seq: Option<String>,
    /// `diarize`, `max_speakers`, `min_speakers`: raw text, checked when assembled.
    pub diarize: Option<String>,
    pub max_speakers: Option<String>,
    pub min_speakers: Option<String>,
    /// `relabel` (session GET): raw text.
    pub relabel: Option<String>,
    /// `keep_audio`: raw text, checked when assembled.
    pub keep_audio: Option<String>,
    pub prompt: Option<String>,
}

impl QueryOptions {
    /// Reads the recognised parameters of a raw query string; others are ignored
    /// (the Functions host adds `code=` for keys).
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                "the query string is not valid URL encoding",
            )
        })?;
        Ok(Self::from_pairs(pairs))
    }

    /// Reads the recognised parameters from name/value pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut options = QueryOptions::default();
        for (name, value) in pairs {
            match name.as_str() {
                "language" => options.language = Some(value),
                "format" => options.format = Some(value),
                "context" => options.context = Some(value),
                "final" => options.last = Some(value),
                "session_id" => options.session_id = Some(value),
                "seq" => options.seq = Some(value),
                "diarize" => options.diarize = Some(value),
                "max_speakers" => options.max_speakers = Some(value),
                "min_speakers" => options.min_speakers = Some(value),
                "relabel" => options.relabel = Some(value),
                "keep_audio" => options.keep_audio = Some(value),
                "prompt" => options.prompt = Some(value),
                _ => {}
            }
        }
        options
    }
}

/// Parses a request body according to its content type.
pub async fn parse_transcribe(
    content_type: Option<&str>,
    query: &QueryOptions,
    body: Bytes,
) -> Result<ChunkRequest, ApiError> {
    let essence = content_type
        .map(|t| MediaType::parse(t).essence)
        .unwrap_or_default();
    let mut request = match essence.as_str() {
        "multipart/form-data" => parse_multipart(content_type.unwrap_or_default(), body).await?,
        "application/json" => parse_json(&body)?,
        _ => ChunkRequest {
            audio: body,
            audio_type: content_type.map(str::to_string),
            ..ChunkRequest::default()
        },
    };
    if request.language.is_none() {
        request.language = query.language.clone();
    }
    if request.context.is_none() {
        request.context = query.context.clone();
    }
    if request.last.is_none() {
        request.last = query
            .last
            .as_deref()
            .map(|v| parse_bool("final", v))
            .transpose()?;
    }
    if request.diarize.is_none() {
        request.diarize = query
            .diarize
            .as_deref()
            .map(|v| parse_bool("diarize", v))
            .transpose()?;
    }
    if request.max_speakers.is_none() {
        request.max_speakers = query
            .max_speakers
            .as_deref()
            .map(|v| parse_speakers("max_speakers", v))
            .transpose()?;
    }
    if request.min_speakers.is_none() {
        request.min_speakers = query
            .min_speakers
            .as_deref()
            .map(|v| parse_speakers("min_speakers", v))
            .transpose()?;
    }
    if request.keep_audio.is_none() {
        request.keep_audio = query
            .keep_audio
            .as_deref()
            .map(|v| parse_bool("keep_audio", v))
            .transpose()?;
    }
    if request.session_id.is_none() {
        request.session_id = query.session_id.clone();
    }
    if request.prompt.is_none() {
        request.prompt = query.prompt.clone();
    }
    request.prompt = checked_prompt(request.prompt.take())?;
    if request.seq.is_none() {
        request.seq = query.seq.as_deref().map(parse_seq).transpose()?;
    }
    if let Some(format) = &query.format {
        if essence != "application/json" || request.audio_type.is_none() {
            request.audio_type = Some(format.clone());
        }
    }
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

fn parse_json(body: &[u8]) -> Result<ChunkRequest, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the JSON request body is empty",
        ));
    }
    let parsed: JsonRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not a valid request ({e}); expected {{\"audio\": \"<base64>\", \"language\"?: \"en\", \"format\"?: \"audio/wav\"}}"),
        )
    })?;
    let audio = base64::engine::general_purpose::STANDARD
        .decode(parsed.audio.trim())
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_base64",
                format!("field audio is not valid base64: {e}"),
            )
        })?;
    let tail = parsed
        .tail
        .map(|tail| {
            base64::engine::general_purpose::STANDARD
                .decode(tail.trim())
                .map(Bytes::from)
                .map_err(|e| {
                    ApiError::bad_request(
                        "invalid_base64",
                        format!("field tail is not valid base64: {e}"),
                    )
                })
        })
        .transpose()?;
    Ok(ChunkRequest {
        audio: Bytes::from(audio),
        prompt: parsed.prompt,
        other_fields: Vec::new(),
        keep_audio: parsed.keep_audio,
        tail,
        audio_type: parsed.format,
        language: parsed.language,
        context: parsed.context,
        last: parsed.last,
        session_id: parsed.session_id,
        seq: parsed.seq,
        diarize: parsed.diarize,
        max_speakers: parsed
            .max_speakers
            .map(|n| parse_speakers("max_speakers", &n.to_string()))
            .transpose()?,
        min_speakers: parsed
            .min_speakers
            .map(|n| parse_speakers("min_speakers", &n.to_string()))
            .transpose()?,
    })
}

async fn parse_multipart(content_type: &str, body: Bytes) -> Result<ChunkRequest, ApiError> {
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
    let mut request = ChunkRequest::default();
    let mut found_audio = false;
    while let Some(field) = multipart.next_field().await.map_err(broken)? {
        match field.name() {
            Some(AUDIO_FIELD) | Some("audio") | Some("file") if !found_audio => {
                found_audio = true;
                request.audio_type = field.content_type().map(|m| m.to_string());
                request.audio = field.bytes().await.map_err(broken)?;
            }
            Some("language") => request.language = Some(text_field(field).await?),
            Some("format") => request.audio_type = Some(text_field(field).await?),
            Some("context") => request.context = Some(text_field(field).await?),
            Some("final") => request.last = Some(parse_bool("final", &text_field(field).await?)?),
            Some("diarize") => {
                request.diarize = Some(parse_bool("diarize", &text_field(field).await?)?)
            }
            Some(name @ ("max_speakers" | "min_speakers")) => {
                let name = name.to_string();
                let n = parse_speakers(&name, &text_field(field).await?)?;
                if name == "max_speakers" {
                    request.max_speakers = Some(n);
                } else {
                    request.min_speakers = Some(n);
                }
            }
            Some("tail") => request.tail = Some(field.bytes().await.map_err(broken)?),
            Some("keep_audio") => {
                request.keep_audio = Some(parse_bool("keep_audio", &text_field(field).await?)?)
            }
            Some("session_id") => request.session_id = Some(text_field(field).await?),
            Some("seq") => request.seq = Some(parse_seq(&text_field(field).await?)?),
            Some("prompt") => request.prompt = Some(text_field(field).await?),
            Some(name) if field.file_name().is_none() => {
                // Kept for the API that reads it; a field no API reads may be anything.
                let name = name.to_string();
                if let Ok(value) = field.text().await {
                    request.other_fields.push((name, value.trim().to_string()));
                }
            }
            _ => {
                field.bytes().await.map_err(broken)?;
            }
        }
    }
    if !found_audio {
        return Err(ApiError::bad_request(
            "missing_audio",
            format!("the multipart body has no {AUDIO_FIELD} field"),
        ));
    }
    Ok(request)
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`).
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

fn parse_seq(text: &str) -> Result<u64, ApiError> {
    text.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("seq={text:?}: a chunk number from 1"),
        )
    })
}

async fn text_field(field: multer::Field<'_>) -> Result<String, ApiError> {
    let name = field.name().unwrap_or("").to_string();
    field
        .text()
        .await
        .map(|t| t.trim().to_string())
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_multipart",
                format!("field {name} is not UTF-8 text"),
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
