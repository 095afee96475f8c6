//! Speaker labels: the Rust GE2E encoder against the numpy reference of resemblyzer's
//! computation, and labels from the real binary over real voices.

mod util;

use prepis::speaker::SpeakerEncoder;
use serde_json::Value;
use util::{model_dir, read_wav_i16};

fn encoder() -> SpeakerEncoder {
    let path = model_dir().join("ge2e.safetensors");
    SpeakerEncoder::load(&path).unwrap_or_else(|e| panic!("{e}: run scripts/fetch-speaker.sh"))
}

fn expected() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/speaker/expected.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn samples(path: &str) -> Vec<f32> {
    let (rate, pcm) = read_wav_i16(std::path::Path::new(path));
    assert_eq!(rate, 16_000);
    pcm.iter().map(|s| *s as f32 / 32768.0).collect()
}

#[test]
fn embeddings_match_the_reference_computation() {
    let encoder = encoder();
    let expected = expected();
    let mut got = Vec::new();
    for name in ["cards-001", "librivox-0870"] {
        let case = &expected[name];
        let want: Vec<f32> = case["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let e = encoder
            .embed(&samples(case["path"].as_str().unwrap()))
            .unwrap();
        let cosine: f32 = e.iter().zip(&want).map(|(a, b)| a * b).sum();
        let max_diff = e
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            cosine > 0.99999 && max_diff < 2e-4,
            "{name}: cosine {cosine}, max |diff| {max_diff}"
        );
        got.push(e);
    }
    let between: f32 = got[0].iter().zip(&got[1]).map(|(a, b)| a * b).sum();
    let want = expected["cosine_between"].as_f64().unwrap() as f32;
    assert!((between - want).abs() < 1e-4, "{between} vs {want}");
}

#[test]
fn voiceprints_tell_the_test_voices_apart() {
    // Every utterance of the LibriVox reader and of the cards speaker (pocketsphinx-testdata):
    // each voice's utterances are closer to each other than to any of the other voice's.
    let encoder = encoder();
    let embed = |u: &util::Utterance| encoder.embed(&samples(u.path.to_str().unwrap())).unwrap();
    let a: Vec<Vec<f32>> = util::librivox().iter().map(embed).collect();
    let b: Vec<Vec<f32>> = util::cards().iter().map(embed).collect();
    let cos = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    let centroid = |v: &[&Vec<f32>]| {
        let mut m = vec![0.0f32; v[0].len()];
        for x in v {
            m.iter_mut().zip(x.iter()).for_each(|(a, b)| *a += b);
        }
        let n = m.iter().map(|x| x * x).sum::<f32>().sqrt();
        m.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    // Each utterance against the centroid of the rest of its voice and of the other voice.
    for (own, other) in [(&a, &b), (&b, &a)] {
        let other_centroid = centroid(&other.iter().collect::<Vec<_>>());
        for (i, x) in own.iter().enumerate() {
            let rest: Vec<&Vec<f32>> = own
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, y)| y)
                .collect();
            let (same, across) = (cos(x, &centroid(&rest)), cos(x, &other_centroid));
            println!("utterance {i}: own voice {same:.3}, other voice {across:.3}");
            assert!(
                same > across + 0.1,
                "utterance {i}: own {same}, other {across}"
            );
        }
    }
}

/// Two voices taking turns: the LibriVox reader, the cards speaker (all five commands), the
/// reader again; with the reference speaker (0 or 1) of every second.
fn two_voices() -> (Vec<f32>, Vec<(f64, f64, usize)>) {
    let (l, c) = (util::librivox(), util::cards());
    let mut audio = Vec::new();
    let mut turns = Vec::new();
    for (who, utterances) in [(0, &l[0..2]), (1, &c[..]), (0, &l[2..4])] {
        let start = audio.len() as f64 / 16_000.0;
        for u in utterances {
            audio.extend(samples(u.path.to_str().unwrap()));
            audio.extend(std::iter::repeat_n(0.0, 4_000));
        }
        turns.push((start, audio.len() as f64 / 16_000.0, who));
        audio.extend(std::iter::repeat_n(0.0, 8_000));
    }
    (audio, turns)
}

