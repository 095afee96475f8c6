//! Speaker work per chunk: `cargo bench --bench speaker` times the GE2E encoder embedding real
//! speech of 1-8 s (median of 10), with the LSTM's arithmetic and the achieved GFLOP/s.
//! Under `cargo test` it embeds one 2 s stretch as a smoke test.

use std::time::Instant;

use prepis::speaker::Ge2eEncoder;

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let cache = std::env::var("PREPIS_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/prepis", std::env::var("HOME").unwrap()));
    let encoder = Ge2eEncoder::load(format!("{cache}/models/ge2e.safetensors").as_ref())
        .expect("speaker model");
    let speech = speech();
    let rounds = if benchmarking { 10 } else { 1 };
    let lengths: &[f64] = if benchmarking {
        &[1.0, 2.0, 4.0, 8.0]
    } else {
        &[2.0]
    };
    println!("| speech s | partials | ms (median of {rounds}) | GFLOP | GFLOP/s |");
    println!("|---|---|---|---|---|");
    for &seconds in lengths {
        let piece = &speech[..(seconds * 16_000.0) as usize];
        let print = encoder.embed(piece).expect("a voiceprint");
        assert_eq!(print.len(), 256);
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            std::hint::black_box(encoder.embed(piece));
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let partials = partials(piece.len());
        // Per partial: 160 frames, three layers of input and recurrent products (4 gates).
        let gflop =
            partials as f64 * 160.0 * 2.0 * 1024.0 * (40.0 + 3.0 * 256.0 + 2.0 * 256.0) / 1e9;
        println!(
            "| {seconds} | {partials} | {median:.1} | {gflop:.2} | {:.1} |",
            gflop / (median / 1000.0)
        );
    }
}

/// resemblyzer's partial count: 1.6 s partials every 0.77 s, the last one kept at 75 % coverage.
fn partials(samples: usize) -> usize {
    let frames = (samples + 1).div_ceil(160);
    let steps = (frames + 78).saturating_sub(160).max(1);
    let mut n = steps.div_ceil(77);
    let last = (n - 1) * 77;
    if n > 1 && (samples as f64 - (last * 160) as f64) / 25_600.0 < 0.75 {
        n -= 1;
    }
    n
}

/// LibriVox from pocketsphinx's test data, 16 kHz mono.
fn speech() -> Vec<f32> {
    let dir = "/usr/share/pocketsphinx/test/data/librivox";
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    paths.sort();
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
