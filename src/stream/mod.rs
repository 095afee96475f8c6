//! Streaming without server state: everything a stream needs between chunks is a
//! `StreamState`, carried by the client (sealed token) or in Redis, and one call of
//! `process_chunk` turns (state, new audio) into (new state, final segments, partial).
//!
//! The policy, per chunk (see `docs/streaming.md`): window = uncommitted tail + new
//! audio; VAD; no speech and nothing pending → no Whisper call; otherwise Whisper on the
//! window, prompted with recent committed text only; LocalAgreement-2 with a guard band;
//! commit everything at a VAD endpoint or on the final chunk; force-commit when the tail
//! reaches its cap; committed words become final segments, never revised.

pub(crate) mod agreement;
mod cut;
#[cfg(test)]
pub(crate) mod invariants;
mod labels;
mod state;
mod tail;
mod window;

use crate::asr::{AsrError, DecodeOptions, Transcriber};
use crate::vad::SpeechMap;
pub use agreement::TimedWord;
use agreement::{drop_committed, normalise, words_to_commit};
use cut::{
    dtw_lost_its_way, latest_pause, plausible_prefix, quietest_point, unheard_speech, vad_cut,
    KEEP_BEFORE_WORD_MS, MIN_CUT_PAUSE_MS, UNHEARD_LEAD_MS,
};
pub use state::{tail_digest, StreamState, TailAudio, TailError};
pub use window::transcribe_speech;
use window::{transcribe_window, MIN_SPEECH_SECONDS};

const RATE: u64 = 16_000;

/// Tunables of the policy.
#[derive(Debug, Clone, Copy)]
pub struct StreamPolicy {
    /// Words ending this close to the window's end are never committed by agreement.
    pub guard_ms: u64,
    /// Trailing silence that ends an utterance: everything pending is committed.
    pub endpoint_silence_ms: u64,
    /// A pause at least this long inside the window, with speech after it, ends a phrase
    /// whose words are then committed on first sight (0: never).
    pub pause_commit_ms: u64,
    /// Tail length beyond which it is cut after the last committed word even without a pause.
    pub soft_tail_ms: u64,
    /// Longest tail; beyond it words are force-committed.
    pub max_tail_ms: u64,
    /// Characters of committed text kept as prompt.
    pub prompt_chars: usize,
}

impl Default for StreamPolicy {
    fn default() -> Self {
        StreamPolicy {
            guard_ms: 500,
            endpoint_silence_ms: 500,
            pause_commit_ms: 250,
            soft_tail_ms: 8_000,
            max_tail_ms: 10_000,
            prompt_chars: 200,
        }
    }
}

/// Per-request options.
#[derive(Debug, Clone, Default)]
pub struct ChunkOptions {
    /// The client's last chunk: commit everything.
    pub last: bool,
    /// Language forced by the request (overrides the locked one).
    pub language: Option<String>,
    /// Speaker labelling, when on.
    pub speakers: Option<crate::speaker::TrackerPolicy>,
    /// Whisper's translate task (to English) instead of transcription.
    pub translate: bool,
    /// Sampling temperature (0: greedy, deterministic).
    pub temperature: f32,
    /// Hears Whisper's segments pass by pass (times from the window's start), before the
    /// policy commits them: a whole file's text can be shown while it is decoded.
    pub progress: Option<crate::asr::Progress>,
}

/// How sure Whisper was of one of its segments (stream time), for clients that want its
/// own measures beside the committed text.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentScore {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Mean log-probability of the segment's text tokens.
    pub avg_logprob: f32,
    /// The model's probability that the segment's window held no speech.
    pub no_speech_probability: f32,
}

/// A committed, final segment in stream time.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalSegment {
    pub words: Vec<TimedWord>,
    /// The speaker, when speaker labels are on and one could be computed.
    pub speaker: Option<crate::speaker::Label>,
    /// The segment's voiceprint, when it held enough speech to compute one (Redis sessions
    /// keep it for the end-of-session relabel).
    pub voiceprint: Option<crate::speaker::Voiceprint>,
}

impl FinalSegment {
    pub fn text(&self) -> String {
        join_words(&self.words)
    }
}

/// What one chunk produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkOutcome {
    /// Newly committed segments.
    pub segments: Vec<FinalSegment>,
    /// The unconfirmed words after this chunk.
    pub partial: Vec<TimedWord>,
    /// Whether Whisper ran.
    pub recognised: bool,
    /// Time spent on speaker labels.
    pub speaker_ms: u64,
    /// Whisper's segments of this chunk's pass, with its scores (empty when it did not run).
    pub scores: Vec<SegmentScore>,
}

