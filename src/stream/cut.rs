//! Where a window is cut, and what the cut must keep: VAD pauses after committed words, the
//! quietest point where there is no pause, DTW's failures that make word times unusable,
//! speech no final word covers yet, and Whisper's made-up runs of words.

use super::agreement::TimedWord;
use super::RATE;
use crate::vad::SpeechMap;

/// Words of a pass up to the first run of words that no one could say: three words that
/// start within 30 ms. Whisper's hallucinations (the prompt recited, a phrase looped over a
/// bit of noise) align to one instant; real words take a tenth of a second at least.
pub(super) fn plausible_prefix(words: &[TimedWord]) -> usize {
    words
        .windows(3)
        .position(|run| run[2].start_ms.saturating_sub(run[0].start_ms) < SAME_INSTANT_MS)
        .unwrap_or(words.len())
}

/// Whether DTW's times at the commit boundary (after committed word `n - 1`) are
/// untrustworthy: words after it were cut off the pass (`cut_short`), or two words on
/// either side of it start in the same instant (the next start is then late too). (A last
/// word stretched over the pause after it is DTW's habit at a phrase end, where a cut is
/// safe: no sign.)
pub(super) fn dtw_lost_its_way(hypothesis: &[TimedWord], n: usize, cut_short: bool) -> bool {
    let one_instant = |pair: &[TimedWord]| {
        pair.len() == 2 && pair[1].start_ms.saturating_sub(pair[0].start_ms) < SAME_INSTANT_MS
    };
    let before = n.checked_sub(2).and_then(|from| hypothesis.get(from..n));
    cut_short
        || hypothesis.get(n..n + 2).is_some_and(one_instant)
        || before.is_some_and(one_instant)
}

/// Word starts closer than this are one instant to DTW: no one says two words in it.
pub(super) const SAME_INSTANT_MS: u64 = 30;
/// The shortest VAD pause used as a cut point.
pub(super) const MIN_CUT_PAUSE_MS: u64 = 150;
/// Audio kept before a pending word's start (DTW times are ~50 ms accurate where it has
/// not lost its way; see `dtw_lost_its_way`).
pub(super) const KEEP_BEFORE_WORD_MS: u64 = 100;
/// Speech this soon after a final word's end is that word's own (DTW puts ends early).
pub(super) const WORD_END_GRACE_MS: u64 = 250;
/// Audio kept before unheard speech (it was found `WORD_END_GRACE_MS` late at most).
pub(super) const UNHEARD_LEAD_MS: u64 = 350;

/// Stream time (ms) of the first speech the VAD hears after the final words ending at
/// `heard_until_ms`, leaving the final word's own trailing sounds to it.
pub(super) fn unheard_speech(
    speech: &SpeechMap,
    window_start_ms: u64,
    heard_until_ms: u64,
) -> Option<u64> {
    let from = (heard_until_ms + WORD_END_GRACE_MS).saturating_sub(window_start_ms);
    speech
        .speech_onset_after(from)
        .map(|ms| window_start_ms + ms)
}

/// The latest VAD pause that follows the start of committed word `k - 1` (k ≤ n) and whose
/// middle lies before the start of word `k` (give or take DTW's 50 ms): (k, pause start,
/// pause middle).
pub(super) fn vad_cut(
    pauses: &[(u64, u64)],
    hypothesis: &[TimedWord],
    n: usize,
    window_end_ms: u64,
) -> Option<(usize, u64, u64)> {
    (1..=n).rev().find_map(|k| {
        let after = hypothesis[k - 1].start_ms;
        let before = hypothesis.get(k).map_or(window_end_ms, |w| w.start_ms + 50);
        pauses.iter().rev().find_map(|&(start, end)| {
            let middle = (start + end) / 2;
            (middle > after && middle < before).then_some((k, start.max(after), middle))
        })
    })
}

/// The latest pause after a committed word that another word follows (a gap of 250 ms or
/// more, or a sentence end), as a quiet cut point; `None` if there is none.
pub(super) fn latest_pause(
    window: &[f32],
    window_start_ms: u64,
    hypothesis: &[TimedWord],
    n: usize,
) -> Option<u64> {
    (1..=n.min(hypothesis.len().saturating_sub(1)))
        .rev()
        .find_map(|k| {
            let word = &hypothesis[k - 1];
            let gap = hypothesis[k].start_ms.saturating_sub(word.end_ms);
            let pause = gap >= 250 || word.text.ends_with(['.', '?', '!']);
            pause.then(|| quietest_point(window, window_start_ms, hypothesis, k))
        })
}

/// The quietest 10 ms between committed word `n - 1` and the next word: a cut there does
/// not start the next window inside a word (Whisper's word times are approximate).
pub(super) fn quietest_point(
    window: &[f32],
    window_start_ms: u64,
    hypothesis: &[TimedWord],
    n: usize,
) -> u64 {
    let last_end = hypothesis[n - 1].end_ms;
    let window_end_ms = window_start_ms + window.len() as u64 * 1000 / RATE;
    let from = last_end.saturating_sub(150).max(window_start_ms);
    let to = hypothesis
        .get(n)
        .map_or(last_end + 300, |next| next.start_ms + 100)
        .min(window_end_ms);
    if to <= from + 10 {
        return last_end.clamp(window_start_ms, window_end_ms);
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
        .unwrap_or(last_end)
}

#[cfg(test)]
mod tests {
    use super::super::tests::word;
    use super::*;

    #[test]
    fn dtw_is_lost_where_two_words_share_an_instant_on_either_side_of_the_cut() {
        // "followed by the pound | key": "the pound" at one instant, so "key" starts late.
        let crammed_before = [
            word("by", 0, 300),
            word("the", 300, 300),
            word("pound", 310, 1200),
            word("key", 1200, 1600),
        ];
        assert!(dtw_lost_its_way(&crammed_before, 3, false));
        let crammed_after = [
            word("by", 0, 300),
            word("the", 300, 600),
            word("pound", 600, 600),
            word("key", 610, 900),
        ];
        assert!(dtw_lost_its_way(&crammed_after, 2, false));
        assert!(!dtw_lost_its_way(&crammed_after, 1, false));
        assert!(dtw_lost_its_way(&crammed_after, 1, true));
    }
}
