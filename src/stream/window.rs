//! Whisper on one window: skip it on audio without speech, run it otherwise, and drop
//! what Whisper produces on non-speech (markers such as `[BLANK_AUDIO]`,
//! segments it itself judges to be no speech).

use crate::asr::{AsrError, DecodeOptions, Progress, Segment, Transcriber, Transcript};
use crate::vad::SpeechMap;

/// Less detected speech than this (seconds) and Whisper is not called at all.
pub(super) const MIN_SPEECH_SECONDS: f64 = 0.15;
/// Silence kept after the last speech when the rest is cut off before Whisper.
const TRAILING_PAUSE_SECONDS: f64 = 0.3;
/// A word may start this long after the VAD's last speech (DTW times are ~0.1 s accurate).
const WORD_AFTER_SPEECH_SECONDS: f64 = 0.15;
/// Whisper's own rule: a segment is dropped as non-speech when the no-speech probability
/// is above this and the text is also unlikely (average log-probability below the next).
const NO_SPEECH_PROBABILITY: f32 = 0.6;
const NO_SPEECH_LOGPROB: f32 = -1.0;
/// A prompted pass that leaves a stretch with this much speech (seconds) between its words
/// unheard skipped it: the decoder took the audio for text the prompt already holds (a
/// phrase said again, the re-heard end of the committed text). It is decoded once more
/// without the prompt, and the decode that leaves less speech unheard is kept.
const SKIPPED_SPEECH_SECONDS: f64 = 0.75;
/// The unprompted decode is kept when it leaves at least this much less speech unheard.
const SKIPPED_SPEECH_GAIN_SECONDS: f64 = 0.3;

/// What Whisper heard in one window.
#[derive(Debug, Clone)]
pub struct WindowTranscript {
    /// Recognised segments, times relative to the chunk.
    pub segments: Vec<Segment>,
    /// Language used or detected (`None` when Whisper did not run).
    pub language: Option<String>,
    /// Seconds from which Whisper's text cannot be trusted (a loop was cut out there).
    pub unreliable_from: Option<f64>,
}

/// Transcribes one window of 16 kHz mono audio.
/// `speech` is the VAD's map of `samples`.
pub fn transcribe_window(
    engine: &dyn Transcriber,
    samples: &[f32],
    speech: &SpeechMap,
    options: &DecodeOptions,
) -> Result<WindowTranscript, AsrError> {
    if speech.speech_seconds() < MIN_SPEECH_SECONDS {
        return Ok(WindowTranscript {
            segments: Vec::new(),
            language: options.language.clone(),
            unreliable_from: None,
        });
    }
    // Whisper hallucinates over long trailing silence ("Thank you.", a repeat of the prompt):
    // it hears the speech and a short pause after it, no more.
    let trailing = speech.trailing_silence_seconds();
    let heard = if trailing > TRAILING_PAUSE_SECONDS {
        let cut = ((trailing - TRAILING_PAUSE_SECONDS) * 16_000.0) as usize;
        &samples[..samples.len() - cut.min(samples.len())]
    } else {
        samples
    };
    // Words that start in that trailing silence are made up, however sure Whisper is.
    let speech_end = samples.len() as f64 / 16_000.0 - trailing + WORD_AFTER_SPEECH_SECONDS;
    let heard_speech = move |segments: Vec<Segment>| -> Vec<Segment> {
        segments
            .into_iter()
            .filter(is_speech)
            .filter_map(|mut segment| {
                segment.words.retain(|w| w.start < speech_end);
                (!segment.words.is_empty()).then_some(segment)
            })
            .collect()
    };
    // A listener hears each pass as this function will keep it.
    let mut options = options.clone();
    if let Some(listener) = options.progress.take() {
        options.progress = Some(Progress::new(move |pass: &[Segment]| {
            listener.tell(&heard_speech(pass.to_vec()));
        }));
    }
    let mut transcript = engine.transcribe(heard, &options)?;
    transcript.segments = heard_speech(transcript.segments);
    let skipped = skipped_speech(&transcript.segments, speech);
    if options.prompt.is_some() && skipped >= SKIPPED_SPEECH_SECONDS {
        let unprompted = DecodeOptions {
            prompt: None,
            ..options.clone()
        };
        let mut again = engine.transcribe(heard, &unprompted)?;
        again.segments = heard_speech(again.segments);
        let again_skipped = skipped_speech(&again.segments, speech);
        tracing::debug!(event = "skipped_speech", skipped, again_skipped);
        if again_skipped + SKIPPED_SPEECH_GAIN_SECONDS <= skipped {
            transcript = again;
        }
    }
    Ok(WindowTranscript {
        segments: transcript.segments,
        language: transcript.language,
        unreliable_from: transcript.unreliable_from,
    })
}