/// Runs the policy for one chunk of 16 kHz mono audio, after the stream's `tail` audio
/// (from [`StreamState::tail_audio`]).
pub fn process_chunk(
    engine: &dyn Transcriber,
    speaker_encoder: Option<&dyn crate::speaker::SpeakerEncoder>,
    mut state: StreamState,
    tail: &[f32],
    new_audio: &[f32],
    options: &ChunkOptions,
    policy: &StreamPolicy,
) -> Result<(StreamState, ChunkOutcome), AsrError> {
    let window_start = state.tail_start;
    let mut window = Vec::with_capacity(tail.len() + new_audio.len());
    window.extend_from_slice(tail);
    window.extend_from_slice(new_audio);
    let window_end = window_start + window.len() as u64;
    state.received_until = window_end;
    state.seq += 1;
    let (window_start_ms, window_end_ms) = (to_ms(window_start), to_ms(window_end));

    // The VAD runs once over the window; every question below is answered from its map.
    let speech = SpeechMap::of(&window);
    let tail_ms = window_end_ms - window_start_ms - to_ms(new_audio.len() as u64);
    let new_speech = speech.speech_seconds_from(tail_ms) >= MIN_SPEECH_SECONDS;
    let trailing_silence_ms = (speech.trailing_silence_seconds() * 1000.0) as u64;
    let endpoint = trailing_silence_ms >= policy.endpoint_silence_ms;
    // Speech in the tail that no final word covers (Whisper heard it and said nothing it
    // could commit yet): the last chunk must hear it again before the stream ends.
    let unheard_in_tail = unheard_speech(&speech, window_start_ms, state.committed_until_ms)
        .is_some_and(|at| at < window_start_ms + tail_ms);

    let mut recognised = false;
    let mut scores = Vec::new();
    let mut unreliable_from_ms = None;
    // Whether words were cut off the end of the pass (made up, or after a loop).
    let mut cut_short = false;
    // What the pass heard before the policy filtered it (debug log only).
    let mut heard = String::new();
    let nothing_new = new_audio.is_empty() && !options.last;
    let hypothesis: Vec<TimedWord> = if nothing_new
        || (!new_speech
            && (state.pending.is_empty() || endpoint)
            && !(options.last && unheard_in_tail))
    {
        // Nothing new to hear: the previous hypothesis stands (and is final at an endpoint).
        state.pending.clone()
    } else {
        recognised = true;
        let decode = DecodeOptions {
            language: options.language.clone().or_else(|| state.language.clone()),
            prompt: Some(state.prompt.clone()).filter(|p| !p.is_empty()),
            translate: options.translate,
            temperature: options.temperature,
            progress: options.progress.clone(),
        };
        let started = std::time::Instant::now();
        let transcript = transcribe_window(engine, &window, &speech, &decode)?;
        // What Whisper heard and how long it took (the live benchmark replays these windows).
        tracing::debug!(
            event = "window",
            start_ms = window_start_ms,
            end_ms = window_end_ms,
            whisper_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
        let at_ms = |seconds: f64| window_start_ms + (seconds.max(0.0) * 1000.0).round() as u64;
        scores = transcript
            .segments
            .iter()
            .map(|s| SegmentScore {
                start_ms: at_ms(s.start),
                end_ms: at_ms(s.end),
                avg_logprob: s.avg_logprob,
                no_speech_probability: s.no_speech_probability,
            })
            .collect();
        if state.language.is_none() && !transcript.segments.is_empty() {
            state.language = transcript.language.clone();
        }
        let words = transcript
            .segments
            .iter()
            .flat_map(|s| s.words.iter())
            .map(|w| {
                let start_ms =
                    (window_start_ms + (w.start * 1000.0).round() as u64).min(window_end_ms);
                let end_ms = window_start_ms + (w.end * 1000.0).round() as u64;
                TimedWord {
                    text: w.word.clone(),
                    start_ms,
                    end_ms: end_ms.clamp(start_ms, window_end_ms),
                    probability_milli: (w.probability.clamp(0.0, 1.0) * 1000.0).round() as u16,
                }
            })
            .collect::<Vec<TimedWord>>();
        if tracing::enabled!(tracing::Level::DEBUG) {
            heard = timed_text(&words);
        }
        let tail_words: Vec<String> = state
            .tail_words
            .iter()
            .map(|w| normalise(&w.text))
            .collect();
        let prompt_words: Vec<String> = state.prompt.split_whitespace().map(normalise).collect();
        let mut words = drop_committed(words, state.committed_until_ms, &tail_words, &prompt_words);
        if !options.last {
            // Hallucinations are dropped; on the last chunk nothing can wait for another pass,
            // and DTW crams real words into the last instant of a window too. Words after a
            // loop Whisper was cut out of wait for the next pass too. Their audio stays in
            // the tail (below), so nothing is lost by waiting.
            let heard_words = words.len();
            words.truncate(plausible_prefix(&words));
            unreliable_from_ms = transcript
                .unreliable_from
                .map(|s| window_start_ms + (s * 1000.0) as u64);
            if let Some(at) = unreliable_from_ms {
                words.retain(|w| w.start_ms < at);
            }
            cut_short = words.len() < heard_words;
        }
        words
    };
    // A pass that lost every word the previous pass heard over speech (it failed: more
    // audio never unsays words) leaves the previous words pending, unconfirmed, for the next
    // pass. Words the previous pass made up over silence may go.
    let pending_over_speech = match (state.pending.first(), state.pending.last()) {
        (Some(first), Some(last)) if first.start_ms >= window_start_ms => {
            let (from, to) = (
                first.start_ms - window_start_ms,
                last.end_ms - window_start_ms,
            );
            speech.speech_seconds_between(from, to) * 1000.0 >= 0.3 * (to - from) as f64
        }
        _ => false,
    };
    let failed_pass = recognised && hypothesis.is_empty() && pending_over_speech;
    let hypothesis = if failed_pass {
        state.pending.clone()
    } else {
        hypothesis
    };

    let commit_all = options.last || endpoint;
    let mut n = if failed_pass && !commit_all {
        0
    } else {
        words_to_commit(
            &state.pending,
            &hypothesis,
            window_end_ms,
            policy.guard_ms,
            commit_all,
        )
    };
    // Pauses the VAD hears inside the window, in stream time.
    let pauses: Vec<(u64, u64)> = speech
        .pauses_ms(MIN_CUT_PAUSE_MS)
        .into_iter()
        .map(|(start, end)| (window_start_ms + start, window_start_ms + end))
        .collect();
    // A long pause with speech after it ends a phrase: Whisper heard the whole phrase with
    // context on both sides, so a second pass would not change it.
    if policy.pause_commit_ms > 0 {
        if let Some(&(start, end)) = pauses
            .iter()
            .rev()
            .find(|(start, end)| end - start >= policy.pause_commit_ms)
        {
            let middle = (start + end) / 2;
            let before = hypothesis
                .iter()
                .take_while(|w| w.start_ms < middle)
                .count();
            n = n.max(before);
        }
    }
    // Cut the window inside the latest pause after a committed word, so that committed
    // words are not heard again and Whisper never starts inside a sentence. Whisper
    // stretches a phrase's last word over the pause after it; the VAD knows better.
    let pause_cut = vad_cut(&pauses, &hypothesis, n, window_end_ms);
    let mut cut = match pause_cut {
        Some((_, _, middle)) => middle,
        None => latest_pause(&window, window_start_ms, &hypothesis, n).unwrap_or(window_start_ms),
    };
    // No pause: past the soft cap, cut after the last committed word anyway.
    if window_end_ms.saturating_sub(cut) > policy.soft_tail_ms && n > 0 {
        cut = cut.max(quietest_point(&window, window_start_ms, &hypothesis, n));
    }
    // Force-commit when the tail would outgrow its cap.
    while window_end_ms.saturating_sub(cut) > policy.max_tail_ms && n < hypothesis.len() {
        n += 1;
        cut = quietest_point(&window, window_start_ms, &hypothesis, n);
    }
    if options.last {
        cut = window_end_ms;
    } else {
        if n == hypothesis.len() && !cut_short && (endpoint || !new_speech) {
            // Nothing pending: keep only a short lead-in in case speech starts at the chunk's end.
            // (Words cut off the pass are pending in all but name: their audio stays below.)
            cut = cut.max(window_end_ms.saturating_sub(300));
        } else if n > 0
            && (dtw_lost_its_way(&hypothesis, n, cut_short)
                || no_pause_before(&hypothesis, n, pause_cut))
        {
            // Where DTW lost its way after the last committed word (words crammed into an
            // instant or cut off), or no VAD pause separates that word from the next (DTW puts
            // starts late there), its times cannot place a cut: one after that word can
            // slice off the next. The word stays in the tail and is heard again whole;
            // `drop_committed` aligns on its text.
            let overlap = vad_cut(&pauses, &hypothesis, n - 1, window_end_ms).map_or_else(
                || {
                    hypothesis[n - 1]
                        .start_ms
                        .saturating_sub(KEEP_BEFORE_WORD_MS)
                },
                |(_, _, middle)| middle,
            );
            if window_end_ms.saturating_sub(overlap) <= policy.soft_tail_ms {
                cut = cut.min(overlap);
            }
        }
        // Never cut away audio whose words are not final: the first pending word, speech
        // the VAD hears after the last final word (a pass that returned nothing for it, a
        // loop cut out, a hallucination guard), stay in the tail. Only the tail cap below
        // drops audio, after its words were committed as heard.
        let heard_until = n.checked_sub(1).map_or(state.committed_until_ms, |i| {
            hypothesis[i].end_ms.max(state.committed_until_ms)
        });
        let unheard = unheard_speech(&speech, window_start_ms, heard_until)
            .filter(|at| window_end_ms.saturating_sub(*at) <= policy.soft_tail_ms);
        let keep_from = hypothesis
            .get(n)
            .map(|w| w.start_ms.saturating_sub(KEEP_BEFORE_WORD_MS))
            .into_iter()
            .chain(unheard.map(|at| at.saturating_sub(UNHEARD_LEAD_MS).max(heard_until)))
            .chain(unreliable_from_ms)
            .min();
        if let Some(keep_from) = keep_from {
            cut = cut.min(keep_from);
        }
    }
    cut = cut
        .clamp(window_start_ms, window_end_ms)
        .max(window_end_ms.saturating_sub(policy.max_tail_ms));

    // Final words never overlap earlier final words (Whisper's times may, slightly).
    let (before_cut, ceiling) = pause_cut.map_or((0, 0), |(k, start, _)| (k, start));
    let mut floor = state.committed_until_ms;
    let committed: Vec<TimedWord> = hypothesis[..n]
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let start_ms = w.start_ms.max(floor);
            let end_ms = if i < before_cut {
                w.end_ms.min(ceiling)
            } else {
                w.end_ms
            };
            let word = TimedWord {
                start_ms,
                end_ms: end_ms.max(start_ms),
                ..w.clone()
            };
            floor = word.end_ms;
            word
        })
        .collect();
    let pending: Vec<TimedWord> = hypothesis[n..].to_vec();
    if let Some(last) = committed.last() {
        state.committed_until_ms = state.committed_until_ms.max(last.end_ms);
    }
    let cut_sample = (cut * RATE / 1000).clamp(window_start, window_end);
    let kept = &window[(cut_sample - window_start) as usize..];
    state.tail = state.tail.holding(kept);
    state.tail_start = cut_sample;
    state.pending = pending.clone();

    // Committed words now before the tail move into the prompt; the rest stay tail words.
    let mut inside = std::mem::take(&mut state.tail_words);
    inside.extend(committed.iter().cloned());
    let (before, after): (Vec<TimedWord>, Vec<TimedWord>) =
        inside.into_iter().partition(|w| w.end_ms <= cut);
    state.tail_words = after;
    if !before.is_empty() {
        let combined = format!("{} {}", state.prompt, join_words(&before));
        state.prompt = last_chars_on_word_boundary(combined.trim(), policy.prompt_chars);
    }
    tracing::debug!(
        event = "pass",
        seq = state.seq,
        start_ms = window_start_ms,
        end_ms = window_end_ms,
        heard = heard.as_str(),
        hypothesis = timed_text(&hypothesis).as_str(),
        committed = n,
        failed_pass,
        endpoint,
        cut_ms = cut,
    );
    let mut segments = split_segments(committed);
    let speaker_started = std::time::Instant::now();
    if let (Some(encoder), Some(policy)) = (speaker_encoder, options.speakers.as_ref()) {
        segments = labels::label_segments(
            encoder,
            &mut state.speakers,
            policy,
            &window,
            window_start_ms,
            segments,
            &pending,
        );
        // A whole recording in one request: its final labels at once, as a stream's
        // relabel gives them at its end.
        if options.last && state.seq == 1 {
            labels::relabel_segments(&mut segments, &state.speakers, policy);
        }
    }
    Ok((
        state,
        ChunkOutcome {
            segments,
            partial: pending,
            recognised,
            speaker_ms: speaker_started.elapsed().as_millis() as u64,
            scores,
        },
    ))
}

