//! Streaming without server state: everything a stream needs between chunks is a
//! `StreamState`, carried by the client (sealed token) or in Redis, and one call of
//! `process_chunk` turns (state, new audio) into (new state, final segments, partial).
//!
//! The policy, per chunk (see `shared/docs/streaming.md`): window = uncommitted tail + new
//! audio; VAD; no speech and nothing pending → no Whisper call; otherwise Whisper on the
//! window, prompted with recent committed text only; LocalAgreement-2 with a guard band;
//! commit everything at a VAD endpoint or on the final chunk; force-commit when the tail
//! reaches its cap; committed words become final segments, never revised.

pub mod agreement;
pub mod tail;

use serde::{Deserialize, Serialize};

use crate::asr::{AsrError, DecodeOptions, Transcriber};
use crate::transcription::transcribe_chunk;
use crate::vad;
use agreement::{drop_committed, normalise, words_to_commit, TimedWord};

const RATE: u64 = 16_000;

/// The whole state of a stream between two chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StreamState {
    /// Random id given at the first chunk.
    pub id: u64,
    /// Chunks processed so far.
    pub seq: u64,
    /// Stream time (samples) where the tail audio starts: everything before is committed.
    pub committed_until: u64,
    /// Stream time (samples) of the end of all audio received.
    pub received_until: u64,
    /// The uncommitted audio from `committed_until` on, μ-law at 16 kHz.
    pub tail: Vec<u8>,
    /// The previous pass's unconfirmed words.
    pub pending: Vec<TimedWord>,
    /// The end of recent committed text, used as Whisper's prompt.
    pub prompt: String,
    /// Language, locked after the first pass that recognised speech.
    pub language: Option<String>,
}

/// Tunables of the policy.
#[derive(Debug, Clone, Copy)]
pub struct StreamPolicy {
    /// Words ending this close to the window's end are never committed by agreement.
    pub guard_ms: u64,
    /// Trailing silence that ends an utterance: everything pending is committed.
    pub endpoint_silence_ms: u64,
    /// Longest uncommitted tail; beyond it words are force-committed.
    pub max_tail_ms: u64,
    /// Characters of committed text kept as prompt.
    pub prompt_chars: usize,
}

