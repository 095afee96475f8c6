//! Where one Whisper call's time goes: `cargo bench --bench engine` times creating a decoder
//! state and transcribing real speech cut to 2-30 s windows (the encoder window follows the
//! audio, with the configured floor), with `PREPIS_THREADS` threads (default 2).
//! Under `cargo test` it runs one 2 s window as a smoke test.

use std::time::Instant;

use prepis::asr::{DecodeOptions, Transcriber, WhisperEngine};

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let cache = std::env::var("PREPIS_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/prepis", std::env::var("HOME").unwrap()));
    let model = std::env::var("BENCH_MODEL_FILE")
        .unwrap_or_else(|_| format!("{cache}/models/ggml-base.bin"));
    let model = std::path::PathBuf::from(model);
    let name = std::env::var("BENCH_MODEL_NAME").unwrap_or_else(|_| "base".into());
    let threads: usize = std::env::var("PREPIS_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let floor: f64 = std::env::var("PREPIS_MIN_WINDOW_SECONDS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(10.0);
    let engine = WhisperEngine::load(&model, &name, threads, floor).expect("model");
    let speech = speech();
    let rounds = if benchmarking { 5 } else { 1 };
    let windows: &[f64] = if benchmarking {
        &[2.0, 6.0, 10.0, 20.0, 30.0]
    } else {
        &[2.0]
    };
    let options = DecodeOptions {
        language: Some("en".into()),
        ..DecodeOptions::default()
    };
    println!("| window s | ms (median of {rounds}) | words | GFLOP (est.) | GFLOP/s |");
    println!("|---|---|---|---|---|");
    for &seconds in windows {
        let piece = &speech[..(seconds * 16_000.0) as usize];
        engine.transcribe(piece, &options).unwrap();
        let mut times = Vec::new();
        let mut words = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            let transcript = engine.transcribe(piece, &options).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            words = transcript.segments.iter().map(|s| s.words.len()).sum();
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let positions = (seconds.max(floor) * 50.0).min(1500.0);
        let tokens = words as f64 * 1.4 + 4.0;
        let gflop = (encoder_flop(positions) + decoder_flop(positions, tokens)) / 1e9;
        println!(
            "| {seconds} | {median:.1} | {words} | {gflop:.1} | {:.0} |",
            gflop / (median / 1000.0)
        );
    }
}

/// Whisper base's shape.
const D: f64 = 512.0;
const LAYERS: f64 = 6.0;
const FF: f64 = 2048.0;
const MELS: f64 = 80.0;
const VOCAB: f64 = 51865.0;

/// Multiply-adds counted as 2 FLOP: the two convolutions over `2n` mel frames, then per layer
/// the four attention projections, the n x n attention and the feed-forward block.
fn encoder_flop(n: f64) -> f64 {
    let convs = 2.0 * (2.0 * n) * D * MELS * 3.0 + 2.0 * n * D * D * 3.0;
    let layer = 4.0 * 2.0 * n * D * D + 2.0 * 2.0 * n * n * D + 2.0 * 2.0 * n * D * FF;
    convs + LAYERS * layer
}

/// The cross-attention keys and values once, then per token: self-attention projections,
/// cross-attention query/output and its n positions, feed-forward, and the logits.
fn decoder_flop(n: f64, tokens: f64) -> f64 {
    let cross = LAYERS * 2.0 * 2.0 * n * D * D;
    let layer = 4.0 * 2.0 * D * D + 2.0 * 2.0 * D * D + 2.0 * 2.0 * n * D + 2.0 * 2.0 * D * FF;
    cross + tokens * (LAYERS * layer + 2.0 * D * VOCAB)
}

/// LibriVox then cards from pocketsphinx's test data, 16 kHz mono.
fn speech() -> Vec<f32> {
    let dir = "/usr/share/pocketsphinx/test/data";
    let mut paths: Vec<_> = ["librivox", "cards"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(format!("{dir}/{d}"))
                .unwrap()
                .map(|e| e.unwrap().path())
        })
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    paths.sort_by_key(|p| (!p.to_string_lossy().contains("librivox"), p.clone()));
    let mut samples = Vec::new();
    for p in paths {
        let bytes = std::fs::read(&p).unwrap();
        samples.extend(
            bytes[44..]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0),
        );
    }
    samples
}