/// Whether a word is pending after committed word `n - 1` with no VAD pause between them
/// (`pause_cut`, from [`vad_cut`], found none after word `n - 1`).
fn no_pause_before(
    hypothesis: &[TimedWord],
    n: usize,
    pause_cut: Option<(usize, u64, u64)>,
) -> bool {
    n < hypothesis.len() && pause_cut.is_none_or(|(k, _, _)| k < n)
}

/// Words with their stream times, `text@start-end` (for the debug log).
fn timed_text(words: &[TimedWord]) -> String {
    words
        .iter()
        .map(|w| format!("{}@{}-{}", w.text, w.start_ms, w.end_ms))
        .collect::<Vec<_>>()
        .join(" ")
}

fn to_ms(samples: u64) -> u64 {
    samples * 1000 / RATE
}

/// Splits committed words into segments at sentence ends and at pauses over a second.
fn split_segments(words: Vec<TimedWord>) -> Vec<FinalSegment> {
    let mut segments = Vec::new();
    let mut current: Vec<TimedWord> = Vec::new();
    for word in words {
        if let Some(prev) = current.last() {
            if ends_sentence(&prev.text) || word.start_ms > prev.end_ms + 1_000 {
                segments.push(FinalSegment {
                    words: std::mem::take(&mut current),
                    speaker: None,
                    voiceprint: None,
                });
            }
        }
        current.push(word);
    }
    if !current.is_empty() {
        segments.push(FinalSegment {
            words: current,
            speaker: None,
            voiceprint: None,
        });
    }
    segments
}