/// Streams 2 s chunks of raw PCM round-robin over `servers` with `query`; every final segment.
fn stream(servers: &[&util::Server], audio: &[f32], query: &str) -> Vec<Value> {
    let chunks: Vec<&[f32]> = audio.chunks(32_000).collect();
    let mut context: Option<String> = None;
    let mut segments = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let body: Vec<u8> = chunk
            .iter()
            .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
            .collect();
        let last = i + 1 == chunks.len();
        let server = servers[i % servers.len()];
        let mut request = util::client()
            .post(server.url(&format!("/api/transcribe?language=en&final={last}&{query}")))
            .header("Content-Type", "audio/pcm;rate=16000")
            .body(body);
        if let Some(c) = &context {
            request = request.header("X-Prepis-Context", c);
        }
        let reply: Value = request.send().unwrap().json().unwrap();
        assert!(reply["error"].is_null(), "{reply}");
        context = reply["context"].as_str().map(str::to_string);
        segments.extend(reply["results"].as_array().unwrap().iter().cloned());
    }
    segments
}

fn labels(segments: &[Value]) -> Vec<Option<u64>> {
    segments.iter().map(|s| s["speaker"].as_u64()).collect()
}

#[test]
fn labels_follow_the_voices_and_agree_across_instances() {
    let env = [(
        "PREPIS_CONTEXT_KEY",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    )];
    let (audio, turns) = two_voices();
    let one = util::Server::start(&env);
    let segments = stream(&[&one], &audio, "");
    // Each segment's label against the reference voice at its middle.
    let mut mapping = std::collections::HashMap::new();
    let mut wrong = 0.0;
    let mut total = 0.0;
    for s in &segments {
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        let middle = (start + end) / 2.0;
        let who = turns
            .iter()
            .find(|t| t.0 <= middle && middle < t.1)
            .unwrap()
            .2;
        // Speech before the first second of a voice is heard has no label yet (never a guess).
        let Some(label) = s["speaker"].as_u64() else {
            assert!(
                mapping.is_empty() && end < 3.0,
                "only the first words may lack a label: {s}"
            );
            continue;
        };
        let confidence = s["speaker_confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&confidence), "{s}");
        if end - start < 1.0 {
            assert!(confidence <= 0.5, "a short segment is never sure: {s}");
        }
        println!(
            "{start:.2}-{end:.2} ref={who} hyp={label} conf={confidence} {}",
            s["text"]
        );
        let expected = *mapping.entry(who).or_insert(label);
        total += end - start;
        if label != expected {
            wrong += end - start;
        }
    }
    let found: std::collections::HashSet<_> = labels(&segments).into_iter().flatten().collect();
    assert_eq!(found.len(), 2, "two voices: {found:?}");
    assert_eq!(mapping[&0], 1, "labels count from 1 in order of appearance");
    // Live labels lag a change of voice by a few short segments (see the README).
    assert!(
        wrong / total < 0.15,
        "{:.0} % of speech mislabelled",
        100.0 * wrong / total
    );

    // Three instances, round-robin: the same labels.
    let (a, b, c) = (
        util::Server::start(&env),
        util::Server::start(&env),
        util::Server::start(&env),
    );
    let spread = stream(&[&a, &b, &c], &audio, "");
    assert_eq!(labels(&spread), labels(&segments));

    // Options: off, and a cap of one speaker.
    let off = stream(&[&one], &audio, "diarize=false");
    assert!(off
        .iter()
        .all(|s| s["speaker"].is_null() && s["speaker_confidence"].is_null()));
    let capped = stream(&[&one], &audio, "max_speakers=1");
    let capped = labels(&capped);
    assert!(
        capped.iter().all(|l| l.is_none_or(|n| n == 1)) && capped.contains(&Some(1)),
        "{capped:?}"
    );
}

#[test]
fn silence_has_no_speakers_and_bad_options_are_refused() {
    let server = util::Server::start(&[]);
    assert!(stream(&[&server], &vec![0.0; 16_000 * 5], "").is_empty());
    let r = util::client()
        .post(server.url("/api/transcribe?max_speakers=0"))
        .header("Content-Type", "audio/pcm;rate=16000")
        .body(vec![0u8; 3_200])
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let status = server.get_json("/api/status");
    assert_eq!(status["speakers"]["loaded"], true, "{status}");
}
