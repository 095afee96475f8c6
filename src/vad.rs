//! Voice activity detection with earshot (a small pure-Rust detector, 16 ms frames at
//! 16 kHz). Used to keep Whisper away from silence and noise, where it invents text.

use earshot::Detector;

/// Samples per detector frame (16 ms at 16 kHz).
const FRAME: usize = 256;
/// Frame score above which a frame counts as speech.
const SPEECH_SCORE: f32 = 0.5;

/// Frame by frame, where a piece of 16 kHz mono audio holds speech. Computed once per
/// window; every question the stream policy asks of the VAD is answered from it.
#[derive(Debug, Clone)]
pub struct SpeechMap {
    /// One entry per 16 ms frame: whether it scored as speech.
    frames: Vec<bool>,
}

/// Milliseconds from the start of the audio to the start of frame `frame`.
fn frame_ms(frame: usize) -> u64 {
    (frame * FRAME) as u64 * 1000 / 16_000
}

impl SpeechMap {
    /// Runs the detector over the audio.
    pub fn of(samples: &[f32]) -> Self {
        let mut detector = Detector::default();
        let mut frame = [0f32; FRAME];
        let frames = samples
            .chunks(FRAME)
            .map(|chunk| {
                frame.fill(0.0);
                for (dst, src) in frame.iter_mut().zip(chunk) {
                    *dst = src.clamp(-1.0, 1.0);
                }
                detector.predict_f32(&frame) > SPEECH_SCORE
            })
            .collect();
        SpeechMap { frames }
    }

    /// Seconds of frames scored as speech from `from_ms` on.
    pub fn speech_seconds_from(&self, from_ms: u64) -> f64 {
        let first = (from_ms as usize * 16).div_ceil(FRAME);
        frames_to_seconds(self.frames.iter().skip(first).filter(|s| **s).count())
    }

    /// Seconds of frames scored as speech between `from_ms` and `to_ms`.
    pub fn speech_seconds_between(&self, from_ms: u64, to_ms: u64) -> f64 {
        let (first, last) = (
            (from_ms as usize * 16) / FRAME,
            (to_ms as usize * 16).div_ceil(FRAME),
        );
        frames_to_seconds(
            self.frames
                .iter()
                .take(last)
                .skip(first)
                .filter(|s| **s)
                .count(),
        )
    }

    /// Seconds of frames scored as speech.
    pub fn speech_seconds(&self) -> f64 {
        self.speech_seconds_from(0)
    }

    /// Seconds of non-speech frames at the end.
    pub fn trailing_silence_seconds(&self) -> f64 {
        frames_to_seconds(self.frames.iter().rev().take_while(|s| !**s).count())
    }

    /// The start (ms) of the first speech frame at or after `from_ms`, if any.
    pub fn speech_onset_after(&self, from_ms: u64) -> Option<u64> {
        let first = (from_ms as usize * 16) / FRAME;
        (first..self.frames.len())
            .find(|&i| self.frames[i])
            .map(frame_ms)
    }

    /// The pauses — runs of at least `min_ms` of non-speech between two stretches of
    /// speech — as (start, end) in ms from the beginning of the audio, in order.
    pub fn pauses_ms(&self, min_ms: u64) -> Vec<(u64, u64)> {
        let min_frames = (min_ms as usize * 16).div_ceil(FRAME).max(1);
        let mut pauses = Vec::new();
        let mut run_start = None;
        let mut heard_speech = false;
        for (i, speech) in self.frames.iter().enumerate() {
            match (*speech, run_start) {
                (false, None) if heard_speech => run_start = Some(i),
                (true, Some(start)) => {
                    if i - start >= min_frames {
                        pauses.push((frame_ms(start), frame_ms(i)));
                    }
                    run_start = None;
                }
                _ => {}
            }
            heard_speech |= *speech;
        }
        pauses
    }
}

fn frames_to_seconds(frames: usize) -> f64 {
    (frames * FRAME) as f64 / 16_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_hum_are_not_speech() {
        assert_eq!(SpeechMap::of(&vec![0.0; 32_000]).speech_seconds(), 0.0);
        let hum: Vec<f32> = (0..32_000)
            .map(|i| (2.0 * std::f32::consts::PI * 50.0 * i as f32 / 16_000.0).sin() * 0.3)
            .collect();
        assert!(SpeechMap::of(&hum).speech_seconds() < 0.2);
        assert!((SpeechMap::of(&vec![0.0; 16_000]).trailing_silence_seconds() - 1.0).abs() < 0.02);
        assert_eq!(
            SpeechMap::of(&vec![0.0; 16_000]).speech_onset_after(0),
            None
        );
    }
}
