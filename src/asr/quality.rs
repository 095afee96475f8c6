//! Whisper's own checks on a decoded pass, and the clean-up of a pass that fails them.
//!
//! The reference decoder (OpenAI's `transcribe`, faster-whisper) judges every 30 s pass by
//! the gzip compression ratio of its text (a looping decoder repeats itself, so its text
//! compresses well: > 2.4 fails) and by its mean token log-probability (< -1.0 fails), and
//! decodes a failed pass again; after a failed pass the next one is not conditioned on the
//! text before it. prepis retries once without the prompt (deterministic: no sampling),
//! and whatever still repeats itself is cut out here rather than shown to the user.

use std::io::Write;

use super::{Segment, Word};

/// Text that compresses better than this is a decoder repeating itself (Whisper's
/// `compression_ratio_threshold`).
pub const MAX_COMPRESSION_RATIO: f64 = 2.4;
/// A pass whose tokens are on average less likely than this failed (`logprob_threshold`).
pub const MIN_AVG_LOGPROB: f32 = -1.0;
/// Segments shorter than this hold no speech: DTW crams made-up text into one instant.
const MIN_SEGMENT_SECONDS: f64 = 0.05;

/// How a pass fared against the checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// zlib compression ratio of the pass's text.
    pub compression_ratio: f64,
    /// Mean log-probability of its text tokens.
    pub avg_logprob: f32,
    /// Whether the text repeats itself (by compression ratio or by repeated phrases).
    pub looped: bool,
}

impl Verdict {
    /// Judges a pass by its segments.
    pub fn of(segments: &[Segment]) -> Verdict {
        let text = segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let weights: f32 = segments.iter().map(|s| s.words.len().max(1) as f32).sum();
        let avg_logprob = if segments.is_empty() {
            0.0
        } else {
            segments
                .iter()
                .map(|s| s.avg_logprob * s.words.len().max(1) as f32)
                .sum::<f32>()
                / weights
        };
        let compression_ratio = compression_ratio(&text);
        let words: Vec<String> = segments
            .iter()
            .flat_map(|s| s.words.iter().map(|w| normalise(&w.word)))
            .collect();
        let looped = compression_ratio > MAX_COMPRESSION_RATIO
            || first_repeat(&words).is_some()
            || segments.iter().any(is_crammed);
        Verdict {
            compression_ratio,
            avg_logprob,
            looped,
        }
    }

    /// Whether the pass fails Whisper's checks.
    pub fn failed(&self) -> bool {
        self.looped || self.avg_logprob < MIN_AVG_LOGPROB
    }

    /// Whether `self` is the better of two decodes of the same audio.
    pub fn better_than(&self, other: &Verdict) -> bool {
        match (self.failed(), other.failed()) {
            (false, true) => true,
            (true, false) => false,
            _ => (self.looped, -self.avg_logprob) < (other.looped, -other.avg_logprob),
        }
    }
}

/// Length of the text over the length of its zlib compression (Whisper's measure).
pub fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(text.as_bytes());
    let compressed = encoder.finish().map(|c| c.len()).unwrap_or(text.len());
    text.len() as f64 / compressed.max(1) as f64
}

