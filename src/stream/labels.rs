//! Speaker labels on final segments: each run of speech between pauses gets a voiceprint
//! from the speaker encoder (a run under a second, that of the stretch it opens), the
//! stream's tracker names its speaker, and a segment whose runs belong to different speakers
//! is split at the change.

use super::agreement::TimedWord;
use super::FinalSegment;
use crate::speaker::relabel::{relabel, RelabelPolicy};
use crate::speaker::{
    neighbour_label, Label, SpeakerEncoder, Speakers, TrackerPolicy, Voiceprint, MIN_EVIDENCE_MS,
};

/// Speech shorter than this is not embedded: it takes its neighbours' or the current speaker,
/// with low confidence. From 0.5 s a voiceprint still finds the right one of known voices
/// 91-99 % of the time (tune half, `cargo bench --bench speaker -- --study tune`).
pub const MIN_EMBED_MS: u64 = 500;
/// A gap between two words at least this long may separate two speakers.
pub const TURN_GAP_MS: u64 = 300;
/// Speech joined into one stretch before it is embedded (when the segment has that much).
pub const RUN_MS: u64 = 2_000;
/// The most speech a run under a second is labelled by: one partial of the speaker encoder
/// (1.6 s), one pass of its network.
const STRETCH_MS: u64 = 1_600;

/// Labels final segments from the audio they were heard in (`audio` starts at stream time
/// `audio_start_ms`; `pending` are the words heard after them, not final yet). A segment
/// whose speech runs (words between gaps) belong to different speakers is split at the
/// change.
pub fn label_segments(
    encoder: &dyn SpeakerEncoder,
    speakers: &mut Speakers,
    policy: &TrackerPolicy,
    audio: &[f32],
    audio_start_ms: u64,
    segments: Vec<FinalSegment>,
    pending: &[TimedWord],
) -> Vec<FinalSegment> {
    let runs: Vec<Vec<Vec<TimedWord>>> = segments
        .into_iter()
        .map(|segment| speech_runs(segment.words))
        .collect();
    let embed = |start: u64, end: u64| {
        if end.saturating_sub(start) < MIN_EMBED_MS {
            return None;
        }
        let from = ms_to_index(start.saturating_sub(audio_start_ms), audio.len());
        let to = ms_to_index(end.saturating_sub(audio_start_ms), audio.len());
        encoder.embed(&audio[from..to]).map(|vector| Voiceprint {
            vector,
            speech_ms: end - start,
        })
    };
    // Every word of the request in time order, final then pending: what follows a run.
    let heard: Vec<(u64, u64)> = runs
        .iter()
        .flatten()
        .flatten()
        .chain(pending)
        .map(|w| (w.start_ms, w.end_ms))
        .collect();
    // A run under a second (a segment of its own: `speech_runs`) is too short to tell voices
    // apart alone: once speakers are known, its voiceprint is that of the stretch it opens,
    // itself and the speech that follows it without a pause, final or pending (a word that
    // opens a turn is often a segment of its own, the rest of the turn not final yet), and it
    // teaches the tracker nothing.
    let known = !speakers.centroids.is_empty();
    let mut first_word = 0;
    let spans: Vec<(bool, u64, u64)> = runs
        .iter()
        .flatten()
        .map(|run| {
            let stretched = known && run_ms(run) < MIN_EVIDENCE_MS;
            let (start, end) = if stretched {
                stretch_from(&heard, first_word)
            } else {
                (run[0].start_ms, run[run.len() - 1].end_ms)
            };
            first_word += run.len();
            (stretched, start, end)
        })
        .collect();
    let mut stretched = spans.iter().map(|s| s.0).collect::<Vec<_>>().into_iter();
    let mut prints = on_all_cores(spans, |(_, start, end)| embed(start, end)).into_iter();
    let mut out = Vec::new();
    for runs in runs {
        let prints: Vec<Option<Voiceprint>> = prints.by_ref().take(runs.len()).collect();
        let mut labels: Vec<Option<Label>> = prints
            .iter()
            .zip(stretched.by_ref())
            .map(|(p, stretched)| {
                let p = p.as_ref()?;
                if stretched {
                    speakers.nearest(&p.vector, policy)
                } else {
                    Some(speakers.assign(&p.vector, p.speech_ms, policy))
                }
            })
            .collect();
        // With too little speech even for that, a run takes its segment's neighbours' label,
        // else the current speaker's.
        for i in 0..labels.len() {
            if labels[i].is_none() {
                labels[i] = neighbour_label(&labels, i, 0.5).or_else(|| speakers.inherit());
            }
        }
        // Adjacent runs of one speaker make one segment.
        let mut current: Option<Pending> = None;
        for ((run, label), print) in runs.into_iter().zip(labels).zip(prints) {
            let speaker = label.map(|l| l.speaker);
            match &mut current {
                Some(p) if p.speaker == speaker => p.add(run, label, print),
                _ => {
                    out.extend(current.take().map(Pending::finish));
                    let mut p = Pending {
                        speaker,
                        ..Pending::default()
                    };
                    p.add(run, label, print);
                    current = Some(p);
                }
            }
        }
        out.extend(current.map(Pending::finish));
    }
    out
}

