//! The whisper.cpp engine (through whisper-rs): one shared context holding the weights,
//! a fresh decoder state per call, greedy deterministic decoding, token-level times.

use std::path::Path;

use whisper_rs::{
    DtwMode, DtwModelPreset, DtwParameters, FullParams, SamplingStrategy, WhisperContext,
    WhisperContextParameters,
};

use super::quality::{self, Verdict};
use super::words::{group_words, TimedToken};
use super::{AsrError, DecodeOptions, ModelInfo, Segment, Transcriber, Transcript};
use crate::vad::SpeechMap;

/// Encoder positions per second of audio (Whisper: 1500 for 30 s).
const POSITIONS_PER_SECOND: f64 = 50.0;
/// Encoder positions of Whisper's full 30 s window.
const FULL_WINDOW_POSITIONS: i32 = 1500;
/// Audio longer than this (seconds) is encoded over the full window. Live windows (the
/// unconfirmed tail, at most 10 s, and a chunk) are shorter; on a 20-30 s long-form window
/// the window sized to the audio puts text at wrong times (segments crammed into the
/// window's last instant, bench/results/wholefile.md).
const SIZED_WINDOW_MAX_SECONDS: f64 = 15.0;

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

    /// Encoder positions to use for `seconds` of audio: for live windows the audio's own
    /// length (at least the configured floor) instead of always 30 s; 0 means whisper.cpp's
    /// full window.
    fn window_positions(&self, seconds: f64) -> i32 {
        let positions = (seconds.max(self.min_window_seconds) * POSITIONS_PER_SECOND).ceil() as i32;
        if positions >= FULL_WINDOW_POSITIONS || seconds > SIZED_WINDOW_MAX_SECONDS {
            0
        } else {
            positions
        }
    }
}

