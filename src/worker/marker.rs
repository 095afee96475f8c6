//! The test build's poison pill (`--features crash-marker`, never in a release): audio
//! holding a steady 2600 Hz tone for half a second makes the worker abort, as a native
//! assert in whisper.cpp would. Tests mix the tone into speech (`marker_tone`).

/// The tone's frequency (exactly bin 52 of a 320-sample frame at 16 kHz).
pub const FREQUENCY: f64 = 2600.0;
const FRAME: usize = 320;
/// Frames in a row (20 ms each) that must carry the tone.
const FRAMES: usize = 25;
/// Share of a frame's energy at the tone's frequency (1.0 for the pure tone).
const SHARE: f64 = 0.25;

/// Whether 16 kHz `samples` carry the marker.
pub fn present(samples: &[f32]) -> bool {
    let mut run = 0;
    for frame in samples.chunks_exact(FRAME) {
        run = if tone_share(frame) >= SHARE {
            run + 1
        } else {
            0
        };
        if run >= FRAMES {
            return true;
        }
    }
    false
}

/// Goertzel: the frame's power at `FREQUENCY` over its total energy, normalised so a pure
/// tone gives 1.
fn tone_share(frame: &[f32]) -> f64 {
    let n = frame.len() as f64;
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * FREQUENCY / 16_000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0f64;
    for &x in frame {
        let x = x as f64;
        energy += x * x;
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    if energy < 1e-6 {
        return 0.0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    power / (n / 2.0 * energy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f64, amplitude: f32) -> Vec<f32> {
        (0..(seconds * 16_000.0) as usize)
            .map(|i| {
                amplitude
                    * (2.0 * std::f64::consts::PI * FREQUENCY * i as f64 / 16_000.0).sin() as f32
            })
            .collect()
    }

    #[test]
    fn a_tone_over_noise_is_the_marker_and_other_tones_are_not() {
        let mut marked = tone(0.8, 0.2);
        let mut seed = 1u32;
        for x in marked.iter_mut() {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *x += ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.3;
        }
        assert!(present(&marked));
        assert!(!present(&tone(0.3, 0.2)));
        let other: Vec<f32> = (0..16_000)
            .map(|i| 0.2 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 16_000.0).sin() as f32)
            .collect();
        assert!(!present(&other));
    }
}