/// The final labels of segments heard all at once (a whole file in one request): each goes
/// again to the closest of the speakers the tracker ended with, merging and dissolving as a
/// stream's relabel does at its end ([`relabel`]): the tracker, deciding in time order, may
/// have opened a voice twice or opened a mix of two.
pub fn relabel_segments(
    segments: &mut [FinalSegment],
    speakers: &Speakers,
    policy: &TrackerPolicy,
) {
    let prints: Vec<Option<Voiceprint>> = segments.iter().map(|s| s.voiceprint.clone()).collect();
    let spans: Vec<(u64, u64)> = segments
        .iter()
        .map(|s| match (s.words.first(), s.words.last()) {
            (Some(first), Some(last)) => (first.start_ms, last.end_ms),
            _ => (0, 0),
        })
        .collect();
    let labels = relabel(
        &prints,
        &spans,
        &speakers.voiceprints(),
        &RelabelPolicy::of(policy),
    );
    if labels.iter().any(Option::is_some) {
        for (segment, label) in segments.iter_mut().zip(labels) {
            segment.speaker = label;
        }
    }
}

/// Runs of one speaker being joined into a segment.
#[derive(Default)]
struct Pending {
    speaker: Option<u32>,
    words: Vec<TimedWord>,
    /// Confidence weighted by speech length.
    confidence_ms: f32,
    weight_ms: u64,
    prints: Vec<Voiceprint>,
}

impl Pending {
    fn add(&mut self, run: Vec<TimedWord>, label: Option<Label>, print: Option<Voiceprint>) {
        let weight = run_ms(&run).max(1);
        self.confidence_ms += label.map_or(0.0, |l| l.confidence) * weight as f32;
        self.weight_ms += weight;
        self.words.extend(run);
        self.prints.extend(print);
    }

    fn finish(self) -> FinalSegment {
        let confidence = self.confidence_ms / self.weight_ms.max(1) as f32;
        FinalSegment {
            words: self.words,
            speaker: self.speaker.map(|speaker| Label {
                speaker,
                confidence,
            }),
            voiceprint: Voiceprint::mean(&self.prints),
        }
    }
}

/// Runs that make a whole file's worth of speaker work: embedded on every core (a live
/// chunk has one or two).
const RUNS_FOR_ALL_CORES: usize = 8;