/// Whisper on one window of a long file (`asr::Spread`): [`transcribe_window`] with the
/// window's own VAD map, so that each window is heard as a window of a stream is.
pub fn transcribe_speech(
    engine: &dyn Transcriber,
    samples: &[f32],
    options: &DecodeOptions,
) -> Result<Transcript, AsrError> {
    let window = transcribe_window(engine, samples, &SpeechMap::of(samples), options)?;
    Ok(Transcript {
        segments: window.segments,
        language: window.language,
        unreliable_from: window.unreliable_from,
    })
}

/// The most speech (seconds, by the VAD) in one stretch a pass left without words: before
/// its first word or between two words (speech after the last word may be a word still
/// being said). A pass with no words leaves all the speech unheard.
fn skipped_speech(segments: &[Segment], speech: &SpeechMap) -> f64 {
    let ms = |seconds: f64| (seconds.max(0.0) * 1000.0) as u64;
    let mut heard_until = 0;
    let mut most: f64 = 0.0;
    let mut any = false;
    for word in segments.iter().flat_map(|s| s.words.iter()) {
        any = true;
        let start = ms(word.start);
        if start > heard_until {
            most = most.max(speech.speech_seconds_between(heard_until, start));
        }
        heard_until = heard_until.max(ms(word.end));
    }
    if any {
        most
    } else {
        speech.speech_seconds()
    }
}

fn is_speech(segment: &Segment) -> bool {
    if segment.words.is_empty() || is_marker(&segment.text) {
        return false;
    }
    !(segment.no_speech_probability > NO_SPEECH_PROBABILITY
        && segment.avg_logprob < NO_SPEECH_LOGPROB)
}

