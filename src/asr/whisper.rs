//! The whisper.cpp engine (through whisper-rs): one shared context holding the weights,
//! a fresh decoder state per call, greedy deterministic decoding, token-level times.

use std::path::Path;

use whisper_rs::{
    DtwMode, DtwModelPreset, DtwParameters, FullParams, SamplingStrategy, WhisperContext,
    WhisperContextParameters,
};

use super::words::{group_words, TimedToken};
use super::{AsrError, DecodeOptions, ModelInfo, Segment, Transcriber, Transcript};

/// Encoder positions per second of audio (Whisper: 1500 for 30 s).
const POSITIONS_PER_SECOND: f64 = 50.0;
/// Encoder positions of Whisper's full 30 s window.
const FULL_WINDOW_POSITIONS: i32 = 1500;

/// Whisper through whisper.cpp.
pub struct WhisperEngine {
    /// The weights, shared by every call (whisper.cpp contexts are thread-safe to read).
    context: WhisperContext,
    /// What the status endpoint reports.
    info: ModelInfo,
    /// CPU threads one call may use.
    threads: usize,
    /// Smallest encoder window in seconds (see `window_positions`).
    min_window_seconds: f64,
    /// Whether word times come from DTW alignment (known alignment heads for the model).
    dtw: bool,
}

impl WhisperEngine {
    /// Loads a ggml model file.
    pub fn load(
        path: &Path,
        name: &str,
        threads: usize,
        min_window_seconds: f64,
    ) -> Result<Self, AsrError> {
        whisper_rs::install_logging_hooks();
        let mut params = WhisperContextParameters::default();
        params.use_gpu(cfg!(feature = "cuda"));
        // Word times from the alignment heads (DTW over cross-attention) where the model's
        // heads are known: far closer to the audio than the timestamp-token heuristic.
        let preset = match name {
            "base" => Some(DtwModelPreset::Base),
            "base.en" => Some(DtwModelPreset::BaseEn),
            "tiny" => Some(DtwModelPreset::Tiny),
            "tiny.en" => Some(DtwModelPreset::TinyEn),
            _ => None,
        };
        let dtw = preset.is_some();
        if let Some(model_preset) = preset {
            params.dtw_parameters(DtwParameters {
                mode: DtwMode::ModelPreset { model_preset },
                ..DtwParameters::default()
            });
        }
        let path_text = path.to_string_lossy().to_string();
        let context = WhisperContext::new_with_params(path, params)
            .map_err(|e| AsrError::Load(format!("{path_text}: {e}")))?;
        let size_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let info = ModelInfo {
            name: name.to_string(),
            path: path_text,
            size_bytes,
            engine: format!("whisper.cpp {}", whisper_rs::WHISPER_CPP_VERSION),
            multilingual: context.is_multilingual(),
        };
        Ok(WhisperEngine {
            context,
            info,
            threads,
            min_window_seconds,
            dtw,
        })
    }

    /// Encoder positions to use for `seconds` of audio: the audio's own length (at least
    /// the configured floor) instead of always 30 s; 0 means whisper.cpp's full window.
    fn window_positions(&self, seconds: f64) -> i32 {
        let positions = (seconds.max(self.min_window_seconds) * POSITIONS_PER_SECOND).ceil() as i32;
        if positions >= FULL_WINDOW_POSITIONS {
            0
        } else {
            positions
        }
    }
}

impl Transcriber for WhisperEngine {
    fn transcribe(&self, samples: &[f32], options: &DecodeOptions) -> Result<Transcript, AsrError> {
        let failed =
            |what: &str, e: &dyn std::fmt::Display| AsrError::Inference(format!("{what}: {e}"));
        let mut state = self
            .context
            .create_state()
            .map_err(|e| failed("creating state", &e))?;

        let language = match (&options.language, self.info.multilingual) {
            (_, false) => "en".to_string(),
            (Some(lang), true) => lang.clone(),
            (None, true) => "auto".to_string(),
        };
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(self.threads as i32);
        params.set_language(Some(&language));
        params.set_translate(false);
        params.set_no_context(true);
        params.set_token_timestamps(true);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        // Greedy at temperature 0; only a pass that fails Whisper's own checks (a repetition
        // loop, by entropy) is redone warmer. A fresh state seeds the sampler identically, so
        // the result is still deterministic.
        params.set_temperature(0.0);
        params.set_temperature_inc(0.2);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        params.set_audio_ctx(self.window_positions(samples.len() as f64 / 16_000.0));
        if let Some(prompt) = options.prompt.as_deref().filter(|p| !p.is_empty()) {
            params.set_initial_prompt(prompt);
        }
        state
            .full(params, samples)
            .map_err(|e| failed("decoding", &e))?;

        let eot = self.context.token_eot();
        let mut segments = Vec::new();
        for segment in state.as_iter() {
            let mut tokens = Vec::new();
            let (mut logprob_sum, mut prob_sum) = (0f32, 0f32);
            for i in 0..segment.n_tokens() {
                let Some(token) = segment.get_token(i) else {
                    continue;
                };
                if token.token_id() >= eot {
                    continue;
                }
                let data = token.token_data();
                logprob_sum += data.plog;
                prob_sum += data.p;
                let (start, end) = if self.dtw && data.t_dtw >= 0 {
                    (data.t_dtw, data.t1.max(data.t_dtw))
                } else {
                    (data.t0, data.t1)
                };
                tokens.push(TimedToken {
                    bytes: token.to_bytes().map(<[u8]>::to_vec).unwrap_or_default(),
                    start: start as f64 / 100.0,
                    end: end as f64 / 100.0,
                    probability: data.p,
                });
            }
            if self.dtw {
                // DTW marks where each token starts: a token ends where the next one starts.
                for i in 1..tokens.len() {
                    let next_start = tokens[i].start;
                    tokens[i - 1].end = next_start.max(tokens[i - 1].start);
                }
            }
            let n = tokens.len().max(1) as f32;
            let text = segment
                .to_bytes()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            segments.push(Segment {
                text,
                start: segment.start_timestamp() as f64 / 100.0,
                end: segment.end_timestamp() as f64 / 100.0,
                confidence: prob_sum / n,
                no_speech_probability: segment.no_speech_probability(),
                avg_logprob: logprob_sum / n,
                words: group_words(&tokens),
            });
        }
        let language =
            whisper_rs::get_lang_str(state.full_lang_id_from_state()).map(str::to_string);
        Ok(Transcript { segments, language })
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }
}
