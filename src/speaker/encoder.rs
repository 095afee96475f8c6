//! The GE2E speaker encoder (resemblyzer 0.1.4's weights) in plain Rust: power mel
//! spectrogram, 3-layer LSTM, Linear, ReLU, L2 norm; 256-dim voiceprints. The matrix
//! products go through `matrixmultiply`'s SGEMM; all partials of an utterance run as one batch.

use std::path::Path;
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::audio::mel::slaney_mel_filters;

const RATE: usize = 16_000;
const N_FFT: usize = 400;
const HOP: usize = 160;
const N_MELS: usize = 40;
const HIDDEN: usize = 256;
const GATES: usize = 4 * HIDDEN;
/// Frames per partial utterance (1.6 s).
const PARTIAL_FRAMES: usize = 160;
/// Frames between partials (resemblyzer's rate of 1.3 partials per second).
const PARTIAL_STEP: usize = 77;
/// A last partial is used when the audio covers this share of it.
const MIN_COVERAGE: f64 = 0.75;
/// Quiet audio is raised to this loudness before embedding (never lowered).
const TARGET_DBFS: f64 = -30.0;

/// Length of a voiceprint.
pub const DIM: usize = 256;

/// Why the encoder could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("speaker model {path}: {message}")]
    Load { path: String, message: String },
}

struct Layer {
    input: usize,
    /// `[GATES, input]`, row-major (PyTorch's layout).
    w_ih: Vec<f32>,
    /// `[GATES, HIDDEN]`.
    w_hh: Vec<f32>,
    /// `b_ih + b_hh`.
    bias: Vec<f32>,
}

/// The loaded encoder; cheap to share between threads.
pub struct Ge2eEncoder {
    layers: Vec<Layer>,
    linear_w: Vec<f32>,
    linear_b: Vec<f32>,
    mel_filters: Vec<f32>,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl super::SpeakerEncoder for Ge2eEncoder {
    fn embed(&self, samples: &[f32]) -> Option<Vec<f32>> {
        Ge2eEncoder::embed(self, samples)
    }
}

impl std::fmt::Debug for Ge2eEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ge2eEncoder")
    }
}

