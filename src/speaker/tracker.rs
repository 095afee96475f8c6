//! Online speaker tracking: the stream's voiceprints (centroids with counts) and its current
//! speaker travel in the stream context; each stretch of speech is matched to them by cosine
//! similarity, with hysteresis in favour of the current speaker.
//!
//! A single run of speech (1-2 s) is too little evidence to open a speaker: two voices on
//! one telephone line can be as alike as two runs of one voice (`cargo bench --bench speaker
//! -- --study tune`). So runs not clearly of a known speaker gather into a *candidate* stretch
//! (carried in the context), and only a candidate of `NEW_SPEAKER_MS` whose mean is still far
//! from every speaker opens a new one. Against the mean of a speaker's speech, 3 s of the same
//! voice score 0.88-0.92 at worst, another voice 0.73-0.81 (tune half).

use serde::{Deserialize, Serialize};

use super::encoder::{normalise, quantise};

/// One known speaker: the running mean direction of its voiceprints, quantised to i8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Centroid {
    #[serde(with = "serde_bytes_i8")]
    mean: Vec<i8>,
    /// Speech averaged in, in tenths of a second.
    pub count: u32,
}

/// The speaker state of one stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Speakers {
    /// Label n is `centroids[n - 1]`: labels count from 1 in order of first appearance.
    pub centroids: Vec<Centroid>,
    /// The label of the latest speech.
    pub last: Option<u32>,
    /// Recent runs not clearly of any known speaker, gathered until there is enough speech
    /// to say whether they are a new speaker.
    #[serde(default)]
    pub candidate: Option<Centroid>,
    /// The stream's options, as its first chunk (or a later one that changed them) gave them.
    pub options: StreamSpeakerOptions,
}

/// Per-stream speaker options.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamSpeakerOptions {
    /// `diarize=false`: no speaker work at all.
    pub off: bool,
    pub max_speakers: Option<u32>,
    pub min_speakers: Option<u32>,
}

/// Tunables of the tracker.
#[derive(Debug, Clone, Copy)]
pub struct TrackerPolicy {
    /// A run at least this similar to a known speaker is that speaker's (and refines its
    /// voiceprint); a stretch of `NEW_SPEAKER_MS` less similar than this to every known
    /// speaker opens a new one.
    pub new_speaker_below: f32,
    /// The current speaker keeps the floor while within this much of the best match.
    pub hysteresis: f32,
    /// Most speakers a stream may have (then the best match is taken).
    pub max_speakers: usize,
    /// Speakers expected at least: until that many are known, new ones open more easily.
    pub min_speakers: usize,
    /// End-of-session relabel: clusters of voiceprints more alike than this are one speaker.
    pub merge_above: f32,
    /// While the candidate gathers, a run whose candidate holds `PROVISIONAL_MS` with a mean
    /// less similar than this to every known speaker is labelled with the speaker the
    /// candidate would open, not with the closest known one (0: never).
    pub new_voice_below: f32,
}

impl Default for TrackerPolicy {
    fn default() -> Self {
        TrackerPolicy {
            new_speaker_below: 0.85,
            hysteresis: 0.02,
            max_speakers: 8,
            min_speakers: 1,
            merge_above: 0.75,
            new_voice_below: 0.75,
        }
    }
}

