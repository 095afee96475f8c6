//! The release package as Azure gets it (`make package`, which `make test` runs first):
//! the zip unpacks to a Functions app folder with the static handler (executable bit
//! kept), the function folders and the model; the handler started from it as the host
//! starts it (`FUNCTIONS_CUSTOMHANDLER_PORT`, the app folder as working directory, no
//! model settings, no cache) finds its model beside itself and serves both host modes.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};
use util::{client, free_port, librivox, wer, Server};

fn package() -> PathBuf {
    let zip = std::env::var("PREPIS_PACKAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/prepis-functions.zip")
        });
    assert!(
        zip.is_file(),
        "{} is missing: run `make package` (`make test` does)",
        zip.display()
    );
    zip
}

/// Whether an ELF executable asks for a dynamic loader (`PT_INTERP`).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

fn text_of(reply: &Value) -> String {
    reply["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Plays the host in payload mode: the reply's `Outputs.res` status code and parsed body.
fn post_envelope(server: &Server, path: &str, envelope: &Value) -> (Value, Value) {
    let reply: Value = client()
        .post(server.url(path))
        .json(envelope)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let res = &reply["Outputs"]["res"];
    let body = serde_json::from_str(res["body"].as_str().expect("a body")).unwrap();
    (res["statusCode"].clone(), body)
}

#[test]
fn the_functions_zip_unpacks_and_serves_both_host_modes() {
    let zip = package();
    // The modes recorded in the zip, as zip deploy reads them.
    let listing = Command::new("unzip").arg("-Z").arg(&zip).output().unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout);
    let handler_entry = listing
        .lines()
        .find(|l| l.ends_with(" handler"))
        .unwrap_or_else(|| panic!("no handler at the zip's root:\n{listing}"));
    assert!(handler_entry.starts_with("-rwxr-xr-x"), "{handler_entry}");

    let dir = std::env::temp_dir().join(format!("prepis-package-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let app = dir.join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let unzipped = Command::new("unzip")
        .arg("-q")
        .arg(&zip)
        .arg("-d")
        .arg(&app)
        .status()
        .unwrap();
    assert!(unzipped.success());
    for file in [
        "host.json",
        "transcribe/function.json",
        "status/function.json",
        "openapi/function.json",
        "v1/function.json",
        "handler",
        "models/ggml-base.bin",
        "models/ge2e.safetensors",
    ] {
        assert!(app.join(file).is_file(), "{file} missing from the package");
    }
    let handler = app.join("handler");
    let mode = std::fs::metadata(&handler).unwrap().permissions().mode();
    assert_eq!(mode & 0o755, 0o755, "handler mode {mode:o}");
    let elf = std::fs::read(&handler).unwrap();
    assert!(!has_interpreter(&elf), "the handler is not static");

    let host: Value =
        serde_json::from_slice(&std::fs::read(app.join("host.json")).unwrap()).unwrap();
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "handler"
    );
    let transcribe: Value =
        serde_json::from_slice(&std::fs::read(app.join("transcribe/function.json")).unwrap())
            .unwrap();
    assert_eq!(transcribe["bindings"][0]["type"], "httpTrigger");

    // As the host starts it: the app folder as working directory, only the host's variables.
    let port = free_port();
    let mut command = Command::new(&handler);
    command
        .current_dir(&app)
        .env_clear()
        .env("HOME", &dir)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env(
            "PREPIS_CONTEXT_KEY",
            "2a8cZ5V3d9bK4TnM1qL0pWf7sRxYhJgE6uCoDvAiBkQ=",
        );
    let server = Server::spawn(command, true);
    assert_eq!(server.port, port);
    let listening = server
        .log_events()
        .into_iter()
        .find(|e| e["event"] == "listening")
        .unwrap();
    assert_eq!(listening["address"], "127.0.0.1", "{listening}");
    assert_eq!(listening["functions_host"], true);
    let probe = client()
        .get(server.url("/api/status?probe=ready"))
        .send()
        .unwrap();
    assert_eq!(probe.status(), 200);
    let status: Value = probe.json().unwrap();
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["model"]["name"], "base", "{status}");
    assert_eq!(status["speakers"]["loaded"], true, "{status}");
    // The release runs Whisper in worker processes (forked by the static binary's engine
    // host), and never carries the test build's crash marker.
    assert_eq!(status["inference"]["isolation"], "process", "{status}");
    assert_eq!(status["inference"]["crash_marker"], false, "{status}");
    assert!(
        status["inference"]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["up"] == true && s["pid"].is_u64()),
        "{status}"
    );

    // Forwarded HTTP (enableForwardingHttpRequest: true).
    let utterance = &librivox()[3];
    let wav = std::fs::read(&utterance.path).unwrap();
    let forwarded: Value = client()
        .post(server.url("/api/transcribe?language=en"))
        .header("Content-Type", "audio/wav")
        .body(wav.clone())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let text = text_of(&forwarded);
    assert!(wer(&utterance.reference, &text) <= 0.2, "{forwarded}");

    // The OpenAI API where the host routes it (function v1, route v1/{*path}).
    let form = reqwest::blocking::multipart::Form::new()
        .text("model", "whisper-1")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(wav.clone()).file_name("a.wav"),
        );
    let openai: Value = client()
        .post(server.url("/api/v1/audio/transcriptions"))
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(openai["text"].as_str(), Some(text.as_str()), "{openai}");

    // The payload envelope (forwarding off): POST /<function name>.
    let envelope = json!({"Data": {"req": {"Url": "http://localhost:7071/api/transcribe",
        "Method": "POST", "Query": {"language": "en"},
        "Headers": {"Content-Type": ["application/octet-stream"]}, "Params": {},
        "Body": base64::engine::general_purpose::STANDARD.encode(&wav)}}, "Metadata": {}});
    let (status_code, payload) = post_envelope(&server, "/transcribe", &envelope);
    assert_eq!(status_code, 200, "{payload}");
    assert_eq!(text_of(&payload), text);
    let status_envelope = json!({"Data": {"req": {"Url": "http://localhost:7071/api/status",
        "Method": "GET", "Query": {}, "Headers": {}, "Params": {}}}, "Metadata": {}});
    let (_, status) = post_envelope(&server, "/status", &status_envelope);
    assert_eq!(status["ready"], true, "{status}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
