//! Redis sessions against a real redis-server: a stream kept in Redis across three
//! instances, the session transcript, a retry racing its original, Redis going down.

mod util;

use prepis::client::{stream_samples, transcript, StreamOptions};
use serde_json::Value;
use util::{client, librivox, read_wav_i16, wer, Redis, Server};

fn speech() -> (Vec<f32>, String) {
    let mut samples = Vec::new();
    let mut reference = Vec::new();
    for u in librivox() {
        let (_, pcm) = read_wav_i16(&u.path);
        samples.extend(pcm.iter().map(|s| *s as f32 / 32768.0));
        reference.push(u.reference);
    }
    (samples, reference.join(" "))
}

fn post(server: &Server, query: &str, samples: &[f32]) -> reqwest::blocking::Response {
    let body: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
        .collect();
    client()
        .post(server.url(&format!("/api/transcribe?language=en&{query}")))
        .header("Content-Type", "audio/pcm;rate=16000")
        .body(body)
        .send()
        .unwrap()
}

#[test]
fn a_session_streams_across_instances_and_keeps_its_transcript() {
    let redis = Redis::start();
    let env = [("REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let servers = [
        Server::start(&env),
        Server::start(&env),
        Server::start(&env),
    ];
    let (samples, reference) = speech();
    let options = StreamOptions {
        urls: servers.iter().map(|s| s.url("/api/transcribe")).collect(),
        language: Some("en".into()),
        session_id: Some("meeting-1".into()),
        ..StreamOptions::default()
    };
    let replies = stream_samples(&samples, &options, |_| {}).unwrap();
    assert!(replies
        .iter()
        .all(|r| r.body["context"].is_null() && r.body["stream"]["session_id"] == "meeting-1"));
    let streamed = transcript(&replies);
    assert!(wer(&reference, &streamed) <= 0.10, "{streamed}");

    let stored: Value = servers[1].get_json("/api/transcribe?session_id=meeting-1");
    assert_eq!(
        stored["text"], streamed,
        "the session transcript is every final segment once"
    );
    assert_eq!(stored["seq"], replies.len() as u64);

    let deleted = client()
        .delete(servers[2].url("/api/transcribe?session_id=meeting-1"))
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let gone = client()
        .get(servers[0].url("/api/transcribe?session_id=meeting-1"))
        .send()
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[test]
fn a_retry_racing_its_original_neither_loses_nor_duplicates() {
    let redis = Redis::start();
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str())];
    let (a, b) = (Server::start(&env), Server::start(&env));
    let (samples, _) = speech();
    assert_eq!(
        post(&a, "session_id=race&seq=1", &samples[..48_000]).status(),
        200
    );

    let barrier = std::sync::Barrier::new(2);
    let chunk = &samples[48_000..96_000];
    let (first, second) = std::thread::scope(|scope| {
        let one = scope.spawn(|| {
            barrier.wait();
            post(&a, "session_id=race&seq=2", chunk)
        });
        let two = scope.spawn(|| {
            barrier.wait();
            post(&b, "session_id=race&seq=2", chunk)
        });
        (one.join().unwrap(), two.join().unwrap())
    });
    let statuses = (first.status().as_u16(), second.status().as_u16());
    let (first, second) = (first.text().unwrap(), second.text().unwrap());
    match statuses {
        (200, 200) => assert_eq!(first, second, "both answers are the one committed reply"),
        (200, 409) | (409, 200) => {}
        other => panic!("unexpected statuses {other:?}: {first} / {second}"),
    }
    // A late retry of chunk 2 gets the stored reply; a stale chunk number gets 409.
    let retry = post(&b, "session_id=race&seq=2", chunk);
    assert_eq!(retry.status(), 200);
    let committed = if statuses.0 == 200 { &first } else { &second };
    assert_eq!(&retry.text().unwrap(), committed);
    assert_eq!(post(&a, "session_id=race&seq=1", chunk).status(), 409);
    assert_eq!(post(&a, "session_id=race&seq=9", chunk).status(), 409);

    let last: Value = post(
        &a,
        "session_id=race&seq=3&final=true",
        &samples[96_000..120_000],
    )
    .json()
    .unwrap();
    assert_eq!(last["stream"]["seq"], 3);
    let stored: Value = a.get_json("/api/transcribe?session_id=race");
    let words: Vec<String> = util::normalise(stored["text"].as_str().unwrap());
    let mut deduped = words.clone();
    deduped.dedup();
    assert_eq!(words, deduped, "no word doubled: {}", stored["text"]);
}

#[test]
fn redis_down_means_503_for_sessions_only_and_recovery_after() {
    let mut redis = Redis::start();
    let url = redis.url();
    let server = Server::start(&[("REDIS_URL", url.as_str())]);
    let (samples, _) = speech();
    assert_eq!(
        post(&server, "session_id=r1&seq=1", &samples[..32_000]).status(),
        200
    );

    redis.stop();
    let down = post(&server, "session_id=r1&seq=2", &samples[32_000..64_000]);
    assert_eq!(down.status(), 503);
    assert!(down.headers().contains_key("retry-after"));
    assert_eq!(
        down.json::<Value>().unwrap()["error"]["code"],
        "sessions_unavailable"
    );
    let token_mode = post(&server, "final=true", &samples[..32_000]);
    assert_eq!(token_mode.status(), 200, "token mode does not need Redis");

    let _back = Redis::start_in(redis.dir.clone());
    let fresh = post(&server, "session_id=r2&seq=1", &samples[..32_000]);
    assert_eq!(fresh.status(), 200);
    assert!(server.stderr.lock().unwrap().is_empty());
}

#[test]
fn sessions_need_redis_and_a_valid_id() {
    let server = Server::start(&[]);
    let (samples, _) = speech();
    let r = post(&server, "session_id=x", &samples[..16_000]);
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "sessions_disabled"
    );
    let r = post(&server, "session_id=bad%20id", &samples[..16_000]);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "invalid_session_id"
    );
}