/// Whole-segment annotations Whisper emits for non-speech: `[BLANK_AUDIO]`, `(music)`,
/// `*applause*`, `♪ ♪`.
fn is_marker(text: &str) -> bool {
    let t = text.trim();
    let wrapped = |open: char, close: char| t.starts_with(open) && t.ends_with(close);
    t.is_empty()
        || wrapped('[', ']')
        || wrapped('(', ')')
        || wrapped('*', '*')
        || t.chars()
            .all(|c| c == '♪' || c == '♫' || c.is_whitespace() || c.is_ascii_punctuation())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asr::{ModelInfo, Transcript, Word};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A test double that records calls and answers with a fixed transcript.
    struct Scripted {
        calls: AtomicUsize,
        answer: Vec<Segment>,
        info: ModelInfo,
    }

    impl Transcriber for Scripted {
        fn transcribe(&self, _: &[f32], _: &DecodeOptions) -> Result<Transcript, AsrError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(Transcript {
                segments: self.answer.clone(),
                language: Some("en".into()),
                unreliable_from: None,
            })
        }
        fn info(&self) -> &ModelInfo {
            &self.info
        }
    }

    fn segment(text: &str, no_speech: f32, logprob: f32) -> Segment {
        Segment {
            text: text.into(),
            start: 0.0,
            end: 1.0,
            confidence: 0.9,
            no_speech_probability: no_speech,
            avg_logprob: logprob,
            words: vec![Word {
                word: text.into(),
                start: 0.0,
                end: 1.0,
                probability: 0.9,
            }],
        }
    }

    fn scripted(answer: Vec<Segment>) -> Scripted {
        Scripted {
            calls: AtomicUsize::new(0),
            answer,
            info: ModelInfo::scripted(),
        }
    }

    #[test]
    fn silence_never_reaches_the_engine() {
        let engine = scripted(vec![segment("Thank you for watching.", 0.1, -0.2)]);
        let silence = vec![0.0; 32_000];
        let speech = SpeechMap::of(&silence);
        let out = transcribe_window(&engine, &silence, &speech, &DecodeOptions::default()).unwrap();
        assert!(out.segments.is_empty());
        assert_eq!(engine.calls.load(Ordering::SeqCst), 0);
    }

    /// Hears the whole window without a prompt, and with one only its last second.
    struct SkipsWhenPrompted {
        calls: AtomicUsize,
        info: ModelInfo,
    }

    impl Transcriber for SkipsWhenPrompted {
        fn transcribe(
            &self,
            samples: &[f32],
            options: &DecodeOptions,
        ) -> Result<Transcript, AsrError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let end = samples.len() as f64 / 16_000.0;
            let from = if options.prompt.is_some() {
                end - 1.0
            } else {
                0.0
            };
            let words: Vec<Word> = (0..((end - from) / 0.4) as usize)
                .map(|i| Word {
                    word: format!("w{i}"),
                    start: from + i as f64 * 0.4,
                    end: from + i as f64 * 0.4 + 0.4,
                    probability: 0.9,
                })
                .collect();
            Ok(Transcript {
                segments: vec![Segment {
                    text: "words".into(),
                    start: from,
                    end,
                    confidence: 0.9,
                    no_speech_probability: 0.0,
                    avg_logprob: -0.2,
                    words,
                }],
                language: Some("en".into()),
                unreliable_from: None,
            })
        }
        fn info(&self) -> &ModelInfo {
            &self.info
        }
    }

    #[test]
    fn a_prompted_pass_that_skips_speech_is_decoded_again_without_the_prompt() {
        let audio = crate::stream::invariants::speech();
        // Four seconds of continuous speech from the first utterance.
        let onset = SpeechMap::of(&audio).speech_onset_after(0).unwrap() as usize * 16;
        let window = &audio[onset..onset + 64_000];
        let speech = SpeechMap::of(window);
        assert!(speech.speech_seconds() > 3.0);
        let engine = SkipsWhenPrompted {
            calls: AtomicUsize::new(0),
            info: ModelInfo::scripted(),
        };
        let prompted = DecodeOptions {
            prompt: Some("the words before".into()),
            ..DecodeOptions::default()
        };
        let out = transcribe_window(&engine, window, &speech, &prompted).unwrap();
        assert_eq!(engine.calls.load(Ordering::SeqCst), 2);
        assert!(out.segments[0].words[0].start < 0.5, "{:?}", out.segments);
        // Without a prompt there is nothing to retry without.
        let out = transcribe_window(&engine, window, &speech, &DecodeOptions::default()).unwrap();
        assert_eq!(engine.calls.load(Ordering::SeqCst), 3);
        assert!(out.segments[0].words[0].start < 0.5);
    }

    #[test]
    fn markers_and_unlikely_no_speech_segments_are_dropped() {
        assert!(is_marker("[BLANK_AUDIO]"));
        assert!(is_marker(" (music) "));
        assert!(is_marker("♪ ♪"));
        assert!(!is_marker("Hello (quietly) there"));
        assert!(!is_speech(&segment("Hmm", 0.9, -1.5)));
        assert!(is_speech(&segment("Hello", 0.9, -0.3)));
        assert!(is_speech(&segment("Hello", 0.2, -1.5)));
    }
}
