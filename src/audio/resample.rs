//! Resampling to 16 kHz with rubato's FFT resampler (band-limited, no aliasing).

use rubato::{FftFixedIn, Resampler};

use super::{AudioError, TARGET_RATE};

const CHUNK: usize = 1024;

/// Resamples mono audio from `rate` to 16 kHz, keeping its duration to the sample.
pub fn to_target_rate(samples: &[f32], rate: u32) -> Result<Vec<f32>, AudioError> {
    // Full scale is ±1: louder float PCM is clipped there (and would overflow the FFT).
    let clipped: Vec<f32> = samples
        .iter()
        .map(|s| {
            if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        })
        .collect();
    if rate == TARGET_RATE {
        return Ok(clipped);
    }
    let samples = &clipped[..];
    let failed = |e: &dyn std::fmt::Display| AudioError::Undecodable(format!("resampling: {e}"));
    let mut resampler = FftFixedIn::<f32>::new(rate as usize, TARGET_RATE as usize, CHUNK, 2, 1)
        .map_err(|e| failed(&e))?;
    let expected = (samples.len() as u64 * TARGET_RATE as u64).div_ceil(rate as u64) as usize;
    let delay = resampler.output_delay();
    let mut out = Vec::with_capacity(expected + delay + CHUNK);
    let mut rest = samples;
    while rest.len() >= resampler.input_frames_next() {
        let (now, later) = rest.split_at(resampler.input_frames_next());
        let produced = resampler.process(&[now], None).map_err(|e| failed(&e))?;
        out.extend_from_slice(&produced[0]);
        rest = later;
    }
    // Feed the remainder, then silence, until the delayed output has caught up.
    // (An empty remainder, when the length is a multiple of the chunk, is no input at all:
    // rubato rejects an empty slice.)
    let mut tail: Option<&[f32]> = Some(rest).filter(|r| !r.is_empty());
    while out.len() < expected + delay {
        let produced = match tail.take() {
            Some(r) => resampler.process_partial(Some(&[r]), None),
            None => resampler.process_partial::<&[f32]>(None, None),
        }
        .map_err(|e| failed(&e))?;
        out.extend_from_slice(&produced[0]);
    }
    out.drain(..delay);
    out.truncate(expected);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn keeps_duration_and_frequency() {
        for rate in [8_000, 22_050, 44_100, 48_000, 11_025] {
            let input = sine(rate, 440.0, 1.3);
            let out = to_target_rate(&input, rate).unwrap();
            let expected = (input.len() as u64 * 16_000).div_ceil(rate as u64) as usize;
            assert_eq!(out.len(), expected, "rate {rate}");
            // Compare against an ideal 440 Hz sine at 16 kHz, away from the edges.
            let reference = sine(16_000, 440.0, 1.3);
            let err: f32 = (2000..18000)
                .map(|i| (out[i] - reference[i]).abs())
                .fold(0.0, f32::max);
            // 0.05 of a 0.5 amplitude: aligned to within a fraction of a sample.
            assert!(err < 0.05, "rate {rate}: max error {err}");
        }
    }

    #[test]
    fn removes_content_above_the_new_nyquist() {
        let input = sine(48_000, 12_000.0, 0.5);
        let out = to_target_rate(&input, 48_000).unwrap();
        let rms = (out[1000..7000].iter().map(|s| s * s).sum::<f32>() / 6000.0).sqrt();
        assert!(rms < 0.01, "aliased energy {rms}");
    }

    #[test]
    fn passes_16k_through_and_handles_tiny_inputs() {
        assert_eq!(to_target_rate(&[0.1, 0.2], 16_000).unwrap(), vec![0.1, 0.2]);
        assert_eq!(to_target_rate(&[0.1; 3], 48_000).unwrap().len(), 1);
        // A whole number of resampler chunks leaves no remainder.
        assert_eq!(to_target_rate(&[0.1; 2048], 32_000).unwrap().len(), 1024);
    }

    #[test]
    fn absurd_float_samples_are_clipped_not_a_panic() {
        let loud = vec![3.0e38f32; 4_800];
        let out = to_target_rate(&loud, 48_000).unwrap();
        assert_eq!(out.len(), 1_600);
        assert!(out.iter().all(|s| s.is_finite() && s.abs() <= 1.1));
    }
}
