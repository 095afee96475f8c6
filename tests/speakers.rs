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
