//! Storage for the uncommitted audio that travels in the context: G.711 μ-law at 16 kHz in
//! tokens (one byte a sample, ~38 dB SNR, plenty for Whisper, deterministic both ways), and
//! 16-bit PCM in Redis sessions (lossless).

const BIAS: i32 = 0x84;
const CLIP: i32 = 32_635;

/// Encodes 16 kHz samples in [-1, 1] as μ-law bytes.
pub fn encode(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .map(|s| encode_one((s.clamp(-1.0, 1.0) * 32767.0) as i32))
        .collect()
}

/// Encodes 16 kHz samples in [-1, 1] as 16-bit little-endian PCM (exact for samples that
/// came from 16-bit PCM; [`crate::audio::s16le`] decodes it).
pub fn encode_pcm16(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| pcm16(*s).to_le_bytes())
        .collect()
}

/// One sample in [-1, 1] as a 16-bit PCM value.
pub fn pcm16(sample: f32) -> i16 {
    (sample * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// Decodes μ-law bytes to samples in [-1, 1].
pub fn decode(bytes: &[u8]) -> Vec<f32> {
    bytes
        .iter()
        .map(|b| decode_one(*b) as f32 / 32768.0)
        .collect()
}

fn encode_one(sample: i32) -> u8 {
    let sign = if sample < 0 { 0x80 } else { 0 };
    let magnitude = sample.abs().min(CLIP) + BIAS;
    let top = (magnitude >> 7) as u32;
    let exponent = if top == 0 {
        0
    } else {
        (31 - top.leading_zeros()).min(7) as i32
    };
    let mantissa = (magnitude >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

fn decode_one(byte: u8) -> i32 {
    let byte = !byte;
    let sign = byte & 0x80;
    let exponent = ((byte >> 4) & 0x07) as i32;
    let mantissa = (byte & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    if sign != 0 {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_within_mu_law_steps() {
        for i in -32_000..32_000 {
            if i % 7 != 0 {
                continue;
            }
            let back = decode_one(encode_one(i));
            let step = (i.abs() / 16).max(8);
            assert!((back - i).abs() <= step, "{i} -> {back}");
        }
        assert_eq!(decode_one(encode_one(0)), 0);
    }

    #[test]
    fn known_g711_codes() {
        assert_eq!(encode_one(0), 0xff);
        assert_eq!(encode_one(-1), 0x7f);
        assert_eq!(encode_one(32_767), 0x80);
        assert_eq!(encode_one(-32_768), 0x00);
    }

    #[test]
    fn a_tone_keeps_its_shape() {
        let tone: Vec<f32> = (0..1600).map(|i| (i as f32 * 0.05).sin() * 0.4).collect();
        let back = decode(&encode(&tone));
        let err = tone
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.02, "{err}");
    }
}
