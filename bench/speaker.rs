//! Speaker work per chunk: `cargo bench --bench speaker` times the GE2E encoder embedding real
//! speech of 1-8 s (median of 10), with the LSTM's arithmetic and the achieved GFLOP/s.
//! Under `cargo test` it embeds one 2 s stretch as a smoke test.
//!
//! `cargo bench --bench speaker -- --study tune` (or `test`) measures what the voiceprints can
//! tell apart: pieces of 1-5 s cut from each reference turn of the speaker streams
//! (`bench/speakers.py build`), the cosine of pairs of one voice and of two voices, the
//! equal-error threshold between them, and how often a piece's nearest voice (by the mean of
//! that voice's other pieces in the stream) is its own; then, per stream, the closest two
//! voices' means against the furthest-apart two modes of one voice.

use std::time::Instant;

use prepis::speaker::Ge2eEncoder;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benchmarking = args.iter().any(|a| a == "--bench");
    let cache = std::env::var("PREPIS_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/prepis", std::env::var("HOME").unwrap()));
    let encoder = Ge2eEncoder::load(format!("{cache}/models/ge2e.safetensors").as_ref())
        .expect("speaker model");
    if let Some(i) = args.iter().position(|a| a == "--study") {
        let split = args.get(i + 1).map_or("tune", String::as_str);
        study(
            &encoder,
            &format!("{cache}/speaker-streams-v3/{split}"),
            split,
        );
        return;
    }
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

/// Separability of voices by voiceprint on the speaker streams of one half.
fn study(encoder: &Ge2eEncoder, streams: &str, split: &str) {
    println!("| stream | piece s | pieces | pairs: same voice p5 / p50 | pairs: other voice p50 / p95 | pairs: equal-error threshold / rate | to own voice's mean p5 / p50 | to nearest other voice's mean p50 / p95 | nearest voice right |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut names: Vec<_> = std::fs::read_dir(streams)
        .expect("bench/speakers.py build first")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    names.sort();
    let mut studied = Vec::new();
    for wav in names {
        let name = wav.file_stem().unwrap().to_string_lossy().to_string();
        let audio = read_wav(&wav);
        let rttm = std::fs::read_to_string(format!("bench/speakers/{split}/{name}.rttm")).unwrap();
        let turns: Vec<(f64, f64, String)> = rttm
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let start: f64 = f.get(3)?.parse().ok()?;
                Some((
                    start,
                    start + f.get(4)?.parse::<f64>().ok()?,
                    f.get(7)?.to_string(),
                ))
            })
            .collect();
        studied.push((name.clone(), audio.clone(), turns.clone()));
        for piece_s in [0.5, 0.75, 1.0, 2.0, 3.0, 5.0] {
            let mut pieces: Vec<(String, Vec<f32>)> = Vec::new();
            for (start, end, who) in &turns {
                let mut t = start + 0.1;
                while t + piece_s <= end - 0.1 {
                    let (a, b) = ((t * 16_000.0) as usize, ((t + piece_s) * 16_000.0) as usize);
                    if let Some(v) = encoder.embed(&audio[a..b.min(audio.len())]) {
                        pieces.push((who.clone(), v));
                    }
                    t += piece_s;
                }
            }
            let (mut same, mut other) = (Vec::new(), Vec::new());
            for i in 0..pieces.len() {
                for j in i + 1..pieces.len() {
                    let c = cos(&pieces[i].1, &pieces[j].1);
                    if pieces[i].0 == pieces[j].0 {
                        same.push(c)
                    } else {
                        other.push(c)
                    }
                }
            }
            if same.is_empty() || other.is_empty() {
                continue; // too few pieces of this length to compare
            }
            let voices: std::collections::BTreeSet<&String> = pieces.iter().map(|p| &p.0).collect();
            let (mut own, mut rival, mut right) = (Vec::new(), Vec::new(), 0);
            for (i, (who, v)) in pieces.iter().enumerate() {
                let mine = centroid_cos(&pieces, i, who, v);
                let best_other = voices
                    .iter()
                    .filter(|w| **w != who)
                    .map(|w| centroid_cos(&pieces, i, w, v))
                    .fold(f32::MIN, f32::max);
                own.push(mine);
                rival.push(best_other);
                right += usize::from(mine > best_other);
            }
            for v in [&mut same, &mut other, &mut own, &mut rival] {
                v.sort_by(f32::total_cmp);
            }
            let q = |v: &[f32], p: f64| {
                v.get(((v.len() as f64 - 1.0) * p) as usize)
                    .copied()
                    .unwrap_or(f32::NAN)
            };
            let (threshold, rate) = equal_error(&same, &other);
            println!(
                "| {name} | {piece_s} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {threshold:.2} / {:.1} % | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} % |",
                pieces.len(),
                q(&same, 0.05),
                q(&same, 0.5),
                q(&other, 0.5),
                q(&other, 0.95),
                rate * 100.0,
                q(&own, 0.05),
                q(&own, 0.5),
                q(&rival, 0.5),
                q(&rival, 0.95),
                right as f64 * 100.0 / pieces.len().max(1) as f64
            );
        }
    }
    println!();
    println!("| stream | closest two voices: cosine of their means (3 s pieces) | one voice's two modes: cosine of their means |");
    println!("|---|---|---|");
    for (name, audio, turns) in &studied {
        modes(encoder, name, audio, turns);
    }
}

