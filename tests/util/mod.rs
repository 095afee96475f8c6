//! Shared helpers for the black-box tests: start the real `handler` binary on a free
//! port with the real model, wait for readiness, read its log lines, score transcripts.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where Debian's pocketsphinx-testdata keeps real recorded speech.
pub const SPEECH_DIR: &str = "/usr/share/pocketsphinx/test/data";

/// A running handler process, killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    /// Every stdout line so far.
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// Every stderr line so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the handler with the default test model and extra environment.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Self::start_with(env, true)
    }

    /// Starts the handler; waits for the model when `wait_ready`.
    pub fn start_with(env: &[(&str, &str)], wait_ready: bool) -> Server {
        Self::start_binary(Path::new(env!("CARGO_BIN_EXE_handler")), env, wait_ready)
    }

    /// Starts the test build whose workers abort on the crash marker (see [`mark`]).
    pub fn start_crashable(env: &[(&str, &str)]) -> Server {
        let server = Self::start_binary(&crash_marker_handler(), env, true);
        assert_eq!(
            server.get_json("/api/status")["inference"]["crash_marker"],
            true,
            "PREPIS_CRASH_HANDLER is not a --features crash-marker build"
        );
        server
    }

    fn start_binary(binary: &Path, env: &[(&str, &str)], wait_ready: bool) -> Server {
        let mut command = Command::new(binary);
        command
            .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
            .env_remove("FUNCTIONS_HTTPWORKER_PORT")
            .env("PORT", "0")
            .env("PREPIS_MODEL_DIR", model_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        Self::spawn(command, wait_ready)
    }

    /// Starts a prepared handler command (stdout and stderr are taken here); waits for the
    /// model when `wait_ready`. The port is the one its `listening` event reports.
    pub fn spawn(mut command: Command, wait_ready: bool) -> Server {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting the handler binary");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let lines = Arc::clone(&stdout);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["event"] == "listening" {
                        let _ = port_tx.send(v["port"].as_u64().unwrap_or(0) as u16);
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let err = child.stderr.take().unwrap();
        let lines = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| {
                let _ = child.wait();
                panic!(
                    "the handler did not report a listening port ({e}): {}",
                    stderr.lock().unwrap().join("\n")
                )
            });
        let server = Server {
            child,
            port,
            stdout,
            stderr,
        };
        if wait_ready {
            server.wait_ready();
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// GETs `path` and parses the JSON answer.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        client().get(self.url(path)).send().unwrap().json().unwrap()
    }

    /// Polls `/api/status` until `ready` (the model has loaded), failing after 60 s.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = client();
        loop {
            if let Ok(r) = client.get(self.url("/api/status")).send() {
                let v: serde_json::Value = r.json().unwrap_or_default();
                if v["ready"] == true {
                    return;
                }
                if !v["model"]["error"].is_null() {
                    panic!(
                        "the model failed to load: {} (run `make model`)",
                        v["model"]["error"]
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "the handler was not ready within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stdout lines parsed as JSON (panics on a line that is not JSON).
    pub fn log_events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|_| panic!("log line is not JSON: {l}"))
            })
            .collect()
    }

    /// Waits until a log event satisfies `predicate` (log lines are written after replies).
    pub fn wait_for_event(
        &self,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(found) = self.log_events().into_iter().find(|e| predicate(e)) {
                return found;
            }
            assert!(Instant::now() < deadline, "no matching log event");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `count` log events satisfy `predicate`, and returns them.
    pub fn wait_for_events(
        &self,
        count: usize,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<_> = self
                .log_events()
                .into_iter()
                .filter(|e| predicate(e))
                .collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} log events",
                found.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_term();
        self.wait_exit()
    }

    /// Sends SIGTERM.
    pub fn signal_term(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("waiting for the handler")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The handler built with `--features crash-marker` (`make test` builds it and sets
/// PREPIS_CRASH_HANDLER; `make crash-handler` alone).
pub fn crash_marker_handler() -> PathBuf {
    let path = std::env::var("PREPIS_CRASH_HANDLER").map(PathBuf::from).expect(
        "PREPIS_CRASH_HANDLER: the handler built with --features crash-marker (run `make crash-handler`, or `make test`)",
    );
    assert!(
        path.is_file(),
        "PREPIS_CRASH_HANDLER={} is missing",
        path.display()
    );
    path
}

/// Mixes the crash marker (a steady 2600 Hz tone, 0.8 s) into 16 kHz `samples` at
/// `at_seconds`: a worker of the crash-marker build aborts on audio holding it.
pub fn mark(samples: &mut [f32], at_seconds: f64) {
    let start = (at_seconds * 16_000.0) as usize;
    for (i, x) in samples.iter_mut().skip(start).take(12_800).enumerate() {
        *x += 0.3 * (2.0 * std::f64::consts::PI * 2600.0 * i as f64 / 16_000.0).sin() as f32;
    }
}

/// `/api/status`'s crash counters: (crashes, restarts).
pub fn crashes(server: &Server) -> (u64, u64) {
    let status = server.get_json("/api/status");
    let inference = &status["inference"];
    (
        inference["crashes"].as_u64().unwrap(),
        inference["restarts"].as_u64().unwrap(),
    )
}

/// The directory `make model` fills.
pub fn model_dir() -> PathBuf {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(dir) = var("PREPIS_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let cache = var("PREPIS_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache/prepis")
    });
    cache.join("models")
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// A LibriVox utterance of pocketsphinx-testdata and its reference transcript.
pub struct Utterance {
    pub path: PathBuf,
    pub reference: String,
}

/// The five LibriVox utterances (24.7 s of one reader).
pub fn librivox() -> Vec<Utterance> {
    sphinx_set("librivox", "transcription", |id| format!("{id}.wav"))
}

/// The five "cards" utterances (short commands).
pub fn cards() -> Vec<Utterance> {
    sphinx_set("cards", "cards.transcription", |id| format!("{id}.wav"))
}

fn sphinx_set(dir: &str, transcripts: &str, file: impl Fn(&str) -> String) -> Vec<Utterance> {
    let base = Path::new(SPEECH_DIR).join(dir);
    let text = std::fs::read_to_string(base.join(transcripts)).unwrap_or_else(|_| {
        panic!(
            "{} missing: install pocketsphinx-testdata (make deps)",
            base.display()
        )
    });
    text.lines()
        .filter_map(|line| {
            let (words, id) = line.rsplit_once('(')?;
            let id = id.trim().trim_end_matches(')');
            let reference = words
                .replace("<s>", "")
                .replace("</s>", "")
                .trim()
                .to_string();
            Some(Utterance {
                path: base.join(file(id)),
                reference,
            })
        })
        .collect()
}

/// The reference text of an Asterisk US English prompt (`vm-intro`, …), from the package's
/// own transcript list.
pub fn asterisk_reference(id: &str) -> String {
    use std::io::Read as _;
    let mut texts = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
            .expect("asterisk-core-sounds-en (scripts/install-deps.sh --test)"),
    )
    .read_to_string(&mut texts)
    .unwrap();
    texts
        .lines()
        .find_map(|l| l.strip_prefix(id)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no reference for {id}"))
        .to_string()
}

/// Lower case, no punctuation, hyphens as spaces, a few spelled-out forms.
pub fn normalise(text: &str) -> Vec<String> {
    let lowered = text.to_lowercase().replace('-', " ");
    lowered
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .map(|w| match w.as_str() {
            "mr" => "mister".to_string(),
            "mrs" => "missus".to_string(),
            "10" => "ten".to_string(),
            "4" => "four".to_string(),
            "5" => "five".to_string(),
            "7" => "seven".to_string(),
            "8" => "eight".to_string(),
            _ => w,
        })
        .collect()
}

/// Word error rate of `hypothesis` against `reference` (edit distance over words).
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut cur = vec![i; h.len() + 1];
        for j in 1..=h.len() {
            let sub = prev[j - 1] + usize::from(r[i - 1] != h[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len() as f64
}

/// What aligning a hypothesis to its reference finds, in words.
#[derive(Debug, Clone, Copy, Default)]
pub struct Alignment {
    pub reference_words: usize,
    pub substituted: usize,
    /// Reference words aligned to nothing: lost.
    pub deleted: usize,
    /// Inserted words equal to a neighbour: a word said once, shown twice.
    pub duplicated: usize,
    /// Other inserted words: made up.
    pub inserted: usize,
}

impl Alignment {
    pub fn rate(&self, count: usize) -> f64 {
        count as f64 / self.reference_words.max(1) as f64
    }
    pub fn wer(&self) -> f64 {
        self.rate(self.substituted + self.deleted + self.duplicated + self.inserted)
    }
}

/// Levenshtein alignment of the normalised words of `hypothesis` to `reference`.
pub fn align(reference: &str, hypothesis: &str) -> Alignment {
    let (r, h) = (normalise(reference), normalise(hypothesis));
    let mut d = vec![vec![0usize; h.len() + 1]; r.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=r.len() {
        for j in 1..=h.len() {
            let sub = d[i - 1][j - 1] + usize::from(r[i - 1] != h[j - 1]);
            d[i][j] = sub.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
        }
    }
    let mut out = Alignment {
        reference_words: r.len(),
        ..Alignment::default()
    };
    let (mut i, mut j) = (r.len(), h.len());
    while i > 0 || j > 0 {
        if i > 0 && j > 0 && d[i][j] == d[i - 1][j - 1] + usize::from(r[i - 1] != h[j - 1]) {
            out.substituted += usize::from(r[i - 1] != h[j - 1]);
            i -= 1;
            j -= 1;
        } else if i > 0 && d[i][j] == d[i - 1][j] + 1 {
            out.deleted += 1;
            i -= 1;
        } else {
            let neighbour = (j >= 2 && h[j - 2] == h[j - 1]) || (j < h.len() && h[j] == h[j - 1]);
            if neighbour {
                out.duplicated += 1;
            } else {
                out.inserted += 1;
            }
            j -= 1;
        }
    }
    out
}

/// Reads a WAV file's 16-bit mono samples (test fixtures only).
pub fn read_wav_i16(path: &Path) -> (u32, Vec<i16>) {
    let bytes = std::fs::read(path).unwrap();
    let rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if id == b"data" {
            let data = &bytes[pos + 8..(pos + 8 + len).min(bytes.len())];
            return (
                rate,
                data.chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            );
        }
        pos += 8 + len + (len & 1);
    }
    panic!("no data chunk in {}", path.display());
}

/// Sample formats the WAV writer can produce.
#[derive(Clone, Copy, Debug)]
pub enum WavFormat {
    U8,
    I16,
    I24,
    I32,
    F32,
}

/// Writes mono f32 samples as a WAV file in `format`, repeated over `channels`,
/// optionally with a WAVE_FORMAT_EXTENSIBLE header.
pub fn wav_bytes(
    samples: &[f32],
    rate: u32,
    channels: u16,
    format: WavFormat,
    extensible: bool,
) -> Vec<u8> {
    let (bits, tag): (u16, u16) = match format {
        WavFormat::U8 => (8, 1),
        WavFormat::I16 => (16, 1),
        WavFormat::I24 => (24, 1),
        WavFormat::I32 => (32, 1),
        WavFormat::F32 => (32, 3),
    };
    let mut data = Vec::new();
    for s in samples {
        let s = s.clamp(-1.0, 1.0);
        for _ in 0..channels {
            match format {
                WavFormat::U8 => data.push(((s * 127.0) + 128.0).round() as u8),
                WavFormat::I16 => data.extend_from_slice(&((s * 32767.0) as i16).to_le_bytes()),
                WavFormat::I24 => {
                    data.extend_from_slice(&((s * 8_388_607.0) as i32).to_le_bytes()[..3])
                }
                WavFormat::I32 => {
                    data.extend_from_slice(&((s as f64 * 2_147_483_647.0) as i32).to_le_bytes())
                }
                WavFormat::F32 => data.extend_from_slice(&s.to_le_bytes()),
            }
        }
    }
    let block_align = channels * bits / 8;
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&(if extensible { 0xfffe } else { tag }).to_le_bytes());
    fmt.extend_from_slice(&channels.to_le_bytes());
    fmt.extend_from_slice(&rate.to_le_bytes());
    fmt.extend_from_slice(&(rate * block_align as u32).to_le_bytes());
    fmt.extend_from_slice(&block_align.to_le_bytes());
    fmt.extend_from_slice(&bits.to_le_bytes());
    if extensible {
        fmt.extend_from_slice(&22u16.to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        let mask: u32 = if channels == 1 { 0x4 } else { 0x3 };
        fmt.extend_from_slice(&mask.to_le_bytes());
        fmt.extend_from_slice(&tag.to_le_bytes());
        fmt.extend_from_slice(&[
            0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71,
        ]);
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((4 + 8 + fmt.len() + 8 + data.len()) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    out.extend_from_slice(&fmt);
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// Linear-interpolation resampling, good enough to make test fixtures at other rates.
pub fn resample_linear(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    let n = (samples.len() as u64 * to as u64 / from as u64) as usize;
    (0..n)
        .map(|i| {
            let x = i as f64 * from as f64 / to as f64;
            let j = x.floor() as usize;
            let t = (x - j as f64) as f32;
            let a = samples[j.min(samples.len() - 1)];
            let b = samples[(j + 1).min(samples.len() - 1)];
            a + (b - a) * t
        })
        .collect()
}

/// A real redis-server on a Unix socket in a private directory, stopped on drop.
pub struct Redis {
    child: Child,
    pub dir: PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_in(Self::fresh_dir())
    }

    fn fresh_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("prepis-redis-{}-{}", std::process::id(), next_id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Starts (or restarts) a server on the same socket, keeping nothing on disk.
    pub fn start_in(dir: PathBuf) -> Redis {
        Self::launch(dir, &["--save", "", "--appendonly", "no"])
    }

    /// A server that keeps its data across a restart (append-only file, fsync on every
    /// write), as a production Redis would.
    pub fn start_persistent() -> Redis {
        Self::start_persistent_in(Self::fresh_dir())
    }

    /// Restarts a persistent server on its directory and socket.
    pub fn start_persistent_in(dir: PathBuf) -> Redis {
        let args = [
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
        ];
        let mut with_dir: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        with_dir.push(dir.display().to_string());
        let refs: Vec<&str> = with_dir.iter().map(String::as_str).collect();
        Self::launch(dir, &refs)
    }

    fn launch(dir: PathBuf, args: &[&str]) -> Redis {
        let socket = dir.join("redis.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("redis-server")
            .args(["--port", "0"])
            .args(args)
            .arg("--unixsocket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; make test-deps installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Redis { child, dir }
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// A TCP port that was free a moment ago (for processes that must keep a fixed port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port")
}

/// The Functions host's front door (`tests/front-door.mjs`: Kestrel's request-line and
/// header limits) in front of a handler; killed on drop.
pub struct FrontDoor {
    child: Child,
    pub port: u16,
    /// Every refusal it made (its stderr lines).
    pub refusals: Arc<Mutex<Vec<String>>>,
}

impl FrontDoor {
    pub fn start(upstream_port: u16) -> FrontDoor {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/front-door.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .arg(upstream_port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node (scripts/install-deps.sh --test installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the front door did not start: {line:?}"));
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let lines = refusals.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        FrontDoor {
            child,
            port,
            refusals,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn refusals(&self) -> Vec<String> {
        self.refusals.lock().unwrap().clone()
    }
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
