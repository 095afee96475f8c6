//! Scale-out and faults: three handler processes behind a real nginx (round-robin, no
//! affinity) with a real redis-server, three concurrent real-speech streams through it, in
//! token mode and in Redis mode. Every stream's transcript must equal its single-instance
//! transcript: with no fault, with an instance killed (-9) while it holds a request and then
//! restarted, and (Redis mode) with Redis killed and restarted mid-stream. The clients follow
//! the documented contract (`prepis::client`: retry with the same context or sequence number,
//! honour `Retry-After`).

mod util;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prepis::client::{stream_samples, ChunkReply, StreamOptions};
use serde_json::Value;
use util::{cards, client, free_port, librivox, read_wav_i16, Redis, Server};

/// The clusters are CPU-heavy; one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const STREAMS: usize = 3;
const INSTANCES: usize = 3;

/// Three streams of real speech (34 s each): the ten pocketsphinx utterances, each stream
/// starting at another one.
fn streams() -> Vec<Vec<f32>> {
    let utterances: Vec<Vec<f32>> = librivox()
        .into_iter()
        .chain(cards())
        .map(|u| {
            let (rate, pcm) = read_wav_i16(&u.path);
            assert_eq!(rate, 16_000);
            pcm.iter().map(|s| *s as f32 / 32768.0).collect()
        })
        .collect();
    (0..STREAMS)
        .map(|k| {
            let n = utterances.len();
            (0..n)
                .flat_map(|i| utterances[(i + 3 * k) % n].clone())
                .collect()
        })
        .collect()
}

/// What a stream produced: every final segment's text and speaker, in order.
fn outcome(replies: &[ChunkReply]) -> Vec<(String, Value)> {
    replies
        .iter()
        .flat_map(|r| r.body["results"].as_array().cloned().unwrap_or_default())
        .map(|s| {
            (
                s["text"].as_str().unwrap_or("").to_string(),
                s["speaker"].clone(),
            )
        })
        .collect()
}