/// Voices against their own modes, from 3 s pieces: the cosine of two voices' means (the
/// closest pair of the stream), and of the two modes of one voice (its pieces split in two by
/// spherical 2-means; the voice whose modes are furthest apart). Where the second is lower
/// than the first, no similarity threshold both keeps that voice whole and the two voices
/// apart.
fn modes(encoder: &Ge2eEncoder, name: &str, audio: &[f32], turns: &[(f64, f64, String)]) {
    let mut by_voice: std::collections::BTreeMap<&str, Vec<Vec<f32>>> = Default::default();
    for (start, end, who) in turns {
        let mut t = start + 0.1;
        while t + 3.0 <= end - 0.1 {
            let (a, b) = ((t * 16_000.0) as usize, ((t + 3.0) * 16_000.0) as usize);
            if let Some(v) = encoder.embed(&audio[a..b.min(audio.len())]) {
                by_voice.entry(who.as_str()).or_default().push(v);
            }
            t += 3.0;
        }
    }
    let voices: Vec<(&str, Vec<f32>)> = by_voice.iter().map(|(w, p)| (*w, mean(p))).collect();
    let mut closest = (f32::MIN, String::new());
    for (i, (a, x)) in voices.iter().enumerate() {
        for (b, y) in &voices[i + 1..] {
            let c = cos(x, y);
            if c > closest.0 {
                closest = (c, format!("{a} / {b}"));
            }
        }
    }
    let mut apart = (f32::MAX, String::new());
    for (who, pieces) in &by_voice {
        if let Some((x, y)) = two_modes(pieces) {
            let c = cos(&x, &y);
            if c < apart.0 {
                apart = (c, who.to_string());
            }
        }
    }
    let modes = if apart.1.is_empty() {
        "– (no voice with 4 pieces)".to_string()
    } else {
        format!("{:.2} ({})", apart.0, apart.1)
    };
    println!("| {name} | {:.2} ({}) | {modes} |", closest.0, closest.1);
}

/// The unit mean of vectors.
fn mean(vectors: &[Vec<f32>]) -> Vec<f32> {
    let mut m = vec![0.0f32; vectors[0].len()];
    for v in vectors {
        m.iter_mut().zip(v).for_each(|(a, x)| *a += x);
    }
    let norm = cos(&m, &m).sqrt().max(1e-9);
    m.iter_mut().for_each(|a| *a /= norm);
    m
}

/// Spherical 2-means from the two least alike pieces: the two modes' unit means.
fn two_modes(pieces: &[Vec<f32>]) -> Option<(Vec<f32>, Vec<f32>)> {
    if pieces.len() < 4 {
        return None;
    }
    let mut far = (f32::MAX, 0, 1);
    for i in 0..pieces.len() {
        for j in i + 1..pieces.len() {
            let c = cos(&pieces[i], &pieces[j]);
            if c < far.0 {
                far = (c, i, j);
            }
        }
    }
    let (mut x, mut y) = (pieces[far.1].clone(), pieces[far.2].clone());
    for _ in 0..20 {
        let (ours, theirs): (Vec<_>, Vec<_>) =
            pieces.iter().partition(|p| cos(p, &x) >= cos(p, &y));
        if ours.is_empty() || theirs.is_empty() {
            return None;
        }
        let owned = |v: Vec<&Vec<f32>>| v.into_iter().cloned().collect::<Vec<_>>();
        (x, y) = (mean(&owned(ours)), mean(&owned(theirs)));
    }
    Some((x, y))
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Cosine of piece `i` with the mean of the other pieces of voice `who`.
fn centroid_cos(pieces: &[(String, Vec<f32>)], i: usize, who: &String, v: &[f32]) -> f32 {
    let mut mean = vec![0.0f32; v.len()];
    for (j, (w, p)) in pieces.iter().enumerate() {
        if j != i && w == who {
            mean.iter_mut().zip(p).for_each(|(m, x)| *m += x);
        }
    }
    let norm = cos(&mean, &mean).sqrt().max(1e-9);
    cos(&mean, v) / norm
}

/// The threshold where the share of same-voice pairs below it equals the share of other-voice
/// pairs above it (both sorted), and that share.
fn equal_error(same: &[f32], other: &[f32]) -> (f32, f64) {
    if same.is_empty() || other.is_empty() {
        return (f32::NAN, f64::NAN);
    }
    (0..=200)
        .map(|step| {
            let t = step as f32 / 200.0;
            let miss = same.partition_point(|&c| c < t) as f64 / same.len() as f64;
            let accept = 1.0 - other.partition_point(|&c| c < t) as f64 / other.len() as f64;
            (t, miss, accept)
        })
        .min_by(|a, b| (a.1 - a.2).abs().total_cmp(&(b.1 - b.2).abs()))
        .map(|(t, miss, accept)| (t, (miss + accept) / 2.0))
        .unwrap_or((f32::NAN, f64::NAN))
}

/// A 16 kHz mono 16-bit WAV's samples in -1..1 (its `data` chunk, after any others).
fn read_wav(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 12;
    while &bytes[at..at + 4] != b"data" {
        at += 8 + u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    bytes[at + 8..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}
