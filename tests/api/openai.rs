//! The OpenAI-compatible API under the official, unmodified SDKs: PyPI `openai` and npm
//! `openai` (versions pinned in scripts/install-deps.sh and tests/openai/package.json), each
//! pointed at the real handler through the test front door (Kestrel's limits). The SDK
//! scripts are `tests/openai/sdk_test.py` and `tests/openai/sdk.test.mjs`; this test makes
//! their audio, starts the handlers, runs both, and reads the handlers' logs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{
    asterisk_reference, librivox, read_wav_i16, resample_linear, wav_bytes, FrontDoor, Server,
    WavFormat,
};

const KEY: &str = "sdk-test-key";

/// Asterisk's US English prompts that follow the LibriVox reader in the long file (a second
/// voice, and past 30 s: two Whisper passes).
const PROMPTS: [&str; 3] = ["vm-intro", "conf-placeintoconf", "privacy-prompt"];

fn wav_16k(path: &Path) -> Vec<f32> {
    let (rate, pcm) = read_wav_i16(path);
    let pcm: Vec<f32> = pcm.iter().map(|s| *s as f32 / 32768.0).collect();
    resample_linear(&pcm, rate, 16_000)
}

/// The SDK scripts' audio: a short utterance, a long two-voice file, a French prompt.
fn cases(dir: &Path) -> PathBuf {
    let readers = librivox();
    let gap = vec![0.0f32; 8_000];
    let mut long = Vec::new();
    let mut reference = Vec::new();
    for u in &readers {
        long.extend(wav_16k(&u.path));
        long.extend(&gap);
        reference.push(u.reference.clone());
    }
    for id in PROMPTS {
        long.extend(wav_16k(
            &Path::new("/usr/share/asterisk/sounds/en").join(format!("{id}.wav")),
        ));
        long.extend(&gap);
        reference.push(asterisk_reference(id));
    }
    assert!(long.len() > 35 * 16_000, "the long file needs two passes");
    let long_file = dir.join("long.wav");
    std::fs::write(
        &long_file,
        wav_bytes(&long, 16_000, 1, WavFormat::I16, false),
    )
    .unwrap();
    let french = Path::new("/usr/share/asterisk/sounds/fr/dir-intro.wav");
    assert!(
        french.exists(),
        "asterisk-core-sounds-fr-wav (scripts/install-deps.sh --test)"
    );
    let cases = serde_json::json!({
        "short": {"file": readers[0].path, "text": readers[0].reference},
        "long": {"file": long_file, "text": reference.join(" ")},
        "french": {"file": french},
    });
    let path = dir.join("cases.json");
    std::fs::write(&path, cases.to_string()).unwrap();
    path
}

fn tools() -> PathBuf {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    var("PREPIS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_default()).join(".cache/prepis"))
        .join("tools")
}

fn run(mut command: Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (scripts/install-deps.sh --test installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("--- {what}\n{text}");
    assert!(output.status.success(), "{what} failed:\n{text}");
}

#[test]
fn the_official_sdks_transcribe_translate_stream_and_fail_as_openai_does() {
    let dir = std::env::temp_dir().join(format!("prepis-openai-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = cases(&dir);
    let server = Server::start(&[("PREPIS_API_KEY", KEY), ("PREPIS_WORKERS", "2")]);
    let busy = Server::start(&[
        ("PREPIS_API_KEY", KEY),
        ("PREPIS_WORKERS", "1"),
        ("PREPIS_QUEUE", "0"),
    ]);
    let (door, busy_door) = (FrontDoor::start(server.port), FrontDoor::start(busy.port));
    let env = [
        ("PREPIS_OPENAI_BASE_URL", door.url("/v1")),
        ("PREPIS_OPENAI_BUSY_URL", busy_door.url("/v1")),
        ("PREPIS_OPENAI_KEY", KEY.to_string()),
        ("PREPIS_OPENAI_CASES", cases.display().to_string()),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    let mut python = Command::new(tools().join("openai/bin/python"));
    python.arg(root.join("tests/openai/sdk_test.py"));
    python.envs(env.iter().map(|(k, v)| (k, v)));
    run(python, "the Python SDK (tests/openai/sdk_test.py)");

    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=spec"])
        .arg(root.join("tests/openai/sdk.test.mjs"));
    node.envs(env.iter().map(|(k, v)| (k, v)));
    run(node, "the Node SDK (tests/openai/sdk.test.mjs)");

    // Both SDKs met 429s on the busy instance, and the handler logged them as OpenAI requests.
    let refused = busy
        .log_events()
        .into_iter()
        .filter(|e| e["event"] == "transcribe_rejected" && e["status"] == 429)
        .filter(|e| e["mode"] == "openai")
        .count();
    assert!(refused >= 2, "429s logged by the busy instance: {refused}");
    let served = server
        .log_events()
        .into_iter()
        .filter(|e| e["event"] == "transcribed" && e["mode"] == "openai")
        .count();
    assert!(served >= 10, "OpenAI requests served: {served}");
    // Nothing the SDKs sent was refused by the front door.
    assert!(door.refusals().is_empty(), "{:?}", door.refusals());
    let _ = std::fs::remove_dir_all(&dir);
}