impl Default for StreamPolicy {
    fn default() -> Self {
        StreamPolicy {
            guard_ms: 500,
            endpoint_silence_ms: 800,
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
}

/// A committed, final segment in stream time.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalSegment {
    pub words: Vec<TimedWord>,
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
}

/// Runs the policy for one chunk of 16 kHz mono audio.
pub fn process_chunk(
    engine: &dyn Transcriber,
    mut state: StreamState,
    new_audio: &[f32],
    options: &ChunkOptions,
    policy: &StreamPolicy,
) -> Result<(StreamState, ChunkOutcome), AsrError> {
    let window_start = state.committed_until;
    let mut window = tail::decode(&state.tail);
    window.extend_from_slice(new_audio);
    let window_end = window_start + window.len() as u64;
    state.received_until = window_end;
    state.seq += 1;
    let ms = |samples: u64| samples * 1000 / RATE;
    let (window_start_ms, window_end_ms) = (ms(window_start), ms(window_end));

    let new_activity = vad::speech_activity(new_audio);
    let trailing_silence_ms = (vad::trailing_silence_seconds(&window) * 1000.0) as u64;
    let endpoint = trailing_silence_ms >= policy.endpoint_silence_ms;
    let new_speech = new_activity.has_speech(0.15);

    let mut recognised = false;
    let hypothesis: Vec<TimedWord> = if !new_speech && (state.pending.is_empty() || endpoint) {
        // Nothing new to hear: the previous hypothesis stands (and is final at an endpoint).
        state.pending.clone()
    } else {
        recognised = true;
        let decode = DecodeOptions {
            language: options.language.clone().or_else(|| state.language.clone()),
            prompt: Some(state.prompt.clone()).filter(|p| !p.is_empty()),
        };
        let transcript = transcribe_chunk(engine, &window, &decode)?;
        if state.language.is_none() && !transcript.segments.is_empty() {
            state.language = transcript.language.clone();
        }
        let words = transcript
            .segments
            .iter()
            .flat_map(|s| s.words.iter())
            .map(|w| TimedWord {
                text: w.word.clone(),
                start_ms: window_start_ms + (w.start * 1000.0).round() as u64,
                end_ms: window_start_ms + (w.end * 1000.0).round() as u64,
                probability_milli: (w.probability.clamp(0.0, 1.0) * 1000.0).round() as u16,
            })
            .map(|mut w| {
                w.end_ms = w.end_ms.clamp(w.start_ms, window_end_ms);
                w
            })
            .collect();
        let last_committed: Vec<String> = state.prompt.split_whitespace().map(normalise).collect();
        drop_committed(words, window_start_ms, &last_committed)
    };

    let commit_all = options.last || endpoint;
    let mut n = words_to_commit(
        &state.pending,
        &hypothesis,
        window_end_ms,
        policy.guard_ms,
        commit_all,
    );
    // Force-commit when the tail would outgrow its cap.
    while n < hypothesis.len()
        && window_end_ms.saturating_sub(cut_ms(&hypothesis, n, window_start_ms))
            > policy.max_tail_ms
    {
        n += 1;
    }
    let committed: Vec<TimedWord> = hypothesis[..n].to_vec();
    let pending: Vec<TimedWord> = hypothesis[n..].to_vec();

    // Where the new tail starts.
    let mut cut = if options.last {
        window_end_ms
    } else if pending.is_empty() && (endpoint || !new_speech) {
        // Nothing pending: keep only a short lead-in in case speech starts at the chunk's end.
        window_end_ms
            .saturating_sub(300)
            .max(cut_ms(&hypothesis, n, window_start_ms))
    } else {
        cut_ms(&hypothesis, n, window_start_ms)
    };
    if !options.last && n > 0 {
        cut = quietest_point(&window, window_start_ms, cut, &hypothesis, n);
    }
    cut = cut
        .clamp(window_start_ms, window_end_ms)
        .max(window_end_ms.saturating_sub(policy.max_tail_ms));
    let cut_sample = (cut * RATE / 1000).clamp(window_start, window_end);
    state.tail = tail::encode(&window[(cut_sample - window_start) as usize..]);
    state.committed_until = cut_sample;
    state.pending = pending.clone();

    if !committed.is_empty() {
        let text = join_words(&committed);
        let combined = format!("{} {}", state.prompt, text);
        state.prompt = last_chars_on_word_boundary(combined.trim(), policy.prompt_chars);
    }
    Ok((
        state,
        ChunkOutcome {
            segments: split_segments(committed),
            partial: pending,
            recognised,
        },
    ))
}

/// The time (ms) up to which audio can be dropped after committing `n` words.
fn cut_ms(hypothesis: &[TimedWord], n: usize, window_start_ms: u64) -> u64 {
    match (n.checked_sub(1).map(|i| &hypothesis[i]), hypothesis.get(n)) {
        (None, _) => window_start_ms,
        (Some(last), Some(next)) => last.end_ms.min(next.start_ms).max(window_start_ms),
        (Some(last), None) => last.end_ms.max(window_start_ms),
    }
}

/// Moves a cut between two words to the quietest 10 ms of audio near it, so that the
/// next window does not start inside a word (Whisper's word times are approximate).
fn quietest_point(
    window: &[f32],
    window_start_ms: u64,
    cut: u64,
    hypothesis: &[TimedWord],
    n: usize,
) -> u64 {
    let last_end = hypothesis[n - 1].end_ms;
    let from = last_end.saturating_sub(150).max(window_start_ms);
    let to = hypothesis
        .get(n)
        .map_or(last_end + 300, |next| next.start_ms + 100);
    let to = to.min(window_start_ms + window.len() as u64 * 1000 / RATE);
    if to <= from + 10 {
        return cut;
    }
    let frame = (RATE / 100) as usize;
    let energy = |ms: u64| {
        let start = ((ms - window_start_ms) * RATE / 1000) as usize;
        let end = (start + frame).min(window.len());
        window[start.min(end)..end]
            .iter()
            .map(|s| s * s)
            .sum::<f32>()
    };
    (from..to - 10)
        .step_by(10)
        .min_by(|a, b| energy(*a).total_cmp(&energy(*b)))
        .unwrap_or(cut)
}

/// Splits committed words into segments at sentence ends and at pauses over a second.
fn split_segments(words: Vec<TimedWord>) -> Vec<FinalSegment> {
    let mut segments = Vec::new();
    let mut current: Vec<TimedWord> = Vec::new();
    for word in words {
        if let Some(prev) = current.last() {
            let sentence_end = prev.text.ends_with(['.', '?', '!', '。', '？', '！']);
            if sentence_end || word.start_ms > prev.end_ms + 1_000 {
                segments.push(FinalSegment {
                    words: std::mem::take(&mut current),
                });
            }
        }
        current.push(word);
    }
    if !current.is_empty() {
        segments.push(FinalSegment { words: current });
    }
    segments
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

    fn word(text: &str, start_ms: u64, end_ms: u64) -> TimedWord {
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
    fn prompt_keeps_the_end_on_a_word_boundary() {
        assert_eq!(last_chars_on_word_boundary("one two three", 9), "three");
        assert_eq!(last_chars_on_word_boundary("short", 200), "short");
    }

    #[test]
    fn cut_stops_before_the_next_word() {
        let hyp = vec![word("a", 0, 500), word("b", 450, 900)];
        assert_eq!(cut_ms(&hyp, 1, 0), 450);
        assert_eq!(cut_ms(&hyp, 2, 0), 900);
        assert_eq!(cut_ms(&hyp, 0, 100), 100);
    }
}