impl Ge2eEncoder {
    /// Loads the safetensors file written by `scripts/speaker-weights.py`.
    pub fn load(path: &Path) -> Result<Self, EncoderError> {
        let fail = |message: String| EncoderError::Load {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let tensors =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| fail(e.to_string()))?;
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, EncoderError> {
            let t = tensors
                .tensor(name)
                .map_err(|e| fail(format!("{name}: {e}")))?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape {
                return Err(fail(format!(
                    "{name}: {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let mut layers = Vec::new();
        for l in 0..3 {
            let input = if l == 0 { N_MELS } else { HIDDEN };
            let b_ih = get(&format!("lstm.bias_ih_l{l}"), &[GATES])?;
            let b_hh = get(&format!("lstm.bias_hh_l{l}"), &[GATES])?;
            layers.push(Layer {
                input,
                w_ih: get(&format!("lstm.weight_ih_l{l}"), &[GATES, input])?,
                w_hh: get(&format!("lstm.weight_hh_l{l}"), &[GATES, HIDDEN])?,
                bias: b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect(),
            });
        }
        let window = (0..N_FFT)
            .map(|i| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()) as f32
            })
            .collect();
        Ok(Ge2eEncoder {
            layers,
            linear_w: get("linear.weight", &[DIM, HIDDEN])?,
            linear_b: get("linear.bias", &[DIM])?,
            mel_filters: slaney_mel_filters(RATE as u32, N_FFT, N_MELS),
            window,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
        })
    }

    /// The voiceprint of 16 kHz mono speech (resemblyzer's `embed_utterance`): the L2-normed
    /// mean of the embeddings of 1.6 s partials every 0.77 s. `None` for empty audio.
    pub fn embed(&self, samples: &[f32]) -> Option<Vec<f32>> {
        if samples.is_empty() {
            return None;
        }
        let slices = partial_slices(samples.len());
        let end = slices.last().map_or(0, |s| s + PARTIAL_FRAMES) * HOP;
        let mut wav = normalise_volume(samples);
        if end >= wav.len() {
            wav.resize(end, 0.0);
        }
        let mel = self.mel_spectrogram(&wav);
        let batch = slices.len();
        // Input laid out [frame][partial][mel].
        let mut x = vec![0.0f32; PARTIAL_FRAMES * batch * N_MELS];
        for (b, &start) in slices.iter().enumerate() {
            for t in 0..PARTIAL_FRAMES {
                let src = &mel[(start + t) * N_MELS..(start + t + 1) * N_MELS];
                let dst = (t * batch + b) * N_MELS;
                x[dst..dst + N_MELS].copy_from_slice(src);
            }
        }
        let hidden = self.lstm(x, batch);
        let mut mean = vec![0.0f32; DIM];
        for h in hidden.chunks_exact(HIDDEN) {
            let mut e: Vec<f32> = (0..DIM)
                .map(|j| {
                    let row = &self.linear_w[j * HIDDEN..(j + 1) * HIDDEN];
                    (dot(row, h) + self.linear_b[j]).max(0.0)
                })
                .collect();
            normalise(&mut e);
            for (m, v) in mean.iter_mut().zip(&e) {
                *m += v;
            }
        }
        normalise(&mut mean);
        Some(mean)
    }

    /// Power mel spectrogram, `[frames][N_MELS]`, centred frames with zero padding.
    fn mel_spectrogram(&self, wav: &[f32]) -> Vec<f32> {
        let pad = N_FFT / 2;
        let mut padded = vec![0.0f32; wav.len() + 2 * pad];
        padded[pad..pad + wav.len()].copy_from_slice(wav);
        let frames = 1 + (padded.len() - N_FFT) / HOP;
        let bins = N_FFT / 2 + 1;
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0.0f32; bins];
        let mut out = vec![0.0f32; frames * N_MELS];
        for f in 0..frames {
            let frame = &padded[f * HOP..f * HOP + N_FFT];
            for ((i, s), w) in input.iter_mut().zip(frame).zip(&self.window) {
                *i = s * w;
            }
            // Lengths always match the plan, so this cannot fail.
            let _ = self.fft.process(&mut input, &mut spectrum);
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for m in 0..N_MELS {
                out[f * N_MELS + m] = dot(&self.mel_filters[m * bins..(m + 1) * bins], &power);
            }
        }
        out
    }

    /// Runs the LSTM over `x` (`[PARTIAL_FRAMES][batch][input]`); returns the last layer's
    /// final hidden state, `[batch][HIDDEN]`. Compiled twice: with AVX2 and FMA where the CPU
    /// has them, else for the baseline.
    fn lstm(&self, x: Vec<f32>, batch: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.lstm_fma(x, batch) };
        }
        self.lstm_with::<false>(x, batch)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lstm_fma(&self, x: Vec<f32>, batch: usize) -> Vec<f32> {
        self.lstm_with::<true>(x, batch)
    }

    #[inline(always)]
    fn lstm_with<const FMA: bool>(&self, mut x: Vec<f32>, batch: usize) -> Vec<f32> {
        let rows = PARTIAL_FRAMES * batch;
        let mut h = vec![0.0f32; batch * HIDDEN];
        for layer in &self.layers {
            // Input projections of every frame at once: gates = x · W_ihᵀ + bias.
            let mut gates = vec![0.0f32; rows * GATES];
            for row in gates.chunks_exact_mut(GATES) {
                row.copy_from_slice(&layer.bias);
            }
            sgemm(rows, layer.input, GATES, &x, &layer.w_ih, &mut gates);
            h.fill(0.0);
            let mut c = vec![0.0f32; batch * HIDDEN];
            let mut out = vec![0.0f32; rows * HIDDEN];
            for t in 0..PARTIAL_FRAMES {
                let g = &mut gates[t * batch * GATES..(t + 1) * batch * GATES];
                few_rows_gemm::<FMA>(batch, HIDDEN, GATES, &h, &layer.w_hh, g);
                for b in 0..batch {
                    let g = &g[b * GATES..(b + 1) * GATES];
                    let (hb, cb) = (
                        &mut h[b * HIDDEN..(b + 1) * HIDDEN],
                        &mut c[b * HIDDEN..(b + 1) * HIDDEN],
                    );
                    for k in 0..HIDDEN {
                        let i = sigmoid(g[k]);
                        let f = sigmoid(g[HIDDEN + k]);
                        let cell = tanh(g[2 * HIDDEN + k]);
                        let o = sigmoid(g[3 * HIDDEN + k]);
                        cb[k] = f * cb[k] + i * cell;
                        hb[k] = o * tanh(cb[k]);
                    }
                }
                out[t * batch * HIDDEN..(t + 1) * batch * HIDDEN].copy_from_slice(&h);
            }
            x = out;
        }
        h
    }
}

/// `c += a · bᵀ` with `a` `[m][k]` and `b` `[n][k]`, all row-major.
fn sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    debug_assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n);
    // SAFETY: the slices hold m×k, n×k and m×n elements at the given strides (checked by
    // the callers' construction and the debug assertion above), and `c` aliases neither.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            1.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `c += a · bᵀ` as `sgemm`, for the recurrent step's one to a few rows of `a`: each row of