impl Transcriber for WhisperEngine {
    /// Whisper's own long-form loop, run here rather than inside whisper.cpp: each pass
    /// decodes up to 30 s as one segment and the next pass starts where the decoder stopped
    /// (its last timestamp token). whisper.cpp's loop can end a pass within 150 ms of where
    /// it started (a decoder that stops on an early timestamp, a short remainder), and its
    /// DTW word alignment then aborts the process (`WHISPER_ASSERT ... filter_width <
    /// a->ne[2]`, whisper.cpp issue #2301 and others); a single-segment pass always aligns
    /// the whole piece, and every piece spans at least 200 ms.
    ///
    /// Every pass is judged as the reference decoder judges it (`quality`): a pass that loops
    /// or is unlikely is decoded once more without the prompt, the better decode is kept, a
    /// loop that remains is cut out (and reported in `unreliable_from`), and the pass after a
    /// failed one is not conditioned on the text before it. No sampling unless the client
    /// asks for a temperature: the same audio gives the same text, and a pass costs at most
    /// two decodes. `options.progress` hears each pass's segments once they are final.
    fn transcribe(&self, samples: &[f32], options: &DecodeOptions) -> Result<Transcript, AsrError> {
        let mut segments: Vec<Segment> = Vec::new();
        let mut language = match (&options.language, self.info.multilingual) {
            (_, false) => Some("en".to_string()),
            (lang, true) => lang.clone(),
        };
        let mut unreliable_from: Option<f64> = None;
        // The text since the last failed pass conditions the next pass (Whisper's
        // `prompt_reset_since`).
        let mut context_since = 0;
        // Long audio (more than one pass) is checked against the VAD for passes that gave up.
        let speech = (samples.len() > PASS_SAMPLES).then(|| SpeechMap::of(samples));
        let mut offset = 0;
        while samples.len() - offset > MIN_PASS_SAMPLES {
            let length = (samples.len() - offset).min(PASS_SAMPLES);
            // Whisper's rule for a continuation: a short rest is decoded without the text
            // before it (it tends to make the decoder repeat itself).
            let prompt = if offset == 0 {
                options.prompt.clone()
            } else if samples.len() - offset > CONTINUATION_PROMPT_SAMPLES {
                let said: Vec<&str> = segments[context_since..]
                    .iter()
                    .map(|s| s.text.as_str())
                    .collect();
                let before = if context_since == 0 {
                    options.prompt.as_deref().unwrap_or("")
                } else {
                    ""
                };
                Some(format!("{before} {}", said.join(" ")))
            } else {
                None
            };
            let prompt = prompt.filter(|p| !p.trim().is_empty());
            let mut pass = self.pass(
                samples,
                (offset, length),
                language.as_deref(),
                prompt.as_deref(),
                options,
            )?;
            let judge = |pass: &Pass| {
                let mut verdict = Verdict::of(&pass.segments);
                verdict.looped |= quality::repeats_earlier(&pass.segments, &segments);
                verdict
            };
            let mut verdict = judge(&pass);
            let mut retried = false;
            if verdict.failed() && prompt.is_some() {
                let again = self.pass(
                    samples,
                    (offset, length),
                    language.as_deref().or(pass.language.as_deref()),
                    None,
                    options,
                )?;
                let again_verdict = judge(&again);
                retried = true;
                if again_verdict.better_than(&verdict) {
                    (pass, verdict) = (again, again_verdict);
                }
            }
            tracing::debug!(
                event = "whisper_pass",
                offset_s = offset as f64 / 16_000.0,
                length_s = length as f64 / 16_000.0,
                stopped_at_s = pass.stopped_at.map(|s| s as f64 / 16_000.0),
                segments = pass.segments.len(),
                compression_ratio = verdict.compression_ratio,
                avg_logprob = verdict.avg_logprob,
                looped = verdict.looped,
                retried,
            );
            // A decoder that ends its text early with a single timestamp says it heard the
            // whole piece; where the VAD still hears speech after its last word, it did not
            // (it gave up): the next pass starts after that word rather than skipping it.
            // (The last word's end is the segment's end timestamp, stretched over what was
            // skipped; its DTW start is where it was said.)
            let last_word_end = pass
                .segments
                .iter()
                .rev()
                .find_map(|s| s.words.last().map(|w| w.end.min(w.start + 1.0)));
            if let (None, Some(map), Some(end)) = (pass.stopped_at, &speech, last_word_end) {
                let end_ms = (end * 1000.0) as u64;
                let piece_end_ms = ((offset + length) / 16) as u64;
                let missed = map.speech_seconds_between(end_ms + GAVE_UP_GRACE_MS, piece_end_ms);
                if offset + length < samples.len() && missed >= GAVE_UP_SPEECH_SECONDS {
                    pass.stopped_at = Some(((end_ms + 100) * 16) as usize);
                }
            }
            let mut pass_segments = pass.segments;
            if verdict.looped {
                let (kept, removed_from) = quality::remove_loops(pass_segments, &segments);
                pass_segments = kept;
                if let Some(at) = removed_from {
                    unreliable_from.get_or_insert(at);
                }
            }
            if let Some(progress) = &options.progress {
                progress.tell(&pass_segments);
            }
            segments.extend(pass_segments);
            if verdict.failed() {
                context_since = segments.len();
            }
            language = language.or(pass.language);
            // The next pass starts where the decoder stopped; a stop in the first 100 ms of
            // the piece counts as none (a pass must make progress).
            offset = match pass.stopped_at {
                Some(at) if at > offset + MIN_PASS_SAMPLES && at < offset + length => at,
                _ => offset + length,
            };
        }
        Ok(Transcript {
            segments,
            language,
            unreliable_from,
        })
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str) -> Vec<i32> {
        // A segment's text is far under Whisper's 448-token context.
        self.context.tokenize(text, 448).unwrap_or_default()
    }
}

/// Speech after a pass's last word (beyond this grace) that makes it a pass that gave up.
const GAVE_UP_GRACE_MS: u64 = 500;
const GAVE_UP_SPEECH_SECONDS: f64 = 1.0;
/// Longest piece one pass decodes: Whisper's window.
const PASS_SAMPLES: usize = 30 * 16_000;
/// What is left after a pass is decoded only if longer than this (whisper.cpp: 100 ms).
const MIN_PASS_SAMPLES: usize = 1_600;
/// Every pass decodes at least this much (whisper.cpp's zero padding past the end
/// included): its DTW alignment median-filters 7 encoder positions, and aborts the
/// process unless it gets more than that (16 frames, 160 ms). Any more than needed and
/// the decoder hears silence it fills with made-up text ("Thank you.").
const MIN_PIECE_SAMPLES: usize = 3_200;
/// A continuation shorter than this is decoded without the text before it (whisper.cpp: 5 s).
const CONTINUATION_PROMPT_SAMPLES: usize = 5 * 16_000;
/// Tokens one pass may produce; below whisper.cpp's own limit (half the text context,
/// less 4), so that a pass always ends as completed, never as a failed decoder.
const MAX_PASS_TOKENS: i32 = 200;
/// Tokens a second of speech needs at most (fast speech is ~4 a second, with timestamps),
/// and a few more per pass: a looping decoder stops there instead of at 200 tokens.
const TOKENS_PER_SECOND: f64 = 8.0;
const TOKENS_PER_PASS: f64 = 16.0;

