//! The OpenAPI document served at `/api/openapi.json` describes what the real handler
//! answers: every response below (successes, session calls, errors) is validated against its
//! schema with the `jsonschema` crate; then schemathesis (PyPI) generates requests from the
//! document against the running service and checks the answers conform.

use crate::util::{client, librivox, read_wav_i16, wav_bytes, Redis, Server, WavFormat};
use base64::Engine as _;
use serde_json::{json, Value};

/// A validator for one of the document's component schemas (the document is the root, so
/// `#/components/...` references resolve inside it).
fn validator(document: &Value, schema: &str) -> jsonschema::Validator {
    let mut root = document.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["$ref"] = json!(format!("#/components/schemas/{schema}"));
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
}

/// Asserts `body` conforms to `schema`, listing every violation.
fn conforms(document: &Value, schema: &str, body: &Value) {
    let errors: Vec<String> = validator(document, schema)
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{schema}: {errors:#?}\n{body:#}");
}

/// The document's response schema for `status` on `path`/`method`, by name.
fn response_schema(document: &Value, path: &str, method: &str, status: u16) -> String {
    let mut response = &document["paths"][path][method]["responses"][status.to_string()];
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/responses/");
        response = &document["components"]["responses"][name];
    }
    let schema = &response["content"]["application/json"]["schema"]["$ref"];
    schema
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path} documents no JSON body for {status}"))
        .trim_start_matches("#/components/schemas/")
        .to_string()
}

/// Sends a request; its JSON answer, after checking the status.
fn send(request: reqwest::blocking::RequestBuilder, expected: u16) -> Value {
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap();
    assert_eq!(status, expected, "{body}");
    body
}

