//! The fast tier: the whole service (`server::run`, routing, parsing, the chunk service,
//! tokens, errors) in this process on port 0, with a scripted speech engine and speaker
//! encoder in place of Whisper and GE2E. No model is loaded, so these run in seconds; the
//! black-box suites (service.rs and the others) check the same front with the real engines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use prepis::asr::{AsrError, DecodeOptions, ModelInfo, Segment, Transcriber, Transcript, Word};
use prepis::config::Config;
use prepis::inference::{InProcess, Inference};
use prepis::server::{build_app, Engines};
use prepis::speaker::SpeakerEncoder;
use prepis::vad::SpeechMap;
use serde_json::Value;

/// Real recorded speech ("go forward ten meters"), 16 kHz 16-bit mono, 2.8 s.
const SPEECH: &str = "/usr/share/pocketsphinx/test/data/goforward.raw";
const PCM: &str = "audio/pcm;rate=16000";

/// What the scripted engine does with the next calls.
#[derive(Clone)]
enum Mode {
    /// A word every 300 ms of speech the VAD hears.
    Hear,
    /// Fails the call as a broken decode would.
    Fail,
    /// Fails the call as a worker that died on the audio would.
    Crash,
    /// Says it has started, then waits for the test to let it go.
    Hold(Arc<Mutex<mpsc::Sender<()>>>, Arc<Mutex<mpsc::Receiver<()>>>),
}

struct ScriptedEngine {
    mode: Arc<Mutex<Mode>>,
    calls: Arc<AtomicUsize>,
    info: ModelInfo,
}

impl Transcriber for ScriptedEngine {
    fn transcribe(&self, samples: &[f32], _: &DecodeOptions) -> Result<Transcript, AsrError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = self.mode.lock().unwrap().clone();
        match mode {
            Mode::Fail => return Err(AsrError::Inference("scripted failure".into())),
            Mode::Crash => return Err(AsrError::Crashed("killed by signal 6 (SIGABRT)".into())),
            Mode::Hold(started, release) => {
                started.lock().unwrap().send(()).unwrap();
                release.lock().unwrap().recv().unwrap();
            }
            Mode::Hear => {}
        }
        Ok(Transcript {
            segments: heard(samples),
            language: Some("en".into()),
            unreliable_from: None,
        })
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }
}