/// The language a pass is first decoded in when none is known (see `pass`).
const LANGUAGE_GUESS: &str = "en";

/// What one single-segment pass of whisper.cpp produced.
struct Pass {
    segments: Vec<Segment>,
    language: Option<String>,
    /// The sample where the decoder stopped (its last timestamp token), when it stopped
    /// before the end of the piece.
    stopped_at: Option<usize>,
}

impl WhisperEngine {
    /// Decodes `length` samples (at most 30 s) from `offset` in a single segment, then
    /// splits it back into Whisper's segments at its timestamp tokens. The log-mel
    /// spectrogram is of all of `samples`, normalised as a whole, as whisper.cpp's own loop
    /// has it (a quiet rest normalised on its own sounds like speech to Whisper).
    ///
    /// With no language given, the pass is decoded as English and then asks the decoder which
    /// language it hears, one decoder step on the encoder output of this very piece (Whisper's
    /// language detection); only a piece in another language is decoded again, in that one.
    /// (whisper.cpp's own detection encodes a separate full 30 s window from the start of the
    /// audio: it made a stream's first chunks take three times as long as the others.)
    fn pass(
        &self,
        samples: &[f32],
        piece: (usize, usize),
        language: Option<&str>,
        prompt: Option<&str>,
        options: &DecodeOptions,
    ) -> Result<Pass, AsrError> {
        if let Some(language) = language {
            return self.decode_piece(samples, piece, language, prompt, options, false);
        }
        let guess = self.decode_piece(samples, piece, LANGUAGE_GUESS, prompt, options, true)?;
        match guess.language.as_deref() {
            Some(heard) if heard != LANGUAGE_GUESS => {
                self.decode_piece(samples, piece, heard, prompt, options, false)
            }
            _ => Ok(guess),
        }
    }

    /// One pass in `language`; `detect`: its `language` is the one the decoder hears (else
    /// the one it was given).
    fn decode_piece(
        &self,
        samples: &[f32],
        (offset, length): (usize, usize),
        language: &str,
        prompt: Option<&str>,
        options: &DecodeOptions,
        detect: bool,
    ) -> Result<Pass, AsrError> {
        let failed =
            |what: &str, e: &dyn std::fmt::Display| AsrError::Inference(format!("{what}: {e}"));
        let mut state = self
            .context
            .create_state()
            .map_err(|e| failed("creating state", &e))?;
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(self.threads as i32);
        params.set_language(Some(language));
        params.set_translate(options.translate && self.info.multilingual);
        params.set_no_context(true);
        params.set_single_segment(true);
        let max_tokens =
            (TOKENS_PER_PASS + TOKENS_PER_SECOND * length as f64 / 16_000.0).ceil() as i32;
        params.set_max_tokens(max_tokens.min(MAX_PASS_TOKENS));
        params.set_token_timestamps(true);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        // Greedy (at temperature 0 unless the client asks for sampling), never redone warmer
        // inside whisper.cpp (five fallback decodes made one chunk take 6 s): `transcribe`
        // judges the pass and retries it.
        params.set_temperature(options.temperature.clamp(0.0, 1.0));
        params.set_temperature_inc(0.0);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        // Offsets are whole 20 ms steps: they come from timestamp tokens.
        let duration = length.max(MIN_PIECE_SAMPLES);
        params.set_offset_ms((offset / 16) as i32);
        params.set_duration_ms(duration.div_ceil(16) as i32);
        params.set_audio_ctx(self.window_positions(duration as f64 / 16_000.0));
        // whisper-rs panics on a NUL byte (a C string); the prompt is client text.
        let prompt = prompt.map(|p| p.replace('\0', ""));
        if let Some(prompt) = prompt.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            params.set_initial_prompt(prompt);
        }
        state
            .full(params, samples)
            .map_err(|e| failed("decoding", &e))?;

