//! Voice activity detection with earshot (a small pure-Rust detector, 16 ms frames at
//! 16 kHz). Used to keep Whisper away from silence and noise, where it invents text.

use earshot::Detector;

/// Samples per detector frame (16 ms at 16 kHz).
const FRAME: usize = 256;
/// Frame score above which a frame counts as speech.
const SPEECH_SCORE: f32 = 0.5;

/// How much speech a piece of audio holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeechActivity {
    /// Seconds of frames scored as speech.
    pub speech_seconds: f64,
    /// Seconds analysed.
    pub total_seconds: f64,
}

impl SpeechActivity {
    /// Whether there is enough speech to be worth transcribing.
    pub fn has_speech(&self, min_speech_seconds: f64) -> bool {
        self.speech_seconds >= min_speech_seconds
    }
}

/// Whether each 16 ms frame of 16 kHz mono audio is speech.
fn speech_frames(samples: &[f32]) -> Vec<bool> {
    let mut detector = Detector::default();
    let mut frame = [0f32; FRAME];
    samples
        .chunks(FRAME)
        .map(|chunk| {
            frame.fill(0.0);
            for (dst, src) in frame.iter_mut().zip(chunk) {
                *dst = src.clamp(-1.0, 1.0);
            }
            detector.predict_f32(&frame) > SPEECH_SCORE
        })
        .collect()
}

fn frames_to_seconds(frames: usize) -> f64 {
    (frames * FRAME) as f64 / 16_000.0
}

/// How much of 16 kHz mono audio is speech.
pub fn speech_activity(samples: &[f32]) -> SpeechActivity {
    let frames = speech_frames(samples);
    SpeechActivity {
        speech_seconds: frames_to_seconds(frames.iter().filter(|s| **s).count()),
        total_seconds: frames_to_seconds(frames.len()),
    }
}

/// Seconds of non-speech frames at the end of the audio.
pub fn trailing_silence_seconds(samples: &[f32]) -> f64 {
    frames_to_seconds(
        speech_frames(samples)
            .iter()
            .rev()
            .take_while(|s| !**s)
            .count(),
    )
}

/// The pauses — runs of at least `min_ms` of non-speech between two stretches of speech —
/// as (start, end) in ms from the beginning of the audio, in order.
pub fn pauses_ms(samples: &[f32], min_ms: u64) -> Vec<(u64, u64)> {
    let frames = speech_frames(samples);
    let min_frames = (min_ms as usize * 16).div_ceil(FRAME).max(1);
    let ms = |frame: usize| (frame * FRAME) as u64 * 1000 / 16_000;
    let mut pauses = Vec::new();
    let mut run_start = None;
    let mut heard_speech = false;
    for (i, speech) in frames.iter().enumerate() {
        match (*speech, run_start) {
            (false, None) if heard_speech => run_start = Some(i),
            (true, Some(start)) => {
                if i - start >= min_frames {
                    pauses.push((ms(start), ms(i)));
                }
                run_start = None;
            }
            _ => {}
        }
        heard_speech |= *speech;
    }
    pauses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_hum_are_not_speech() {
        assert_eq!(speech_activity(&vec![0.0; 32_000]).speech_seconds, 0.0);
        let hum: Vec<f32> = (0..32_000)
            .map(|i| (2.0 * std::f32::consts::PI * 50.0 * i as f32 / 16_000.0).sin() * 0.3)
            .collect();
        assert!(!speech_activity(&hum).has_speech(0.2));
        assert!((trailing_silence_seconds(&vec![0.0; 16_000]) - 1.0).abs() < 0.02);
    }
}