/// One segment with a word per 300 ms of the audio in which the VAD hears speech.
fn heard(samples: &[f32]) -> Vec<Segment> {
    let speech = SpeechMap::of(samples);
    let ms = samples.len() as u64 / 16;
    let words: Vec<Word> = (0..ms / 300)
        .map(|i| (i * 300, i * 300 + 280))
        .filter(|&(from, to)| speech.speech_seconds_between(from, to) > 0.15)
        .enumerate()
        .map(|(k, (from, to))| Word {
            word: format!("w{k}"),
            start: from as f64 / 1000.0,
            end: to as f64 / 1000.0,
            probability: 0.9,
        })
        .collect();
    if words.is_empty() {
        return Vec::new();
    }
    vec![Segment {
        text: words
            .iter()
            .map(|w| w.word.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        start: words[0].start,
        end: words[words.len() - 1].end,
        confidence: 0.9,
        no_speech_probability: 0.0,
        avg_logprob: -0.2,
        words,
    }]
}

/// Every stretch of speech has the same voice.
struct OneVoice;

impl SpeakerEncoder for OneVoice {
    fn embed(&self, samples: &[f32]) -> Option<Vec<f32>> {
        (!samples.is_empty()).then(|| {
            let mut v = vec![0.0; prepis::speaker::encoder::DIM];
            v[0] = 1.0;
            v
        })
    }
}

/// The service on a free port, stopped on drop.
struct Service {
    base: String,
    mode: Arc<Mutex<Mode>>,
    calls: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    client: reqwest::Client,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Service {
    async fn start(env: &[(&str, &str)]) -> Service {
        let mut vars: Vec<(String, String)> = vec![
            ("PORT".into(), "0".into()),
            ("PREPIS_SPEAKER_MODEL".into(), "off".into()),
            ("PREPIS_WORKERS".into(), "1".into()),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_lookup(|name| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
        .expect("test configuration");
        let mode = Arc::new(Mutex::new(Mode::Hear));
        let calls = Arc::new(AtomicUsize::new(0));
        let engine = ScriptedEngine {
            mode: Arc::clone(&mode),
            calls: Arc::clone(&calls),
            info: ModelInfo {
                name: "scripted".into(),
                path: String::new(),
                size_bytes: 0,
                engine: "scripted".into(),
                multilingual: false,
            },
        };
        let inference = Inference::start(
            config.workers,
            config.queue,
            InProcess::new(move || Ok(Arc::new(engine) as Arc<dyn Transcriber>)),
        );
        let engines = Engines {
            inference: Arc::clone(&inference),
            speaker: Some(Ok(Arc::new(OneVoice) as Arc<dyn SpeakerEncoder>)),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("a free port");
        let port = listener.local_addr().unwrap().port();
        let app = build_app(config, engines);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(prepis::server::run(
            listener,
            app,
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        ));
        // The scripted model loads on the pool's own thread at once.
        while !inference.status().ready {
            tokio::task::yield_now().await;
        }
        Service {
            base: format!("http://127.0.0.1:{port}"),
            mode,
            calls,
            stop: Some(stop),
            client: reqwest::Client::new(),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Makes the engine hold each call: the receiver hears each call start, the sender lets
    /// one go.
    fn hold(&self) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        self.set(Mode::Hold(
            Arc::new(Mutex::new(started_tx)),
            Arc::new(Mutex::new(release_rx)),
        ));
        (started_rx, release_tx)
    }

    /// POSTs raw audio to `/api/transcribe?query`; the status, the headers and the JSON.
    async fn post(
        &self,
        query: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.post_in(query, None, content_type, body).await
    }

    /// POSTs a chunk that continues the stream of `context` (a token, in `X-Prepis-Context`).
    async fn post_in(
        &self,
        query: &str,
        context: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .client
            .post(format!("{}/api/transcribe?{query}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = context {
            request = request.header("x-prepis-context", token);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let json = response.json().await.expect("a JSON body");
        (status, headers, json)
    }

    async fn request(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .send()
            .await
            .expect("the service answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }
}

fn speech() -> Vec<u8> {
    std::fs::read(SPEECH).unwrap_or_else(|e| {
        panic!("{SPEECH}: {e} (scripts/install-deps.sh --test installs pocketsphinx-testdata)")
    })
}

/// `status`'s error code.
fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("(none)")
}

fn context(body: &Value) -> String {
    body["context"]
        .as_str()
        .expect("a context token")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_ready_with_the_scripted_engine() {
    let service = Service::start(&[]).await;
    let (status, body) = service.request(reqwest::Method::GET, "/api/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["model"]["name"], "scripted", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_carries_its_state_in_the_token_and_ends_with_every_word_final() {
    let service = Service::start(&[]).await;
    let audio = speech();
    // Two chunks and an empty last one, each continuing the previous response's token.
    let half = (audio.len() / 2) & !1;
    let (status, _, first) = service
        .post("final=false", PCM, audio[..half].to_vec())
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["stream"]["seq"], 1);
    let token = context(&first);
    let (status, _, second) = service
        .post_in(
            "final=false&seq=2",
            Some(&token),
            PCM,
            audio[half..].to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["stream"]["seq"], 2);
    assert_eq!(second["stream"]["id"], first["stream"]["id"]);
    assert!((second["stream"]["received_until"].as_f64().unwrap() - 2.786).abs() < 0.01);
    // A chunk numbered out of order is refused, whatever token it carries.
    let (status, _, conflict) = service
        .post_in(
            "final=false&seq=3",
            Some(&token),
            PCM,
            audio[half..].to_vec(),
        )
        .await;
    assert_eq!((status, code(&conflict)), (409, "sequence_conflict"));
    let (status, _, last) = service
        .post_in("final=true&seq=3", Some(&context(&second)), PCM, Vec::new())
        .await;
    assert_eq!(status, 200, "{last}");
    assert!(last["partial"].is_null(), "{last}");
    let text: Vec<String> = [&first, &second, &last]
        .iter()
        .map(|r| r["text"].as_str().unwrap_or("").to_string())
        .filter(|t| !t.is_empty())
        .collect();
    assert!(!text.is_empty(), "no final words: {first} {second} {last}");
    // The scripted encoder hears one voice: every labelled segment is speaker 1.
    for response in [&first, &second, &last] {
        for segment in response["results"].as_array().unwrap() {
            assert!(
                segment["speaker"].is_null() || segment["speaker"] == 1,
                "{segment}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_request_gets_its_code_and_status_and_never_reaches_the_engine() {
    let service = Service::start(&[]).await;
    let audio = speech();
    let forged = "A".repeat(120);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("seq=0", PCM, audio.clone(), 400, "invalid_parameter"),
        ("language=xx", PCM, audio.clone(), 400, "unknown_language"),
        (
            "language=de",
            PCM,
            audio.clone(),
            400,
            "language_not_supported",
        ),
        (
            "session_id=a%20b",
            PCM,
            audio.clone(),
            400,
            "invalid_session_id",
        ),
        (
            "session_id=s1",
            PCM,
            audio.clone(),
            400,
            "sessions_disabled",
        ),
        ("final=false", PCM, Vec::new(), 400, "empty_body"),
        (
            "",
            "application/octet-stream",
            b"not audio at all, just text".repeat(20),
            415,
            "not_audio",
        ),
    ];
    for (query, content_type, body, want_status, want_code) in cases {
        let (status, _, answer) = service.post(query, content_type, body).await;
        assert_eq!(
            (status, code(&answer)),
            (want_status, want_code),
            "?{query}: {answer}"
        );
    }
    let (status, _, answer) = service.post_in("", Some(&forged), PCM, audio.clone()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(code(&answer).starts_with("context_"), "{answer}");
    assert_eq!(service.calls.load(Ordering::SeqCst), 0);

    let (status, body) = service.request(reqwest::Method::GET, "/api/nowhere").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = service
        .request(reqwest::Method::PUT, "/api/transcribe")
        .await;
    assert_eq!((status, code(&body)), (405, "method_not_allowed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_the_tail_must_send_it_back() {
    let service = Service::start(&[]).await;
    let audio = speech();
    let (status, _, first) = service
        .post("final=false&keep_audio=true", PCM, audio[..32_000].to_vec())
        .await;
    assert_eq!(status, 200, "{first}");
    let want = first["stream"]["tail_samples"]
        .as_u64()
        .expect("tail_samples");
    assert!(want > 0, "{first}");
    let (status, _, answer) = service
        .post_in(
            "final=false",
            Some(&context(&first)),
            PCM,
            audio[32_000..].to_vec(),
        )
        .await;
    assert_eq!((status, code(&answer)), (422, "tail_missing"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_store_that_is_down_is_503_with_retry_after() {
    // Nothing listens on port 1.
    let service = Service::start(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let (status, headers, answer) = service.post("session_id=s1", PCM, speech()).await;
    assert_eq!((status, code(&answer)), (503, "sessions_unavailable"));
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(service.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_failure_costs_one_chunk() {
    let service = Service::start(&[]).await;
    service.set(Mode::Fail);
    let (status, _, answer) = service.post("", PCM, speech()).await;
    assert_eq!((status, code(&answer)), (500, "inference_failed"));
    service.set(Mode::Crash);
    let (status, headers, answer) = service.post("", PCM, speech()).await;
    assert_eq!((status, code(&answer)), (500, "engine_crashed"));
    assert_eq!(headers["x-should-retry"], "false");
    service.set(Mode::Hear);
    let (status, _, answer) = service.post("", PCM, speech()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(!answer["text"].as_str().unwrap().is_empty(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_answers_429_at_once_and_the_running_chunk_still_finishes() {
    let service = Arc::new(Service::start(&[("PREPIS_QUEUE", "0")]).await);
    let (started_rx, release_tx) = service.hold();
    let running = {
        let service = Arc::clone(&service);
        tokio::spawn(async move { service.post("", PCM, speech()).await })
    };
    tokio::task::spawn_blocking(move || started_rx.recv().expect("the engine starts"))
        .await
        .unwrap();
    let (status, headers, answer) = service.post("", PCM, speech()).await;
    assert_eq!((status, code(&answer)), (429, "overloaded"));
    assert_eq!(headers["retry-after"], "1");
    release_tx.send(()).unwrap();
    let (status, _, answer) = running.await.unwrap();
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_file_runs_on_every_idle_slot_and_a_live_chunk_still_gets_one() {
    let service = Arc::new(Service::start(&[("PREPIS_WORKERS", "2"), ("PREPIS_QUEUE", "0")]).await);
    // 95 s of speech: the utterance again and again with a second of silence between.
    let utterance = speech();
    let mut file = Vec::new();
    while file.len() < 95 * 32_000 {
        file.extend_from_slice(&utterance);
        file.extend(std::iter::repeat_n(0u8, 32_000));
    }
    let (started_rx, release_tx) = service.hold();
    let whole = {
        let service = Arc::clone(&service);
        tokio::spawn(async move { service.post("", PCM, file).await })
    };
    // One request, two windows of it on the engine at once: the idle slot was lent to it.
    tokio::task::spawn_blocking(move || {
        for n in 1..=2 {
            started_rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("window {n} never started: no slot was lent"));
        }
    })
    .await
    .unwrap();
    // A lent slot holds no admission: a live chunk is admitted, not refused, and gets the
    // lent slot once the window on it is done.
    let live = {
        let service = Arc::clone(&service);
        tokio::spawn(async move { service.post("", PCM, speech()).await })
    };
    loop {
        let (_, status) = service.request(reqwest::Method::GET, "/api/status").await;
        if status["inference"]["in_flight"] == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    service.set(Mode::Hear);
    release_tx.send(()).unwrap();
    release_tx.send(()).unwrap();
    let (status, _, answer) = live.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(
        !answer["results"].as_array().unwrap().is_empty(),
        "{answer}"
    );
    let (status, _, answer) = whole.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    // Every window's words, in order, at their times in the file.
    let ends: Vec<f64> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["words"].as_array().unwrap().clone())
        .map(|w| w["end"].as_f64().unwrap())
        .collect();
    assert!(ends.windows(2).all(|p| p[0] <= p[1]), "{ends:?}");
    assert!(ends.last().is_some_and(|&end| end > 90.0), "{ends:?}");
}