        let (eot, beg) = (self.context.token_eot(), self.context.token_beg());
        let mut segments = Vec::new();
        let mut stopped_at = None;
        let mut last_two = [None, None];
        let mut produced = 0;
        for segment in state.as_iter() {
            let no_speech = segment.no_speech_probability();
            // Whisper's segments: the text between two timestamp tokens.
            let mut tokens: Vec<(TimedToken, f32)> = Vec::new();
            let mut opened_at = offset as f64 / 16_000.0;
            for i in 0..segment.n_tokens() {
                let Some(token) = segment.get_token(i) else {
                    continue;
                };
                let id = token.token_id();
                if id < eot || id >= beg {
                    last_two = [last_two[1], Some(id)];
                    produced += 1;
                }
                if id >= beg {
                    // Timestamp tokens count 20 ms steps from the pass's start.
                    let at_sample = offset + (id - beg) as usize * 320;
                    let at = at_sample as f64 / 16_000.0;
                    if id > beg {
                        stopped_at = Some(at_sample);
                    }
                    if !tokens.is_empty() {
                        segments.push(self.segment(
                            std::mem::take(&mut tokens),
                            opened_at,
                            at,
                            no_speech,
                        ));
                    }
                    opened_at = at;
                    continue;
                }
                if id >= eot {
                    continue;
                }
                let data = token.token_data();
                let (start, end) = if self.dtw && data.t_dtw >= 0 {
                    (data.t_dtw, data.t1.max(data.t_dtw))
                } else {
                    (data.t0, data.t1)
                };
                let timed = TimedToken {
                    bytes: token.to_bytes().map(<[u8]>::to_vec).unwrap_or_default(),
                    start: start as f64 / 100.0,
                    end: end as f64 / 100.0,
                    probability: data.p,
                };
                tokens.push((timed, data.plog));
            }
            if !tokens.is_empty() {
                let end = tokens.last().map_or(opened_at, |(t, _)| t.end);
                segments.push(self.segment(tokens, opened_at, end, no_speech));
            }
        }
        // Whisper's rule: text closed by a single timestamp (not a pair) means the decoder
        // heard the whole piece; it stopped early only after a closed pair.
        if let [Some(before), Some(last)] = last_two {
            if last > beg && before < eot {
                stopped_at = None;
            }
        }
        // A pass cut off by its token limit stopped inside its text: the next pass starts
        // at the last word (which may be cut) unless a timestamp closed text after it.
        if produced >= max_tokens.min(MAX_PASS_TOKENS) - 1 && last_two[1].is_some_and(|t| t < eot) {
            let last_word_start = segments.last_mut().and_then(|s: &mut Segment| {
                let word = s.words.pop()?;
                s.retext();
                Some(word.start)
            });
            if let Some(start) = last_word_start {
                let at = (start * 16_000.0) as usize;
                if stopped_at.is_none_or(|s| s < at) {
                    stopped_at = Some(at);
                }
            }
            segments.retain(|s| !s.words.is_empty());
        }
        let language = if detect {
            self.heard_language(&mut state)
                .map_err(|e| failed("detecting the language", &e))?
        } else {
            language
        };
        Ok(Pass {
            language: Some(language.to_string()),
            segments,
            stopped_at,
        })
    }

    /// The language Whisper hears in the piece `state` last encoded: the likeliest language
    /// token after start-of-transcript, one decoder step.
    fn heard_language(
        &self,
        state: &mut whisper_rs::WhisperState,
    ) -> Result<&'static str, whisper_rs::WhisperError> {
        state.decode(&[self.context.token_sot()], 0, self.threads)?;
        let logits = state.get_logits()?;
        // The model's language tokens sit between start-of-transcript and translate.
        let languages = self.context.token_translate() - self.context.token_sot() - 1;
        let logit = |id: i32| {
            let token = self.context.token_lang(id) as usize;
            logits.get(token).copied().unwrap_or(f32::NEG_INFINITY)
        };
        let best = (0..languages)
            .max_by(|&a, &b| logit(a).total_cmp(&logit(b)))
            .unwrap_or(0);
        Ok(whisper_rs::get_lang_str(best).unwrap_or(LANGUAGE_GUESS))
    }

    /// One of Whisper's segments from its text tokens (with their log-probabilities).
    fn segment(
        &self,
        tokens: Vec<(TimedToken, f32)>,
        start: f64,
        end: f64,
        no_speech: f32,
    ) -> Segment {
        let n = tokens.len().max(1) as f32;
        let confidence = tokens.iter().map(|(t, _)| t.probability).sum::<f32>() / n;
        let avg_logprob = tokens.iter().map(|(_, plog)| plog).sum::<f32>() / n;
        let mut tokens: Vec<TimedToken> = tokens.into_iter().map(|(t, _)| t).collect();
        if self.dtw {
            // DTW marks where each token starts: a token ends where the next one starts.
            for i in 1..tokens.len() {
                let next_start = tokens[i].start;
                tokens[i - 1].end = next_start.max(tokens[i - 1].start);
            }
        }
        let bytes: Vec<u8> = tokens
            .iter()
            .flat_map(|t| t.bytes.iter().copied())
            .collect();
        Segment {
            text: String::from_utf8_lossy(&bytes).trim().to_string(),
            start,
            end,
            confidence,
            no_speech_probability: no_speech,
            avg_logprob,
            words: group_words(&tokens),
        }
    }
}
