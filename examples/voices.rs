use prepis::audio::{decode_chunk, DecodeLimits};
use prepis::speaker::SpeakerEncoder;
fn main() {
    let enc = SpeakerEncoder::load(std::path::Path::new(&format!(
        "{}/.cache/prepis/models/ge2e.safetensors",
        std::env::var("HOME").unwrap()
    )))
    .unwrap();
    let mut cents = Vec::new();
    for lang in ["en", "fr", "it", "ru"] {
        let mut files: Vec<_> = std::fs::read_dir(format!("/usr/share/asterisk/sounds/{lang}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wav"))
            .collect();
        files.sort();
        let mut embs = Vec::new();
        for f in files.iter().take(60) {
            let a = decode_chunk(
                &std::fs::read(f).unwrap(),
                None,
                DecodeLimits { max_seconds: 60.0 },
            )
            .unwrap();
            if a.samples.len() < 16000 {
                continue;
            }
            embs.push((
                a.samples.len() as f32 / 16000.0,
                enc.embed(&a.samples).unwrap(),
            ));
        }
        cents.push((lang, embs));
    }
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for (la, ea) in &cents {
        for (lb, eb) in &cents {
            let mut s = Vec::new();
            for (i, (_, x)) in ea.iter().enumerate() {
                for (j, (_, y)) in eb.iter().enumerate() {
                    if la != lb || i < j {
                        s.push(cos(x, y));
                    }
                }
            }
            s.sort_by(f32::total_cmp);
            let n = s.len();
            print!(
                "{la}-{lb}: p5 {:.2} p50 {:.2} p95 {:.2} | ",
                s[n / 20],
                s[n / 2],
                s[n * 19 / 20]
            );
        }
        println!();
    }
}