fn text(outcome: &[(String, Value)]) -> String {
    outcome
        .iter()
        .map(|(t, _)| t.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A real nginx in front of the instances: round-robin, no affinity, nginx's default
/// header limits (see docs/deployment.md, running many instances).
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    fn start(upstreams: &[u16]) -> Nginx {
        let dir = std::env::temp_dir().join(format!("prepis-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let servers: String = upstreams
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        let template = include_str!("../deploy/nginx.conf");
        let config = template
            .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
            .replace(
                "    server prepis-1:7071;\n    server prepis-2:7071;\n    server prepis-3:7071;\n",
                &servers,
            );
        assert!(config.contains(&servers), "deploy/nginx.conf changed shape");
        let d = dir.display();
        let config = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             {}\nevents {{ worker_connections 512; }}\nhttp {{\n  access_log {d}/access.log;\n  \
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{config}}}\n",
            if is_root() { "user root;" } else { "" },
        );
        std::fs::write(dir.join("nginx.conf"), &config).unwrap();
        let binary = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists())
            .unwrap_or("nginx");
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx (Debian package nginx-light; make test-deps installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Nginx { child, port, dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/transcribe", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// N handler instances on fixed ports (so that a restarted one takes its old place).
struct Cluster {
    ports: Vec<u16>,
    instances: Vec<Server>,
    env: Vec<(String, String)>,
    nginx: Nginx,
    /// The instances are the crash-marker test build.
    crashable: bool,
}

impl Cluster {
    fn start(redis: Option<&Redis>) -> Cluster {
        Self::start_build(redis, false)
    }

    fn start_build(redis: Option<&Redis>, crashable: bool) -> Cluster {
        let mut env = vec![
            ("PREPIS_MODEL".to_string(), "tiny.en".to_string()),
            ("PREPIS_THREADS".into(), "1".into()),
            ("PREPIS_WORKERS".into(), "1".into()),
            // Three streams on one instance for the reference run: let them wait their turn.
            ("PREPIS_QUEUE".into(), "2".into()),
            (
                "PREPIS_CONTEXT_KEY".into(),
                "Y2x1c3Rlci10ZXN0LXNoYXJlZC1rZXktMDEyMzQ1Njc=".into(),
            ),
            (
                "PREPIS_LOG".into(),
                "info,whisper_rs=warn,prepis::service=debug".into(),
            ),
        ];
        if let Some(redis) = redis {
            env.push(("REDIS_URL".into(), redis.url()));
        }
        let ports: Vec<u16> = (0..INSTANCES).map(|_| free_port()).collect();
        let mut cluster = Cluster {
            nginx: Nginx::start(&ports),
            instances: Vec::new(),
            ports,
            env,
            crashable,
        };
        for i in 0..INSTANCES {
            let server = cluster.instance(i);
            cluster.instances.push(server);
        }
        cluster
    }

    fn instance(&self, i: usize) -> Server {
        let port = self.ports[i].to_string();
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.push(("PORT", &port));
        if self.crashable {
            Server::start_crashable(&env)
        } else {
            Server::start(&env)
        }
    }

    /// Kills instance `i` with SIGKILL once it is running a chunk, then starts it again.
    fn kill_busy_instance_and_restart(&mut self, i: usize) {
        // Busy: its last log event is a chunk starting inference (one worker per instance).
        let busy = |server: &Server| {
            let events = server.log_events();
            let last_start = events
                .iter()
                .rposition(|e| e["event"] == "inference_started");
            let last_end = events.iter().rposition(|e| {
                e["event"] == "transcribed"
                    || e["event"] == "transcribe_failed"
                    || e["event"] == "transcribe_rejected"
            });
            last_start > last_end
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !busy(&self.instances[i]) {
            assert!(Instant::now() < deadline, "instance {i} never got a chunk");
            std::thread::sleep(Duration::from_millis(2));
        }
        self.instances[i].kill();
        let restarted = self.instance(i);
        self.instances[i] = restarted;
    }
}

/// Streams every stream at once; `during` runs on the test thread once `after` replies have
/// come back (all streams together). Returns each stream's replies.
fn run_streams(
    urls: &[String],
    session: Option<&str>,
    after: usize,
    during: impl FnOnce(),
) -> Vec<Vec<ChunkReply>> {
    run_these_streams(streams(), urls, session, after, during)
}

fn run_these_streams(
    streams: Vec<Vec<f32>>,
    urls: &[String],
    session: Option<&str>,
    after: usize,
    during: impl FnOnce(),
) -> Vec<Vec<ChunkReply>> {
    let replied = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(k, samples)| {
            let options = StreamOptions {
                urls: urls.to_vec(),
                language: Some("en".into()),
                session_id: session.map(|s| format!("{s}-{k}")),
                attempts: 60,
                ..StreamOptions::default()
            };
            let replied = Arc::clone(&replied);
            std::thread::spawn(move || {
                stream_samples(&samples, &options, |_| {
                    replied.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap_or_else(|e| panic!("stream {k}: {e}"))
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    while replied.load(Ordering::SeqCst) < after {
        assert!(Instant::now() < deadline, "the streams stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
    during();
    workers.into_iter().map(|w| w.join().unwrap()).collect()
}

fn assert_same(reference: &[Vec<(String, Value)>], run: &[Vec<ChunkReply>], what: &str) {
    for (k, (want, replies)) in reference.iter().zip(run).enumerate() {
        let got = outcome(replies);
        assert!(!want.is_empty(), "stream {k}: empty reference transcript");
        assert_eq!(
            text(&got),
            text(want),
            "{what}: stream {k} lost or duplicated words"
        );
        assert_eq!(got, *want, "{what}: stream {k} speakers differ");
    }
}

fn retries(run: &[Vec<ChunkReply>]) -> u32 {
    run.iter().flatten().map(|r| r.attempts - 1).sum()
}

/// Each stream on one instance alone, no balancer: what every other run must reproduce.
fn single_instance_reference(cluster: &Cluster) -> Vec<Vec<(String, Value)>> {
    let direct = [cluster.instances[0].url("/api/transcribe")];
    let run = run_streams(&direct, None, 0, || {});
    run.iter().map(|r| outcome(r)).collect()
}

#[test]
fn token_streams_through_a_balancer_survive_a_killed_instance() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = Cluster::start(None);
    let reference = single_instance_reference(&cluster);
    let lb = [cluster.nginx.url()];

    let run = run_streams(&lb, None, 0, || {});
    assert_same(&reference, &run, "token mode behind nginx");
    // Round-robin with no affinity: consecutive chunks of one stream met different instances.
    for (i, server) in cluster.instances.iter().enumerate() {
        let served = server
            .log_events()
            .iter()
            .filter(|e| e["event"] == "transcribed" && e["seq"].as_u64() > Some(1))
            .count();
        assert!(served > 0, "instance {i} continued no stream");
    }

    let run = run_streams(&lb, None, 8, || cluster.kill_busy_instance_and_restart(1));
    assert_same(
        &reference,
        &run,
        "token mode, instance killed and restarted",
    );
    eprintln!("token mode with kill -9: {} retried chunks", retries(&run));
}

#[test]
fn redis_sessions_through_a_balancer_survive_a_killed_instance_and_a_redis_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let redis = Arc::new(Mutex::new(Redis::start_persistent()));
    let redis_dir = redis.lock().unwrap().dir.clone();
    let mut cluster = Cluster::start(Some(&redis.lock().unwrap()));
    let reference = single_instance_reference(&cluster);
    let lb = [cluster.nginx.url()];

    // The transcript kept in Redis is the streamed one: nothing lost, nothing twice.
    let check_sessions = |cluster: &Cluster, name: &str| {
        for (k, want) in reference.iter().enumerate() {
            let stored = cluster.instances[(k + 1) % INSTANCES]
                .get_json(&format!("/api/transcribe?session_id={name}-{k}"));
            assert_eq!(
                stored["text"].as_str(),
                Some(text(want).as_str()),
                "{name}: session {k} in Redis differs from the reference"
            );
        }
    };

    let run = run_streams(&lb, Some("plain"), 0, || {});
    assert_same(&reference, &run, "Redis mode behind nginx");
    check_sessions(&cluster, "plain");

    let run = run_streams(&lb, Some("killed"), 8, || {
        cluster.kill_busy_instance_and_restart(2)
    });
    assert_same(
        &reference,
        &run,
        "Redis mode, instance killed and restarted",
    );
    check_sessions(&cluster, "killed");

    let probe = cluster.instances[0].url("/api/transcribe?session_id=probe&language=en");
    let run = run_streams(&lb, Some("redis-restart"), 8, || {
        redis.lock().unwrap().stop();
        // While Redis is down: a clear 503 with Retry-After, at once (not a timeout).
        let sent = Instant::now();
        let response = client()
            .post(&probe)
            .header("Content-Type", "audio/pcm;rate=16000")
            .body(vec![0u8; 32_000])
            .send()
            .unwrap();
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        let body: Value = response.json().unwrap();
        assert_eq!(body["error"]["code"], "sessions_unavailable", "{body}");
        assert!(sent.elapsed() < Duration::from_secs(5));
        // The streams meet Redis down too before it comes back.
        let deadline = Instant::now() + Duration::from_secs(60);
        let failures = |cluster: &Cluster| -> usize {
            cluster
                .instances
                .iter()
                .map(|s| {
                    s.log_events()
                        .iter()
                        .filter(|e| e["event"] == "redis_unavailable")
                        .count()
                })
                .sum()
        };
        while failures(&cluster) < 2 {
            assert!(Instant::now() < deadline, "no stream met Redis down");
            std::thread::sleep(Duration::from_millis(5));
        }
        *redis.lock().unwrap() = Redis::start_persistent_in(redis_dir.clone());
    });
    assert_same(&reference, &run, "Redis mode, Redis restarted");
    assert!(
        retries(&run) > 0,
        "no chunk was retried while Redis was down"
    );
    check_sessions(&cluster, "redis-restart");
    // The sessions from before the restart are still whole.
    check_sessions(&cluster, "killed");
}

/// A chunk that crashes the engine (the test build's marker, in stream 0) costs that chunk,
/// not the fleet: the client does not send it again, so one instance meets it once; the
/// stream goes on and ends with every other word; all three instances stay alive; the
/// other streams are untouched.
#[test]
fn a_poisoned_chunk_behind_a_balancer_crashes_one_worker_once_and_no_instance() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cluster = Cluster::start_build(None, true);
    let reference = single_instance_reference(&cluster);
    let lb = [cluster.nginx.url()];
    let mut marked = streams();
    // Inside the seventh 2 s chunk (12-14 s), over speech.
    util::mark(&mut marked[0], 12.4);
    let run = run_these_streams(marked, &lb, None, 0, || {});

    assert_same(&reference[1..], &run[1..], "the unmarked streams");
    let (want, got) = (text(&reference[0]), text(&outcome(&run[0])));
    let alignment = util::align(&want, &got);
    // 2 s of speech is 4-7 words; the words before and after the gap are all there (the
    // decoder's prompt differs after the gap, so a later word may be heard differently).
    assert!(
        alignment.deleted <= 8
            && alignment.inserted + alignment.duplicated <= 2
            && alignment.wer() <= 0.15,
        "{alignment:?}\nwant: {want}\ngot:  {got}"
    );
    let chunks = streams()[0].len().div_ceil(32_000);
    assert_eq!(
        run[0].len(),
        chunks - 1,
        "one chunk skipped, every other answered"
    );

    let crashes: Vec<(u64, u64)> = cluster.instances.iter().map(util::crashes).collect();
    let total: u64 = crashes.iter().map(|c| c.0).sum();
    assert_eq!(total, 1, "the poisoned chunk was sent once: {crashes:?}");
    for (i, server) in cluster.instances.iter().enumerate() {
        let status = server.get_json("/api/status");
        assert_eq!(status["ready"], true, "instance {i}: {status}");
        assert_eq!(
            crashes[i].0, crashes[i].1,
            "instance {i} restarted its crashed worker"
        );
    }
}