/// `b` (a weight matrix, 1 MB) is read once per row of `a`, never packed. A general SGEMM packs
/// all of `b` on every call, 480 times an utterance (`cargo bench --bench speaker`). With
/// `FMA` (only called so on a CPU with AVX2 and FMA), four rows of `b` at a time in AVX2
/// registers; AVX-512's sixteen lanes measured slower here.
#[inline(always)]
fn few_rows_gemm<const FMA: bool>(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) {
    for i in 0..m {
        let x = &a[i * k..(i + 1) * k];
        let out = &mut c[i * n..(i + 1) * n];
        let rows = b.chunks_exact(k).take(n);
        #[cfg(target_arch = "x86_64")]
        if FMA {
            let mut blocks = out.chunks_exact_mut(4);
            let mut row_blocks = b[..n * k].chunks_exact(4 * k);
            for (o, r) in (&mut blocks).zip(&mut row_blocks) {
                // SAFETY: FMA is true only where the CPU has AVX2 and FMA (`lstm`).
                let sums = unsafe { dot4_avx2(x, r) };
                for (o, s) in o.iter_mut().zip(sums) {
                    *o += s;
                }
            }
            let done = n - n % 4;
            for (o, row) in blocks.into_remainder().iter_mut().zip(rows.skip(done)) {
                *o += dot(x, row);
            }
            continue;
        }
        for (o, row) in out.iter_mut().zip(rows) {
            *o += dot(x, row);
        }
    }
}

/// The dot products of `x` with the four rows of `rows` (`[4][x.len()]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(x: &[f32], rows: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let k = x.len();
    debug_assert_eq!(rows.len(), 4 * k);
    let body = k - k % 8;
    let mut sums = [_mm256_setzero_ps(); 4];
    let mut at = 0;
    while at < body {
        // SAFETY: `at + 8 <= k`, and row q spans `rows[q * k..(q + 1) * k]`.
        unsafe {
            let xv = _mm256_loadu_ps(x.as_ptr().add(at));
            for (q, sum) in sums.iter_mut().enumerate() {
                let yv = _mm256_loadu_ps(rows.as_ptr().add(q * k + at));
                *sum = _mm256_fmadd_ps(xv, yv, *sum);
            }
        }
        at += 8;
    }
    std::array::from_fn(|q| {
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sums[q]) };
        lanes.iter().sum::<f32>() + dot(&x[body..], &rows[q * k + body..(q + 1) * k])
    })
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

fn tanh(x: f32) -> f32 {
    2.0 * sigmoid(2.0 * x) - 1.0
}