fn normalise(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A segment with several words in (almost) no time.
fn is_crammed(segment: &Segment) -> bool {
    segment.words.len() > 1 && segment.end - segment.start < MIN_SEGMENT_SECONDS
}

/// The first word that starts a looping repeat: a phrase of 2-12 words said again right
/// after itself (and a third time, for phrases under 4 words), or one word said 4 times
/// over. Real speech repeats a word ("no, no") but not a sentence back to back.
fn first_repeat(words: &[String]) -> Option<(usize, usize)> {
    for start in 0..words.len() {
        for k in 1..=12usize {
            let needed = match k {
                1 => 4,
                2 | 3 => 3,
                _ => 2,
            };
            if start + k * needed > words.len() {
                continue;
            }
            let phrase = &words[start..start + k];
            if phrase.iter().all(String::is_empty) {
                continue;
            }
            if (1..needed).all(|r| &words[start + r * k..start + (r + 1) * k] == phrase) {
                return Some((start + k, k));
            }
        }
    }
    None
}

/// The segments of a pass that failed as looping, cleaned: crammed segments and segments
/// that repeat one of the three before go, and inside a segment a phrase said again back to
/// back is kept once. Returns the segments kept and the time (seconds) of the first thing
/// removed, from where the pass's text cannot be trusted.
/// `earlier` are the segments before this pass (a pass may repeat what the one before said).
pub fn remove_loops(segments: Vec<Segment>, earlier: &[Segment]) -> (Vec<Segment>, Option<f64>) {
    let before = earlier.len().saturating_sub(3);
    let mut kept: Vec<Segment> = earlier[before..].to_vec();
    let seeded = kept.len();
    let mut removed_from: Option<f64> = None;
    let mark = |at: f64, removed_from: &mut Option<f64>| {
        *removed_from = Some(removed_from.map_or(at, |r: f64| r.min(at)));
    };
    for mut segment in segments {
        let text: Vec<String> = segment.words.iter().map(|w| normalise(&w.word)).collect();
        let repeats_recent = kept.iter().rev().take(3).any(|k| {
            let earlier: Vec<String> = k.words.iter().map(|w| normalise(&w.word)).collect();
            earlier == text
        });
        if is_crammed(&segment) || repeats_recent {
            mark(segment.start, &mut removed_from);
            continue;
        }
        // Words to drop: the copies of a phrase said back to back, and words recited from
        // the text just before. The rest of the segment is real speech and stays.
        let mut drop = vec![false; text.len()];
        if let Some((first_copy, k)) = first_repeat(&text) {
            let phrase = &text[first_copy - k..first_copy];
            let mut at = first_copy;
            while at + k <= text.len() && &text[at..at + k] == phrase {
                drop[at..at + k].fill(true);
                at += k;
            }
        }
        let before: Vec<&Word> = kept.iter().flat_map(|s| s.words.iter()).collect();
        let own: Vec<&Word> = segment.words.iter().collect();
        for i in recited(&own, &before) {
            drop[i..i + RECITED_WORDS].fill(true);
        }
        if let Some(first) = drop.iter().position(|d| *d) {
            mark(segment.words[first].start, &mut removed_from);
            let mut keep = drop.iter().map(|d| !d);
            segment.words.retain(|_| keep.next().unwrap_or(true));
            segment.retext();
            segment.end = segment.words.last().map_or(segment.start, |w| w.end);
        }
        if !segment.words.is_empty() {
            kept.push(segment);
        }
    }
    (kept.split_off(seeded), removed_from)
}

/// Words in a row that, said again from the text just before, make a recital.
const RECITED_WORDS: usize = 8;
/// How far back (words) a recital is looked for.
const RECITAL_LOOKBACK: usize = 40;

/// Whether a pass recites its prompt (see `recited`).
pub fn repeats_earlier(segments: &[Segment], earlier: &[Segment]) -> bool {
    let words: Vec<&Word> = segments.iter().flat_map(|s| s.words.iter()).collect();
    let before: Vec<&Word> = earlier.iter().flat_map(|s| s.words.iter()).collect();
    !recited(&words, &before).is_empty()
}

/// The start of every run of 8 words that says again, word for word, 8 words of the 40
/// said just before, at a pace no one speaks (over a second a word, or all in an instant):
/// a decoder reciting its prompt over audio it did not hear. (Speech repeated for real,
/// a sentence said twice, keeps a speaking pace.)
fn recited(words: &[&Word], before: &[&Word]) -> Vec<usize> {
    let before: Vec<String> = before
        .iter()
        .skip(before.len().saturating_sub(RECITAL_LOOKBACK))
        .map(|w| normalise(&w.word))
        .collect();
    let said: std::collections::HashSet<&[String]> = before.windows(RECITED_WORDS).collect();
    let text: Vec<String> = words.iter().map(|w| normalise(&w.word)).collect();
    text.windows(RECITED_WORDS)
        .enumerate()
        .filter(|(i, run)| {
            let seconds = words[i + RECITED_WORDS - 1].end - words[*i].start;
            let per_word = seconds / RECITED_WORDS as f64;
            said.contains(run) && !(RECITAL_MIN_PACE..=RECITAL_MAX_PACE).contains(&per_word)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Seconds a word at a speaking pace (a recital is outside it).
const RECITAL_MIN_PACE: f64 = 0.06;
const RECITAL_MAX_PACE: f64 = 1.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(text: &str, start: f64, end: f64) -> Segment {
        let words: Vec<&str> = text.split_whitespace().collect();
        let step = (end - start) / words.len().max(1) as f64;
        Segment {
            text: text.into(),
            start,
            end,
            confidence: 0.9,
            no_speech_probability: 0.0,
            avg_logprob: -0.2,
            words: words
                .iter()
                .enumerate()
                .map(|(i, w)| Word {
                    word: w.to_string(),
                    start: start + i as f64 * step,
                    end: start + (i + 1) as f64 * step,
                    probability: 0.9,
                })
                .collect(),
        }
    }

    #[test]
    fn ordinary_speech_passes_and_loops_fail() {
        let said = [segment(
            "Please enter your agent number followed by the pound key.",
            0.0,
            3.0,
        )];
        let verdict = Verdict::of(&said);
        assert!(!verdict.failed(), "{verdict:?}");
        let looped = [segment(
            "Press 3 to record your name. Press 3 to record your name. Press 3 to record your name.",
            0.0,
            6.0,
        )];
        assert!(Verdict::of(&looped).looped);
        assert!(compression_ratio(&"the same words again ".repeat(20)) > MAX_COMPRESSION_RATIO);
        assert!(compression_ratio("Hello there.") < MAX_COMPRESSION_RATIO);
        assert!(!Verdict::of(&[segment("no no I said no", 0.0, 2.0)]).looped);
    }

    #[test]
    fn loops_are_cut_to_what_was_said_once() {
        let (kept, from) = remove_loops(
            vec![
                segment("Thank you for calling. Thank you for calling.", 2.0, 6.0),
                segment("To record press 3.", 6.0, 6.0),
                segment("Goodbye.", 6.5, 7.0),
            ],
            &[segment("To record press 3.", 0.0, 2.0)],
        );
        let texts: Vec<&str> = kept.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["Thank you for calling.", "Goodbye."]);
        assert_eq!(from, Some(4.0));
        let earlier = [segment(
            "Please hold while I attempt to connect you with your party.",
            0.0,
            3.0,
        )];
        let again = [segment(
            "That pin is invalid. while I attempt to connect you with your party.",
            30.0,
            50.0,
        )];
        assert!(repeats_earlier(&again, &earlier));
        let said_again = [segment(
            "That pin is invalid. while I attempt to connect you with your party.",
            30.0,
            34.0,
        )];
        assert!(!repeats_earlier(&said_again, &earlier));
        assert!(!repeats_earlier(&earlier, &again[..0]));
        let (kept, from) = remove_loops(vec![segment("Just once.", 0.0, 1.0)], &[]);
        assert_eq!(kept.len(), 1);
        assert_eq!(from, None);
    }

    #[test]
    fn the_better_of_two_decodes_is_the_one_that_passes() {
        let ok = Verdict {
            compression_ratio: 1.2,
            avg_logprob: -0.3,
            looped: false,
        };
        let looped = Verdict { looped: true, ..ok };
        let unsure = Verdict {
            avg_logprob: -1.4,
            ..ok
        };
        assert!(ok.better_than(&looped));
        assert!(unsure.better_than(&looped));
        assert!(!looped.better_than(&unsure));
    }
}
