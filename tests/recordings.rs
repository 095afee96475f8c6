//! MediaRecorder timeslice streams on the real binary and model: blobs recorded by headless
//! Chromium (`MediaRecorder.start(2000)`, only the first with a header), and ffmpeg files cut
//! at arbitrary bytes, streamed round-robin over three instances with the context token.

mod util;

use prepis::client::{stream_samples, transcript, StreamOptions};
use serde_json::Value;
use util::{client, librivox, read_wav_i16, wer, Server};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// The bound on word errors against the reference of the two LibriVox utterances (38 words).
const MAX_WER: f64 = 0.1;

fn reference() -> String {
    let u = librivox();
    format!("{} {}", u[0].reference, u[1].reference)
}

/// The blobs a browser recorded, in order.
fn browser_blobs(kind: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(format!("{FIXTURES}/browser/{kind}"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Posts one blob; returns the status and body.
fn post(
    server: &Server,
    blob: &[u8],
    content_type: &str,
    context: Option<&str>,
    last: bool,
) -> (u16, Value) {
    let mut request = client()
        .post(server.url(&format!("/api/transcribe?final={last}")))
        .header("Content-Type", content_type)
        .body(blob.to_vec());
    if let Some(context) = context {
        request = request.header("X-Prepis-Context", context);
    }
    let r = request.send().unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

/// Streams blobs round-robin over `servers`, echoing the context; every reply must be a 200.
fn stream_blobs(servers: &[&Server], blobs: &[Vec<u8>], content_type: &str) -> Vec<Value> {
    let mut context: Option<String> = None;
    let mut replies = Vec::new();
    for (i, blob) in blobs.iter().enumerate() {
        let server = servers[i % servers.len()];
        let (status, body) = post(
            server,
            blob,
            content_type,
            context.as_deref(),
            i + 1 == blobs.len(),
        );
        assert_eq!(status, 200, "blob {i}: {body}");
        context = body["context"].as_str().map(str::to_string);
        replies.push(body);
    }
    replies
}

fn text(replies: &[Value]) -> String {
    replies
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn total_duration(replies: &[Value]) -> f64 {
    replies
        .iter()
        .map(|r| r["duration"].as_f64().unwrap())
        .sum()
}

/// The whole recording (all blobs joined) in one request.
fn whole(server: &Server, bytes: &[u8], content_type: &str) -> Value {
    let (status, body) = post(server, bytes, content_type, None, true);
    assert_eq!(status, 200, "{body}");
    body
}

fn three() -> (Server, Server, Server) {
    let env = [("PREPIS_CONTEXT_KEY", KEY), ("PREPIS_LANGUAGE", "en")];
    (
        Server::start(&env),
        Server::start(&env),
        Server::start(&env),
    )
}

#[test]
fn chromium_timeslice_blobs_stream_round_robin_like_the_wav_stream() {
    let (a, b, c) = three();
    let servers = [&a, &b, &c];
    let reference = reference();

    // The same speech as WAV, streamed in 2 s chunks over the same instances.
    let mut samples = Vec::new();
    for u in &librivox()[..2] {
        let (_, pcm) = read_wav_i16(&u.path);
        samples.extend(pcm.iter().map(|s| *s as f32 / 32768.0));
    }
    let options = StreamOptions {
        urls: servers.iter().map(|s| s.url("/api/transcribe")).collect(),
        language: Some("en".into()),
        ..StreamOptions::default()
    };
    let wav_text = transcript(&stream_samples(&samples, &options, |_| {}).unwrap());
    assert!(
        wer(&reference, &wav_text) <= MAX_WER,
        "WAV stream: {wav_text}"
    );

    for (kind, content_type) in [
        ("webm-opus", "audio/webm;codecs=opus"),
        ("mp4-opus", "audio/mp4;codecs=opus"),
    ] {
        let blobs = browser_blobs(kind);
        assert!(
            blobs.len() >= 5,
            "{kind}: the recording is cut into 2 s blobs"
        );
        let replies = stream_blobs(&servers, &blobs, content_type);
        let streamed = text(&replies);
        assert!(
            wer(&wav_text, &streamed) <= MAX_WER && wer(&reference, &streamed) <= MAX_WER,
            "{kind}: streamed {streamed:?}, WAV stream {wav_text:?}"
        );
        // Sample-accurate: the blobs decode to exactly the whole recording's samples.
        let joined: Vec<u8> = blobs.concat();
        let one = whole(&a, &joined, content_type);
        let (parts, all) = (total_duration(&replies), one["duration"].as_f64().unwrap());
        assert!(
            (parts - all).abs() < 0.002,
            "{kind}: blobs {parts} s, whole {all} s"
        );
        assert!(
            wer(&reference, one["text"].as_str().unwrap()) <= MAX_WER,
            "{kind} whole: {one}"
        );
        // Every blob after the first lacks a header, and yet every blob was heard.
        for (i, reply) in replies.iter().enumerate() {
            let warnings = reply["warnings"].as_array().unwrap();
            if reply["duration"].as_f64().unwrap() == 0.0 {
                assert_eq!(i, 0, "{kind}: only the header-only first blob may be empty");
                assert_eq!(
                    warnings.len(),
                    1,
                    "{kind}: an empty decode says why: {reply}"
                );
            } else {
                assert!(warnings.is_empty(), "{kind} blob {i}: {reply}");
            }
        }
    }
}

/// Cuts `bytes` into `n` pieces at offsets that fall inside elements, not on their edges.
fn cut_anywhere(bytes: &[u8], n: usize) -> Vec<Vec<u8>> {
    let step = bytes.len() / n;
    let mut cuts: Vec<usize> = (1..n).map(|k| k * step + 13 * k + 1).collect();
    cuts.insert(0, 0);
    cuts.push(bytes.len());
    cuts.windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

#[test]
fn recordings_cut_at_any_byte_stream_sample_accurately() {
    let (a, b, c) = three();
    let servers = [&a, &b, &c];
    let reference = reference();
    for (file, content_type) in [
        ("speech.ogg", "audio/ogg;codecs=opus"),
        ("speech-live.webm", "audio/webm;codecs=opus"),
        ("speech-frag.m4a", "audio/mp4"),
    ] {
        let bytes = std::fs::read(format!("{FIXTURES}/formats/{file}")).unwrap();
        let mut pieces = cut_anywhere(&bytes, 5);
        // A sliver that completes no element: nothing to decode yet, and it says so.
        let at = pieces[2].len() - 7;
        let sliver = pieces[2].split_off(at);
        pieces.insert(3, sliver);
        let replies = stream_blobs(&servers, &pieces, content_type);
        let all = whole(&a, &bytes, content_type)["duration"]
            .as_f64()
            .unwrap();
        let parts = total_duration(&replies);
        assert!(
            (parts - all).abs() < 0.002,
            "{file}: pieces {parts} s, whole {all} s"
        );
        let streamed = text(&replies);
        assert!(wer(&reference, &streamed) <= MAX_WER, "{file}: {streamed}");
        let sliver_reply = &replies[3];
        assert_eq!(sliver_reply["duration"], 0.0, "{file}: {sliver_reply}");
        assert_eq!(sliver_reply["warnings"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn damaged_and_headerless_blobs_are_reported_never_silent() {
    let server = Server::start(&[("PREPIS_CONTEXT_KEY", KEY), ("PREPIS_LANGUAGE", "en")]);
    let blobs = browser_blobs("webm-opus");

    // A later blob with no stream context: 422, telling the client what to send.
    for (blob, content_type) in [
        (&blobs[2], "audio/webm;codecs=opus"),
        (&browser_blobs("mp4-opus")[2], "audio/mp4"),
    ] {
        let (status, body) = post(&server, blob, content_type, None, false);
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "headerless_chunk", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("first blob"), "{message}");
    }

    // Garbage inside a stream is skipped to the next cluster, with a warning; the stream
    // goes on and keeps what it had.
    let (_, first) = post(&server, &blobs[0], "audio/webm", None, false);
    let mut damaged = vec![0u8; 300];
    damaged.extend_from_slice(&blobs[1][..blobs[1].len() / 2]);
    let (status, body) = post(
        &server,
        &damaged,
        "audio/webm",
        first["context"].as_str(),
        false,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("damaged bytes"),
        "{body}"
    );
    let (status, last) = post(
        &server,
        &blobs[2],
        "audio/webm",
        body["context"].as_str(),
        true,
    );
    assert_eq!(status, 200, "{last}");
    assert!(
        last["stream"]["received_until"].as_f64().unwrap() > 2.0,
        "{last}"
    );
}