/// `e^x` to within a few units in the last place, without branches or calls, so that the
/// gate loop vectorises (libm's `expf`/`tanhf` were a third of the encoder's time): 2^n
/// times a degree-6 polynomial of the remainder (Cephes' `expf`).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5 · 2^23 trick (no rounding instruction needed).
    const ROUND: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_66;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scales to unit length (leaves a zero vector alone).
pub fn normalise(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Raises quiet audio to −30 dBFS (resemblyzer's `normalize_volume(increase_only=True)`).
fn normalise_volume(samples: &[f32]) -> Vec<f32> {
    let mean_square =
        samples.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / samples.len().max(1) as f64;
    let dbfs = 10.0 * mean_square.max(1e-20).log10();
    let change = TARGET_DBFS - dbfs;
    let gain = if change > 0.0 {
        10f64.powf(change / 20.0) as f32
    } else {
        1.0
    };
    samples.iter().map(|s| s * gain).collect()
}

/// Start frames of the partials covering `n_samples` (resemblyzer's `compute_partial_slices`).
fn partial_slices(n_samples: usize) -> Vec<usize> {
    let n_frames = (n_samples + 1).div_ceil(HOP);
    let steps = (n_frames + PARTIAL_STEP + 1)
        .saturating_sub(PARTIAL_FRAMES)
        .max(1);
    let mut slices: Vec<usize> = (0..steps).step_by(PARTIAL_STEP).collect();
    let last = *slices.last().unwrap_or(&0);
    let coverage = (n_samples as f64 - (last * HOP) as f64) / (PARTIAL_FRAMES * HOP) as f64;
    if coverage < MIN_COVERAGE && slices.len() > 1 {
        slices.pop();
    }
    slices
}

/// Decodes a stored voiceprint (i8 quantised, as the tracker keeps centroids).
pub fn dequantise(q: &[i8]) -> Vec<f32> {
    let mut v: Vec<f32> = q.iter().map(|&x| x as f32 / 127.0).collect();
    normalise(&mut v);
    v
}

/// Quantises a unit voiceprint to i8 for storage.
pub fn quantise(v: &[f32]) -> Vec<i8> {
    v.iter()
        .map(|x| (x * 127.0).round().clamp(-127.0, 127.0) as i8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_few_rows_product_is_the_general_one() {
        let (m, k, n) = (3, 260, 42);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
            .collect();
        let b: Vec<f32> = (0..n * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 9.0)
            .collect();
        let (mut general, mut few) = (vec![0.5f32; m * n], vec![0.5f32; m * n]);
        sgemm(m, k, n, &a, &b, &mut general);
        few_rows_gemm::<false>(m, k, n, &a, &b, &mut few);
        for (g, f) in general.iter().zip(&few) {
            assert!((g - f).abs() < 1e-4, "{g} vs {f}");
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let mut fma = vec![0.5f32; m * n];
            few_rows_gemm::<true>(m, k, n, &a, &b, &mut fma);
            for (g, f) in general.iter().zip(&fma) {
                assert!((g - f).abs() < 1e-4, "{g} vs {f}");
            }
        }
    }

    #[test]
    fn exp_and_tanh_are_libm_to_a_few_ulp() {
        for i in -2000..=2000 {
            let x = i as f32 / 40.0;
            let (want, got) = (x.exp(), exp(x));
            assert!(
                (got - want).abs() <= 4e-7 * want,
                "exp({x}): {got} vs {want}"
            );
            assert!((tanh(x) - x.tanh()).abs() < 3e-7, "tanh({x})");
        }
        assert!(exp(-200.0) >= 0.0 && exp(-200.0) < 1e-37);
        assert!(exp(200.0).is_finite());
    }

    #[test]
    fn partials_follow_resemblyzer() {
        // Values from tests/fixtures/speaker/reference.py's partial_slices.
        assert_eq!(partial_slices(16_000), vec![0]);
        assert_eq!(partial_slices(32_000), vec![0, 77]);
        assert_eq!(partial_slices(40_000), vec![0, 77]);
        assert_eq!(partial_slices(80_000), vec![0, 77, 154, 231, 308]);
    }
}