/// Shorter speech is labelled with the closest known speaker but neither refines a voiceprint
/// nor gathers into the candidate (0.5 s still finds the right one of known voices 91-99 % of
/// the time on the tune half; its voiceprint is too noisy to learn from).
pub const MIN_EVIDENCE_MS: u64 = 1_000;
/// Speech a candidate gathers before it is judged a new speaker or a known one.
pub const NEW_SPEAKER_MS: u64 = 3_000;
/// Speech a candidate must hold before it is labelled as the speaker it would open: a 2 s
/// voiceprint tells two voices apart far more often than a 1 s one (equal-error rate 2-4 %
/// against 7-15 % on the tune half, `speaker-study.md`).
const PROVISIONAL_MS: u64 = 2_000;
/// A speaker known from less speech than this is *young*: against its noisy voiceprint a
/// candidate opens a new speaker only `YOUNG_MARGIN` further below the threshold (tune half:
/// margins 0 / 0.07 / 0.12 gave live confusion 10.8 / 6.5 / 7.4 %).
const YOUNG_MS: u64 = 10_000;
const YOUNG_MARGIN: f32 = 0.07;
/// A run less similar than this to the candidate's mean is another voice: the candidate
/// starts again from it.
const CANDIDATE_SPLIT_BELOW: f32 = 0.7;
/// Centroid weights are kept in tenths of a second of speech, up to this many.
const MAX_WEIGHT: u32 = 3_000;

/// How much more readily a new speaker opens while fewer than `min_speakers` are known.
const MIN_SPEAKERS_BOOST: f32 = 0.05;

/// A decision for one stretch of speech.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Label {
    pub speaker: u32,
    /// 0..1: how clearly this speaker won over the others.
    pub confidence: f32,
}

impl Centroid {
    fn new(vector: &[f32], speech_ms: u64) -> Centroid {
        Centroid {
            mean: quantise(vector),
            count: weight(speech_ms),
        }
    }

    fn vector(&self) -> Vec<f32> {
        let mut mean: Vec<f32> = self.mean.iter().map(|&q| q as f32 / 127.0).collect();
        normalise(&mut mean);
        mean
    }

    fn similarity(&self, voiceprint: &[f32]) -> f32 {
        self.vector()
            .iter()
            .zip(voiceprint)
            .map(|(a, b)| a * b)
            .sum()
    }

    /// Folds in `speech_ms` of speech with this voiceprint, weighted by speech.
    fn learn(&mut self, voiceprint: &[f32], speech_ms: u64) {
        let (old, new) = (self.count as f32, weight(speech_ms) as f32);
        let mut mean: Vec<f32> = self
            .vector()
            .iter()
            .zip(voiceprint)
            .map(|(m, v)| m * old + v * new)
            .collect();
        normalise(&mut mean);
        self.mean = quantise(&mean);
        self.count = self.count.saturating_add(weight(speech_ms)).min(MAX_WEIGHT);
    }

    /// A stretch's similarity as judged for opening a speaker: a speaker known from little
    /// speech has a noisy voiceprint, its own voice scores lower against it, so the bar for
    /// "another voice" is lower too.
    fn judge(&self, mean: &[f32]) -> f32 {
        let young = if self.speech_ms() < YOUNG_MS {
            YOUNG_MARGIN
        } else {
            0.0
        };
        self.similarity(mean) + young
    }

    fn speech_ms(&self) -> u64 {
        self.count as u64 * 100
    }
}

fn weight(speech_ms: u64) -> u32 {
    (speech_ms / 100).clamp(1, MAX_WEIGHT as u64) as u32
}

impl Speakers {
    /// The known speakers' voiceprints (unit length), speaker 1 first.
    pub fn voiceprints(&self) -> Vec<Vec<f32>> {
        self.centroids.iter().map(Centroid::vector).collect()
    }

    fn similarities(&self, voiceprint: &[f32]) -> Vec<f32> {
        self.centroids
            .iter()
            .map(|c| c.similarity(voiceprint))
            .collect()
    }

