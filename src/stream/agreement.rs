//! LocalAgreement-2 on words: a word becomes final once two consecutive passes over the
//! growing window agree on it (and on everything before it), unless it ends inside the
//! guard band at the window's end, where Whisper still changes its mind.

use serde::{Deserialize, Serialize};

/// A recognised word in stream time (milliseconds from the stream's first sample).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedWord {
    pub text: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Probability in 1/1000 (kept integral so that tokens stay compact and exact).
    pub probability_milli: u16,
}

/// Words compare by their letters and digits, case-insensitively.
pub fn normalise(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Two passes agree on a word when its text matches and it starts at about the same time.
const SAME_WORD_TOLERANCE_MS: u64 = 1_500;

/// Number of leading words of `current` confirmed by `previous` (the longest common prefix).
pub fn agreed_prefix(previous: &[TimedWord], current: &[TimedWord]) -> usize {
    previous
        .iter()
        .zip(current)
        .take_while(|(a, b)| {
            normalise(&a.text) == normalise(&b.text)
                && a.start_ms.abs_diff(b.start_ms) <= SAME_WORD_TOLERANCE_MS
        })
        .count()
}

/// A committed word heard again in the next window starts before its committed end, give or
/// take DTW's error.
const REHEARD_LATE_MS: u64 = 300;

/// How far DTW stretches a committed word's end over the word after it.
const STRETCHED_END_MS: u64 = 700;

/// Drops the words of a new pass that were already committed. When committed words lie
/// inside the window (`tail_words`), Whisper hears them again: the hypothesis is aligned on
/// the last of them (the match nearest the committed time) and everything up to it goes.
/// Otherwise words starting before the committed time go, and a leading echo of the last
/// committed words (possibly after one or two stray words, as in "…more amiable woman | or
/// more amiable woman he…") is removed near the cut.
pub fn drop_committed(
    words: Vec<TimedWord>,
    committed_until_ms: u64,
    tail_words: &[String],
    prompt_words: &[String],
) -> Vec<TimedWord> {
    if let Some(last) = tail_words.last() {
        let second_last = tail_words.len().checked_sub(2).map(|i| &tail_words[i]);
        let limit = (tail_words.len() + 3).min(words.len());
        let aligned = (0..limit)
            .filter(|&i| &normalise(&words[i].text) == last)
            // The word heard again is the committed one, not a later word of the same text
            // ("press one now | … please press star now").
            .filter(|&i| words[i].start_ms < committed_until_ms + REHEARD_LATE_MS)
            .filter(|&i| match (second_last, i.checked_sub(1)) {
                (Some(prev), Some(j)) => {
                    &normalise(&words[j].text) == prev || tail_words.len() <= 2
                }
                _ => true,
            })
            .min_by_key(|&i| words[i].end_ms.abs_diff(committed_until_ms));
        if let Some(i) = aligned {
            return words.into_iter().skip(i + 1).collect();
        }
    }
    // Words placed before the committed end are the committed words heard again, unless
    // one starts just before that end and says something else: new speech that the pass
    // before put late (DTW stretches a committed word's end over the next word).
    let recent = &prompt_words[prompt_words.len().saturating_sub(5)..];
    let mut words: Vec<TimedWord> = words
        .into_iter()
        .filter(|w| {
            let text = normalise(&w.text);
            w.start_ms + 100 >= committed_until_ms
                || (w.start_ms + STRETCHED_END_MS >= committed_until_ms
                    && !tail_words.contains(&text)
                    && !recent.contains(&text))
        })
        .collect();
    let near_cut = |w: &TimedWord| w.start_ms < committed_until_ms + 1_500;
    for skip in 0..=2usize {
        let longest = 5
            .min(prompt_words.len())
            .min(words.len().saturating_sub(skip));
        // After stray words, demand at least three matching words ("…is now in the
        // conference | has left the conference" is no echo).
        let shortest = if skip == 0 { 1 } else { 3 };
        for n in (shortest..=longest).rev() {
            let tail = &prompt_words[prompt_words.len() - n..];
            let head: Vec<String> = words[skip..skip + n]
                .iter()
                .map(|w| normalise(&w.text))
                .collect();
            if near_cut(&words[skip]) && head == tail {
                words.drain(..skip + n);
                return words;
            }
        }
    }
    words
}

/// How many words of `current` to commit now.
pub fn words_to_commit(
    previous: &[TimedWord],
    current: &[TimedWord],
    window_end_ms: u64,
    guard_ms: u64,
    commit_all: bool,
) -> usize {
    if commit_all {
        return current.len();
    }
    let agreed = agreed_prefix(previous, current);
    current[..agreed]
        .iter()
        .take_while(|w| w.end_ms + guard_ms <= window_end_ms)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(spec: &[(&str, u64)]) -> Vec<TimedWord> {
        spec.iter()
            .map(|(t, s)| TimedWord {
                text: t.to_string(),
                start_ms: *s,
                end_ms: s + 300,
                probability_milli: 900,
            })
            .collect()
    }

    #[test]
    fn commits_the_agreed_prefix_outside_the_guard_band() {
        let previous = words(&[("Hello", 0), ("world,", 400), ("how", 800)]);
        let current = words(&[("hello", 50), ("world", 420), ("who", 800), ("are", 1200)]);
        assert_eq!(agreed_prefix(&previous, &current), 2);
        assert_eq!(words_to_commit(&previous, &current, 2000, 500, false), 2);
        // The second word ends at 720 ms: inside a guard band ending at 1100 ms it waits.
        assert_eq!(words_to_commit(&previous, &current, 1100, 500, false), 1);
        assert_eq!(words_to_commit(&previous, &current, 1100, 500, true), 4);
        assert_eq!(words_to_commit(&[], &current, 5000, 500, false), 0);
    }

    #[test]
    fn same_text_far_apart_in_time_is_not_agreement() {
        let previous = words(&[("yes", 0)]);
        let current = words(&[("yes", 4000)]);
        assert_eq!(agreed_prefix(&previous, &current), 0);
    }

    #[test]
    fn words_already_committed_are_dropped() {
        let last = vec!["to".to_string(), "do".to_string()];
        let current = words(&[("old", 500), ("do", 2050), ("for", 2400), ("them", 2700)]);
        let kept = drop_committed(current, 2000, &[], &last);
        assert_eq!(
            kept.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(),
            ["for", "them"]
        );
        let echoed = words(&[
            ("or", 2010),
            ("more", 2050),
            ("amiable", 2100),
            ("woman", 2200),
            ("he", 2600),
        ]);
        let last: Vec<String> = ["a", "more", "amiable", "woman"].map(String::from).to_vec();
        assert_eq!(
            drop_committed(echoed, 2000, &[], &last)
                .iter()
                .map(|w| w.text.as_str())
                .collect::<Vec<_>>(),
            ["he"]
        );
        // Two words in common after a stray one are no echo: "…in the conference | has left
        // the conference".
        let next = words(&[
            ("has", 2010),
            ("left", 2100),
            ("the", 2200),
            ("conference", 2300),
        ]);
        let last: Vec<String> = ["in", "the", "conference"].map(String::from).to_vec();
        assert_eq!(drop_committed(next, 2000, &[], &last).len(), 4);
        // A repeat far from the cut is real speech, not an echo.
        let last = vec!["to".to_string(), "do".to_string()];
        let later = words(&[("do", 5000)]);
        assert_eq!(drop_committed(later, 2000, &[], &last).len(), 1);
        // Committed words inside the window are found by text, whatever their times say.
        let reheard = words(&[("Had", 0), ("he", 300), ("married", 500), ("a", 900)]);
        let tail = vec!["had".to_string(), "he".to_string()];
        let kept = drop_committed(reheard, 900, &tail, &[]);
        assert_eq!(
            kept.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(),
            ["married", "a"]
        );
        // A later word with the committed word's text is new speech: "…press one now |
        // otherwise please press star now".
        let later = words(&[
            ("please", 600),
            ("press", 1100),
            ("star", 1500),
            ("now", 2000),
        ]);
        let tail = vec!["now".to_string()];
        assert_eq!(drop_committed(later, 400, &tail, &[]).len(), 4);
        // "…you are entering conference | number, you are now muted": the committed word's end
        // was stretched over "number"; heard just before that end, it is new speech, and the
        // committed words heard again there go.
        let next = words(&[
            ("conferencing", 20600),
            ("number", 20800),
            ("you", 21472),
            ("are", 21652),
        ]);
        let tail = vec!["entering".to_string(), "conference".to_string()];
        let prompt: Vec<String> = ["you", "are"].map(String::from).to_vec();
        assert_eq!(
            drop_committed(next, 21472, &tail, &prompt)
                .iter()
                .map(|w| w.text.as_str())
                .collect::<Vec<_>>(),
            ["number", "you", "are"]
        );
    }
}
