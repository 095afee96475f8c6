//! The request parsers, fed what a client controls: the content type (chosen by the first
//! byte, or taken from the input), the query string and the body — multipart (multer),
//! JSON with base64 audio, raw bodies, query options, and the Functions host's payload-mode
//! envelope. None may panic; every refusal is an `ApiError` with a 4xx status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prepis::http::{parse_envelope, parse_transcribe, QueryOptions};

const TYPES: &[&str] = &[
    "multipart/form-data; boundary=X",
    "multipart/form-data; boundary=\"a b\"",
    "application/json",
    "application/json; charset=utf-8",
    "audio/wav",
    "audio/pcm;rate=16000",
    "",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    // Layout: [choice] query \0 [content type \0 if choice says so] body
    let (query, rest) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let (content_type, body) = if choice as usize % (TYPES.len() + 1) == TYPES.len() {
        match rest.iter().position(|b| *b == 0) {
            Some(i) => (String::from_utf8_lossy(&rest[..i]).into_owned(), &rest[i + 1..]),
            None => (String::new(), rest),
        }
    } else {
        (TYPES[choice as usize % (TYPES.len() + 1)].to_string(), rest)
    };
    let query = QueryOptions::parse(&String::from_utf8_lossy(query)).unwrap_or_default();
    let body = bytes::Bytes::copy_from_slice(body);
    let parsed = runtime().block_on(parse_transcribe(
        (!content_type.is_empty()).then_some(content_type.as_str()),
        &query,
        body.clone(),
    ));
    if let Err(e) = parsed {
        assert!(e.status.is_client_error(), "{e:?}");
    }
    if let Err(e) = parse_envelope(&body) {
        assert!(e.status.is_client_error(), "{e:?}");
    }
});
