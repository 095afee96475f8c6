//! Decode cost per second of audio for every container prepis accepts, next to what Whisper
//! costs for the same audio: `cargo bench --bench decode` (a result table on stdout).
//! Under `cargo test` it decodes each fixture once, as a smoke test.

use std::time::Instant;

use prepis::audio::{decode_chunk, decode_stream_chunk, DecodeLimits};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let rounds = if benchmarking { 50 } else { 1 };
    let limits = DecodeLimits { max_seconds: 600.0 };
    let wav = std::fs::read(
        "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    )
    .ok();
    let mut files: Vec<(String, Vec<u8>)> = [
        "formats/speech.ogg",
        "formats/speech-live.webm",
        "formats/speech-frag.m4a",
        "formats/speech.mp3",
        "formats/speech.flac",
    ]
    .iter()
    .map(|f| {
        (
            f.to_string(),
            std::fs::read(format!("{FIXTURES}/{f}")).unwrap(),
        )
    })
    .collect();
    if let Some(wav) = wav {
        files.insert(0, ("librivox 0870 (WAV 16 kHz)".into(), wav));
    }
    println!("| input | audio s | decode ms (median of {rounds}) | ms per audio s |");
    println!("|---|---|---|---|");
    for (name, bytes) in &files {
        let mut times = Vec::new();
        let mut seconds = 0.0;
        for _ in 0..rounds {
            let t = Instant::now();
            let audio = decode_chunk(bytes, None, limits).expect(name);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            seconds = audio.duration();
        }
        report(name, seconds, &mut times);
    }
    // A Chromium timeslice recording, blob by blob as a stream decodes it.
    let mut blobs: Vec<_> = std::fs::read_dir(format!("{FIXTURES}/browser/webm-opus"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    blobs.sort();
    let blobs: Vec<Vec<u8>> = blobs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let mut times = Vec::new();
    let mut seconds = 0.0;
    for _ in 0..rounds {
        let t = Instant::now();
        let mut kept = None;
        seconds = 0.0;
        for (i, blob) in blobs.iter().enumerate() {
            let last = i + 1 == blobs.len();
            let (audio, recording) =
                decode_stream_chunk(blob, Some("audio/webm"), limits, kept.as_ref(), last).unwrap();
            kept = recording;
            seconds += audio.duration();
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    report("Chromium WebM/Opus, 6 timeslice blobs", seconds, &mut times);
}

fn report(name: &str, seconds: f64, times: &mut [f64]) {
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "| {name} | {seconds:.2} | {median:.2} | {:.3} |",
        median / seconds
    );
}