/// Whether a word ends a sentence: closing punctuation, but not a title or an initial
/// ("Mr. Dashwood", "J. Smith", "e.g.").
fn ends_sentence(word: &str) -> bool {
    if !word.ends_with(['.', '?', '!', '。', '？', '！']) {
        return false;
    }
    let stem = word.trim_end_matches('.');
    let abbreviation = word.ends_with('.')
        && (matches!(
            stem.to_lowercase().as_str(),
            "mr" | "mrs" | "ms" | "dr" | "st" | "jr" | "sr" | "prof" | "vs" | "e.g" | "i.e"
        ) || (stem.chars().count() == 1 && stem.chars().all(char::is_uppercase)));
    !abbreviation
}

pub fn join_words(words: &[TimedWord]) -> String {
    words
        .iter()
        .map(|w| w.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn last_chars_on_word_boundary(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let start = text
        .char_indices()
        .nth(text.chars().count() - max)
        .map_or(0, |(i, _)| i);
    let cut = &text[start..];
    match cut.find(' ') {
        Some(space) => cut[space + 1..].to_string(),
        None => cut.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn word(text: &str, start_ms: u64, end_ms: u64) -> TimedWord {
        TimedWord {
            text: text.into(),
            start_ms,
            end_ms,
            probability_milli: 900,
        }
    }

    #[test]
    fn segments_split_at_sentence_ends_and_pauses() {
        let segments = split_segments(vec![
            word("Hi.", 0, 300),
            word("How", 400, 500),
            word("are", 500, 600),
            word("you", 2000, 2200),
        ]);
        let texts: Vec<String> = segments.iter().map(|s| s.text()).collect();
        assert_eq!(texts, ["Hi.", "How are", "you"]);
    }

    #[test]
    fn words_crammed_into_an_instant_are_not_speech() {
        let said = [
            word("Agent", 0, 400),
            word("logged", 400, 800),
            word("in.", 800, 900),
        ];
        assert_eq!(plausible_prefix(&said), 3);
        let recited = [
            word("Agent", 0, 400),
            word("Please", 900, 900),
            word("enter", 900, 900),
            word("your", 910, 910),
        ];
        assert_eq!(plausible_prefix(&recited), 1);
    }

    #[test]
    fn titles_and_initials_do_not_end_a_segment() {
        for word in ["done.", "why?", "so!", "end。"] {
            assert!(ends_sentence(word), "{word}");
        }
        for word in ["Mr.", "Mrs.", "dr.", "J.", "e.g.", "word", "Mr"] {
            assert!(!ends_sentence(word), "{word}");
        }
    }

    #[test]
    fn prompt_keeps_the_end_on_a_word_boundary() {
        assert_eq!(last_chars_on_word_boundary("one two three", 9), "three");
        assert_eq!(last_chars_on_word_boundary("short", 200), "short");
    }
}