/// `f` of each item, in order; on every core when there are many items.
fn on_all_cores<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if items.len() < RUNS_FOR_ALL_CORES || cores == 1 {
        return items.into_iter().map(f).collect();
    }
    let share = items.len().div_ceil(cores);
    let mut shares: Vec<Vec<T>> = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        shares.push(items.by_ref().take(share).collect());
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| scope.spawn(move || share.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The stretch of speech from word `first` on, through the words that follow it without a
/// pause that could change the speaker, up to `STRETCH_MS`: (start, end) in ms.
fn stretch_from(words: &[(u64, u64)], first: usize) -> (u64, u64) {
    let (start, mut end) = words[first];
    for &(word_start, word_end) in &words[first + 1..] {
        if word_start >= end + TURN_GAP_MS {
            break;
        }
        end = end.max(word_end);
    }
    (start, end.min(start + STRETCH_MS).max(words[first].1))
}

fn run_ms(run: &[TimedWord]) -> u64 {
    run[run.len() - 1].end_ms.saturating_sub(run[0].start_ms)
}

fn ms_to_index(ms: u64, len: usize) -> usize {
    ((ms * 16) as usize).min(len)
}

/// Splits words where a gap between them could be a change of speaker, then joins short
/// runs with their neighbours until each holds `RUN_MS` of speech: a voiceprint of 2 s is
/// far steadier than one of 1 s.
fn speech_runs(words: Vec<TimedWord>) -> Vec<Vec<TimedWord>> {
    let mut runs: Vec<Vec<TimedWord>> = Vec::new();
    for word in words {
        match runs.last_mut() {
            Some(run) if word.start_ms < run[run.len() - 1].end_ms + TURN_GAP_MS => run.push(word),
            _ => runs.push(vec![word]),
        }
    }
    let mut joined: Vec<Vec<TimedWord>> = Vec::new();
    for run in runs {
        match joined.last_mut() {
            Some(last) if run_ms(last) < RUN_MS => last.extend(run),
            _ => joined.push(run),
        }
    }
    // A short last run joins the one before it.
    if joined.len() > 1 && run_ms(&joined[joined.len() - 1]) < RUN_MS {
        let tail = joined.pop().unwrap_or_default();
        if let Some(last) = joined.last_mut() {
            last.extend(tail);
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::super::tests::word;
    use super::*;
    use crate::speaker::encoder::DIM;

    /// Two voices, told apart by loudness: samples of 0.1 are voice 1, of 0.5 voice 2.
    struct Loudness;

    impl SpeakerEncoder for Loudness {
        fn embed(&self, samples: &[f32]) -> Option<Vec<f32>> {
            let loud = samples.iter().filter(|&&x| x > 0.3).count() * 2 > samples.len();
            let mut v = vec![0.0; DIM];
            v[usize::from(loud)] = 1.0;
            Some(v)
        }
    }

    fn segment(words: Vec<TimedWord>) -> FinalSegment {
        FinalSegment {
            words,
            speaker: None,
            voiceprint: None,
        }
    }

    #[test]
    fn a_word_that_opens_a_turn_takes_the_voice_of_the_speech_after_it() {
        // Voice 1 for 0-4 s, then voice 2 from 4.5 s.
        let audio: Vec<f32> = (0..8 * 16_000)
            .map(|i| if i < 4 * 16_000 { 0.1 } else { 0.5 })
            .collect();
        let policy = TrackerPolicy::default();
        let mut speakers = Speakers::default();
        let encoder = Loudness;
        // Both voices known.
        speakers.assign(&encoder.embed(&audio[..60_000]).unwrap(), 5_000, &policy);
        speakers.assign(&encoder.embed(&audio[100_000..]).unwrap(), 5_000, &policy);
        assert_eq!(speakers.centroids.len(), 2);
        let segments = vec![
            segment(vec![word("one", 500, 1_500), word("two", 1_600, 3_800)]),
            segment(vec![word("Six.", 4_500, 4_800)]),
        ];
        let pending = [word("Message", 4_800, 5_400), word("from", 5_450, 6_500)];
        let labelled = label_segments(
            &encoder,
            &mut speakers.clone(),
            &policy,
            &audio,
            0,
            segments.clone(),
            &pending,
        );
        let labels: Vec<u32> = labelled
            .iter()
            .map(|s| s.speaker.unwrap().speaker)
            .collect();
        assert_eq!(labels, [1, 2]);
        // With nothing heard after it, the word keeps the current speaker.
        let labelled = label_segments(&encoder, &mut speakers, &policy, &audio, 0, segments, &[]);
        let labels: Vec<u32> = labelled
            .iter()
            .map(|s| s.speaker.unwrap().speaker)
            .collect();
        assert_eq!(labels, [1, 1]);
    }

    #[test]
    fn work_on_all_cores_comes_back_in_order() {
        for n in [0, 3, RUNS_FOR_ALL_CORES, 41] {
            let items: Vec<usize> = (0..n).collect();
            let squares = on_all_cores(items, |i| i * i);
            assert_eq!(squares, (0..n).map(|i| i * i).collect::<Vec<_>>());
        }
    }
}