    /// Labels a voiceprint (unit length) of `speech_ms` of speech and learns from it. A run
    /// clearly of a known speaker refines that speaker's voiceprint; any other run joins the
    /// candidate stretch, labelled with the closest speaker meanwhile, and the candidate,
    /// once it holds `NEW_SPEAKER_MS`, becomes a new speaker or joins the closest one.
    pub fn assign(&mut self, voiceprint: &[f32], speech_ms: u64, policy: &TrackerPolicy) -> Label {
        let eager = if self.centroids.len() < policy.min_speakers {
            MIN_SPEAKERS_BOOST
        } else {
            0.0
        };
        let threshold = policy.new_speaker_below + eager;
        let sims = self.similarities(voiceprint);
        let best = (0..sims.len()).max_by(|&a, &b| sims[a].total_cmp(&sims[b]));
        let current = self
            .last
            .map(|l| l as usize - 1)
            .filter(|&i| i < sims.len());
        let mut chosen = match (best, current) {
            (Some(b), Some(c)) if sims[c] >= sims[b] - policy.hysteresis => Some(c),
            (b, _) => b,
        };
        match chosen {
            // Less than a second: enough to tell known voices apart, too little to learn from.
            // (A voice the candidate may open keeps its label through it.)
            _ if speech_ms < MIN_EVIDENCE_MS && !self.centroids.is_empty() => {
                if self.candidate.is_some() && self.last == Some(self.centroids.len() as u32 + 1) {
                    chosen = Some(self.centroids.len());
                }
            }
            Some(i) if sims[i] >= threshold => self.centroids[i].learn(voiceprint, speech_ms),
            _ => match self.gather(voiceprint, speech_ms, threshold, policy) {
                Some(opened) => chosen = Some(opened),
                None if self.candidate_is_new_voice(policy) => chosen = Some(self.centroids.len()),
                None => {}
            },
        }
        // Similarities as the run was judged; speakers and candidate as they are after it.
        tracing::debug!(
            event = "speaker_run",
            speech_ms,
            similarities = ?sims.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>(),
            chosen = chosen.map(|i| i + 1),
            speakers = self.centroids.len(),
            candidate_ms = self.candidate.as_ref().map_or(0, Centroid::speech_ms),
        );
        let sims = self.similarities(voiceprint);
        let index = chosen.unwrap_or(0);
        let own = sims.get(index).copied().unwrap_or(0.0);
        let rival = sims
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, s)| *s)
            .fold(threshold - 0.1, f32::max);
        let speaker = index as u32 + 1;
        self.last = Some(speaker);
        let confidence = if index < self.centroids.len() {
            (0.5 + (own - rival) / 0.4).clamp(0.0, 1.0)
        } else {
            // The speaker the candidate would open: not yet known.
            0.3
        };
        Label {
            speaker,
            confidence: if speech_ms < MIN_EVIDENCE_MS {
                confidence.min(0.5)
            } else {
                confidence
            },
        }
    }

    /// Labels a stretch by speech heard with it rather than its own (a word too short for a
    /// voiceprint, by the speech that follows it): the closest known speaker, as `assign`
    /// chooses it, learning nothing (0 ms of evidence); confidence at most 0.5.
    pub fn nearest(&mut self, voiceprint: &[f32], policy: &TrackerPolicy) -> Option<Label> {
        if self.centroids.is_empty() {
            return None;
        }
        let label = self.assign(voiceprint, 0, policy);
        Some(Label {
            confidence: label.confidence.min(0.5),
            ..label
        })
    }

    /// Whether the gathering candidate is, so far, far from every known speaker.
    fn candidate_is_new_voice(&self, policy: &TrackerPolicy) -> bool {
        let Some(candidate) = &self.candidate else {
            return false;
        };
        let mean = candidate.vector();
        policy.new_voice_below > 0.0
            && candidate.speech_ms() >= PROVISIONAL_MS
            && !self.centroids.is_empty()
            && self.centroids.len() < policy.max_speakers.max(1)
            && self
                .centroids
                .iter()
                .all(|c| c.judge(&mean) < policy.new_voice_below)
    }

    /// Adds a run to the candidate stretch; once the candidate holds `NEW_SPEAKER_MS`, it
    /// opens a new speaker (returned) or refines the closest one, and is emptied.
    fn gather(
        &mut self,
        voiceprint: &[f32],
        speech_ms: u64,
        threshold: f32,
        policy: &TrackerPolicy,
    ) -> Option<usize> {
        match &mut self.candidate {
            Some(c) if c.similarity(voiceprint) >= CANDIDATE_SPLIT_BELOW => {
                c.learn(voiceprint, speech_ms)
            }
            _ => self.candidate = Some(Centroid::new(voiceprint, speech_ms)),
        }
        let candidate = self.candidate.as_ref()?;
        if candidate.speech_ms() < NEW_SPEAKER_MS {
            return None;
        }
        let candidate = self.candidate.take()?;
        let mean = candidate.vector();
        let sims: Vec<f32> = self.centroids.iter().map(|c| c.judge(&mean)).collect();
        let best = (0..sims.len()).max_by(|&a, &b| sims[a].total_cmp(&sims[b]));
        match best {
            Some(b)
                if sims[b] >= threshold || self.centroids.len() >= policy.max_speakers.max(1) =>
            {
                self.centroids[b].learn(&mean, candidate.speech_ms());
                None
            }
            _ => {
                self.centroids.push(candidate);
                Some(self.centroids.len() - 1)
            }
        }
    }

    /// A stretch too short to judge: the current speaker, with low confidence.
    pub fn inherit(&self) -> Option<Label> {
        self.last.map(|speaker| Label {
            speaker,
            confidence: 0.3,
        })
    }
}