#[test]
fn real_responses_conform_to_the_served_document() {
    let redis = Redis::start();
    let server = Server::start(&[
        ("PREPIS_MODEL", "tiny.en"),
        ("PREPIS_THREADS", "1"),
        ("REDIS_URL", &redis.url()),
    ]);
    let http = client();
    let document: Value = http
        .get(server.url("/api/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    // The document is itself valid JSON Schema where it says schemas are.
    for name in document["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
    {
        validator(&document, name);
    }
    let transcribe = "/api/transcribe";
    let conform = |path: &str, method: &str, status: u16, body: &Value| {
        let schema = response_schema(&document, path, method, status);
        conforms(&document, &schema, body);
    };

    let status = server.get_json("/api/status");
    conform("/api/status", "get", 200, &status);

    let wav = std::fs::read(&librivox()[0].path).unwrap();
    let (rate, samples) = read_wav_i16(&librivox()[0].path);
    let samples: Vec<f32> = samples.iter().map(|s| *s as f32 / 32768.0).collect();
    let half = samples.len() / 2;
    let piece =
        |range: std::ops::Range<usize>| wav_bytes(&samples[range], rate, 1, WavFormat::I16, false);
    // A whole utterance, multipart.
    let form = reqwest::blocking::multipart::Form::new().part(
        "audio_file",
        reqwest::blocking::multipart::Part::bytes(wav.clone()).file_name("speech.wav"),
    );
    let whole = send(http.post(server.url(transcribe)).multipart(form), 200);
    assert!(!whole["results"].as_array().unwrap().is_empty(), "{whole}");
    conform(transcribe, "post", 200, &whole);
    // The schemas do constrain: a reply missing a member, or with a word's time as text, fails.
    let response_schema = validator(&document, "TranscribeResponse");
    let mut broken = whole.clone();
    broken.as_object_mut().unwrap().remove("context");
    assert!(!response_schema.is_valid(&broken));
    let mut broken = whole.clone();
    broken["results"][0]["words"][0]["start"] = json!("0.5");
    assert!(!response_schema.is_valid(&broken));

    // The OpenAI API: each response format, the models, an error.
    let openai = |fields: &[(&str, &str)]| {
        let mut form = reqwest::blocking::multipart::Form::new().part(
            "file",
            reqwest::blocking::multipart::Part::bytes(wav.clone()).file_name("speech.wav"),
        );
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        http.post(server.url("/v1/audio/transcriptions"))
            .multipart(form)
    };
    for (fields, schema) in [
        (&[("model", "whisper-1")][..], "OpenAiTranscription"),
        (
            &[
                ("response_format", "verbose_json"),
                ("timestamp_granularities[]", "word"),
                ("timestamp_granularities[]", "segment"),
            ][..],
            "OpenAiVerboseTranscription",
        ),
        (
            &[("response_format", "diarized_json")][..],
            "OpenAiDiarizedTranscription",
        ),
    ] {
        let body = send(openai(fields), 200);
        assert!(!body["text"].as_str().unwrap().is_empty(), "{body}");
        conforms(&document, schema, &body);
    }
    conforms(&document, "OpenAiModelList", &server.get_json("/v1/models"));
    let refused = send(openai(&[("response_format", "mp3")]), 400);
    conforms(&document, "OpenAiError", &refused);
    assert_eq!(refused["error"]["param"], "response_format");

    // A stream of two raw chunks: the second carries the first one's context.
    let first = send(
        http.post(server.url("/api/transcribe?final=false&language=en"))
            .header("Content-Type", "audio/wav")
            .body(piece(0..half)),
        200,
    );
    conform(transcribe, "post", 200, &first);
    let context = first["context"].as_str().unwrap().to_string();
    let second = send(
        http.post(server.url("/api/transcribe?final=true"))
            .header("Content-Type", "audio/wav")
            .header("X-Prepis-Context", &context)
            .body(piece(half..samples.len())),
        200,
    );
    conform(transcribe, "post", 200, &second);
    // The token-mode stream's final labels, from the voiceprints its replies carried.
    let segments: Vec<&Value> = [&first, &second]
        .iter()
        .flat_map(|r| r["results"].as_array().unwrap())
        .collect();
    assert!(segments.iter().any(|s| s["voiceprint"].is_string()));
    let relabelled = send(
        http.post(server.url("/api/transcribe?relabel=true"))
            .json(&json!({ "results": segments })),
        200,
    );
    assert_eq!(relabelled["labels"], "final");
    conform(transcribe, "post", 200, &relabelled);

    // JSON with base64 audio, in a Redis session; then the session calls.
    let audio = base64::engine::general_purpose::STANDARD.encode(&wav);
    let session = send(
        http.post(server.url(transcribe))
            .json(&json!({"audio": audio, "session_id": "openapi-1", "seq": 1, "final": true})),
        200,
    );
    conform(transcribe, "post", 200, &session);
    assert_eq!(session["stream"]["session_id"], "openapi-1");
    let stored = send(
        http.get(server.url("/api/transcribe?session_id=openapi-1")),
        200,
    );
    conform(transcribe, "get", 200, &stored);
    let relabelled = send(
        http.get(server.url("/api/transcribe?session_id=openapi-1&relabel=true")),
        200,
    );
    conform(transcribe, "get", 200, &relabelled);
    let deleted = send(
        http.delete(server.url("/api/transcribe?session_id=openapi-1")),
        200,
    );
    conform(transcribe, "delete", 200, &deleted);

    // Refusals, each with its documented status and the error schema.
    let refusals: [(&str, reqwest::blocking::RequestBuilder, u16); 7] = [
        ("post", http.post(server.url(transcribe)), 400),
        (
            "post",
            http.post(server.url(transcribe))
                .header("Content-Type", "text/plain")
                .body("hello"),
            415,
        ),
        (
            "post",
            http.post(server.url(transcribe))
                .header("Content-Type", "audio/wav")
                .body(b"RIFF\x10\0\0\0WAVEfmt ".to_vec()),
            422,
        ),
        (
            "post",
            http.post(server.url(transcribe))
                .header("Content-Type", "audio/wav")
                .header("X-Prepis-Context", "AAAA")
                .body(wav.clone()),
            400,
        ),
        (
            "post",
            http.post(server.url("/api/transcribe?session_id=openapi-2&seq=5"))
                .header("Content-Type", "audio/wav")
                .body(wav.clone()),
            409,
        ),
        (
            "get",
            http.get(server.url("/api/transcribe?session_id=nobody")),
            404,
        ),
        (
            "delete",
            http.delete(server.url("/api/transcribe?session_id=bad%20id")),
            400,
        ),
    ];
    for (method, request, expected) in refusals {
        let body = send(request, expected);
        conform(transcribe, method, expected, &body);
    }
}

/// schemathesis, from `make test-deps` (a venv under `~/.cache/prepis/tools`).
fn schemathesis() -> std::path::PathBuf {
    let cache = std::env::var("PREPIS_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/prepis", std::env::var("HOME").unwrap()));
    let path = std::path::PathBuf::from(cache).join("tools/schemathesis/bin/schemathesis");
    assert!(
        path.exists(),
        "{} is missing: `make test-deps` installs schemathesis",
        path.display()
    );
    path
}

#[test]
fn schemathesis_finds_no_response_off_the_document() {
    let redis = Redis::start();
    let server = Server::start(&[
        ("PREPIS_MODEL", "tiny.en"),
        ("PREPIS_THREADS", "1"),
        ("REDIS_URL", &redis.url()),
    ]);
    let report = std::env::temp_dir().join(format!("prepis-schemathesis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&report);
    let output = std::process::Command::new(schemathesis())
        .args(["run", &server.url("/api/openapi.json")])
        .args(["--url", &server.url("")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        ])
        // Seeded and without a saved example database: every machine runs the same cases.
        .args(["--max-examples", "100", "--seed", "1", "--generation-database", "none"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--request-timeout", "60", "--report", "junit", "--report-dir"])
        .arg(&report)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    // It exercised every operation (but the document's own), and every case passed.
    let junit = std::fs::read_dir(&report)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    for operation in [
        "POST /api/transcribe",
        "GET /api/transcribe",
        "DELETE /api/transcribe",
        "GET /api/status",
        "POST /v1/audio/transcriptions",
        "POST /v1/audio/translations",
        "GET /v1/models",
        "GET /v1/models/{model}",
    ] {
        assert!(
            junit.contains(&format!("testcase name=\"{operation}\"")),
            "{operation} was not exercised:\n{stdout}"
        );
    }
    let cases = stdout
        .lines()
        .find_map(|l| l.trim().strip_suffix(" passed")?.split_once(" generated, "))
        .map(|(generated, passed)| (generated.to_string(), passed.to_string()))
        .expect("a test case summary");
    assert_eq!(cases.0, cases.1, "{stdout}");
    assert!(cases.0.parse::<u32>().unwrap() >= 200, "{stdout}");
    // And the service is unharmed.
    let status = server.get_json("/api/status");
    assert_eq!(status["ready"], true);
    assert!(server
        .stderr
        .lock()
        .unwrap()
        .iter()
        .all(|l| !l.contains("panicked")));
}