/// `Vec<i8>` as bytes (postcard writes it compactly either way; this keeps JSON dumps short).
mod serde_bytes_i8 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[i8], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().map(|&x| x as u8).collect();
        bytes.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i8>, D::Error> {
        Ok(Vec::<u8>::deserialize(d)?
            .into_iter()
            .map(|x| x as i8)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speaker::encoder::DIM;

    fn unit(seed: u32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIM as u32)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        normalise(&mut v);
        v
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn mix(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
        let mut v: Vec<f32> = a
            .iter()
            .zip(b)
            .map(|(x, y)| x * (1.0 - t) + y * t)
            .collect();
        normalise(&mut v);
        v
    }

    #[test]
    fn labels_count_from_one_in_order_of_appearance_and_stay() {
        let policy = TrackerPolicy {
            new_speaker_below: 0.9,
            ..TrackerPolicy::default()
        };
        let (a, b) = (unit(1), unit(2));
        let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(cos < 0.9, "test voices must differ: {cos}");
        let mut s = Speakers::default();
        assert_eq!(s.assign(&a, 3_000, &policy).speaker, 1);
        assert_eq!(s.assign(&b, 3_000, &policy).speaker, 2);
        assert_eq!(s.assign(&mix(&a, &b, 0.05), 3_000, &policy).speaker, 1);
        assert_eq!(s.inherit().unwrap().speaker, 1);
        assert_eq!(s.assign(&b, 3_000, &policy).speaker, 2);
        assert_eq!(s.centroids.len(), 2);
        // Weighted by speech: two 3 s runs.
        assert_eq!(s.centroids[0].count, 60);
    }

    #[test]
    fn a_new_voice_opens_a_speaker_only_after_enough_speech() {
        // Without the far-candidate label (next test), to see the candidate alone.
        let policy = TrackerPolicy {
            new_speaker_below: 0.9,
            new_voice_below: 0.0,
            ..TrackerPolicy::default()
        };
        let (a, c) = (unit(1), unit(3));
        let mut s = Speakers::default();
        s.assign(&a, 3_000, &policy);
        // One or two seconds of another voice: labelled with the closest speaker meanwhile.
        assert_eq!(s.assign(&c, 1_000, &policy).speaker, 1);
        assert_eq!(s.assign(&c, 1_000, &policy).speaker, 1);
        assert_eq!(s.centroids.len(), 1);
        // The third second makes the stretch long enough: a new speaker, from its mean.
        assert_eq!(s.assign(&c, 1_000, &policy).speaker, 2);
        assert_eq!(s.centroids.len(), 2);
        assert!(s.candidate.is_none());
        assert_eq!(s.assign(&c, 1_000, &policy).speaker, 2);
    }

    #[test]
    fn a_far_candidate_is_labelled_as_the_speaker_it_would_open() {
        let policy = TrackerPolicy {
            new_speaker_below: 0.9,
            new_voice_below: 0.8,
            ..TrackerPolicy::default()
        };
        let (a, c) = (unit(1), unit(3));
        assert!(cosine(&a, &c) < 0.8);
        let mut s = Speakers::default();
        s.assign(&a, 3_000, &policy);
        // Under two seconds of the new voice is too little for its own label.
        assert_eq!(s.assign(&c, 1_500, &policy).speaker, 1);
        // From two seconds, the new voice carries the label it will get.
        let first = s.assign(&c, 1_000, &policy);
        assert_eq!(first.speaker, 2);
        assert!(first.confidence < 0.5);
        assert_eq!(s.inherit().unwrap().speaker, 2);
        assert_eq!(s.centroids.len(), 1);
        // Under a second is too little to take it back, even nearest a known voice.
        assert_eq!(s.assign(&a, 500, &policy).speaker, 2);
        assert_eq!(s.assign(&c, 1_000, &policy).speaker, 2);
        assert_eq!(s.centroids.len(), 2);
        // A doubtful run nearer a known voice than `new_voice_below` keeps the closest label.
        let near = mix(&a, &c, 0.35);
        let sims = s.similarities(&near);
        assert!(sims[0] < 0.9 && sims[0] >= 0.8, "{sims:?}");
        assert_eq!(s.assign(&near, 1_000, &policy).speaker, 1);
    }

    #[test]
    fn a_candidate_of_one_known_voice_refines_it_instead_of_opening_a_speaker() {
        let policy = TrackerPolicy {
            new_speaker_below: 0.95,
            ..TrackerPolicy::default()
        };
        let axis = |i: usize| -> Vec<f32> { (0..DIM).map(|j| f32::from(j == i)).collect() };
        let a = axis(0);
        // Three runs of voice a, each 0.45 off in another direction (120 degrees apart):
        // every one doubtful (0.91 < 0.95), their mean a itself.
        let runs: Vec<Vec<f32>> = [0.0f32, 2.094, 4.189]
            .iter()
            .map(|t| {
                let mut v: Vec<f32> = (0..DIM)
                    .map(|j| a[j] + 0.45 * (t.cos() * axis(1)[j] + t.sin() * axis(2)[j]))
                    .collect();
                normalise(&mut v);
                v
            })
            .collect();
        let mut s = Speakers::default();
        s.assign(&a, 3_000, &policy);
        for v in &runs {
            assert!(s.similarities(v)[0] < 0.95);
            assert_eq!(s.assign(v, 1_000, &policy).speaker, 1);
        }
        assert_eq!(s.centroids.len(), 1, "the stretch's mean is voice a");
        assert_eq!(s.centroids[0].count, 60);
        assert!(s.candidate.is_none());
    }

    #[test]
    fn the_cap_on_speakers_holds() {
        let policy = TrackerPolicy {
            new_speaker_below: 0.999,
            max_speakers: 2,
            ..TrackerPolicy::default()
        };
        let mut s = Speakers::default();
        for seed in 0..5 {
            let label = s.assign(&unit(seed), 3_000, &policy);
            assert!(label.speaker <= 2);
        }
        assert_eq!(s.centroids.len(), 2);
    }

    #[test]
    fn hysteresis_keeps_the_current_speaker_on_a_near_tie() {
        let policy = TrackerPolicy {
            new_speaker_below: 0.5,
            hysteresis: 0.05,
            ..TrackerPolicy::default()
        };
        let (a, b) = (unit(1), unit(2));
        let mut s = Speakers::default();
        s.assign(&a, 3_000, &policy);
        s.assign(&b, 3_000, &policy);
        s.last = Some(1);
        // Just past halfway towards b: the current speaker (1) keeps it.
        assert_eq!(s.assign(&mix(&a, &b, 0.51), 3_000, &policy).speaker, 1);
    }
}
