//! Online speaker tracking: the stream's voiceprints (centroids with counts) and its current
//! speaker travel in the stream context; each stretch of speech is matched to them by cosine
//! similarity, with hysteresis in favour of the current speaker.

use serde::{Deserialize, Serialize};

use super::encoder::{normalise, quantise};

/// One known speaker: the running mean direction of its voiceprints, quantised to i8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Centroid {
    #[serde(with = "serde_bytes_i8")]
    mean: Vec<i8>,
    /// Voiceprints averaged in.
    pub count: u32,
}

/// The speaker state of one stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Speakers {
    /// Label n is `centroids[n - 1]`: labels count from 1 in order of first appearance.
    pub centroids: Vec<Centroid>,
    /// The label of the latest speech.
    pub last: Option<u32>,
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
    /// Below this similarity to every known speaker a new speaker is opened.
    pub new_speaker_below: f32,
    /// The current speaker keeps the floor while within this much of the best match.
    pub hysteresis: f32,
    /// Most speakers a stream may have (then the best match is taken).
    pub max_speakers: usize,
    /// Speakers expected at least: until that many are known, new ones open more easily.
    pub min_speakers: usize,
    /// End-of-session relabel: clusters of voiceprints more alike than this are one speaker.
    pub merge_above: f32,
}

impl Default for TrackerPolicy {
    fn default() -> Self {
        TrackerPolicy {
            new_speaker_below: 0.75,
            hysteresis: 0.05,
            max_speakers: 8,
            min_speakers: 1,
            merge_above: 0.75,
        }
    }
}

/// Shortest speech whose voiceprint may open a new speaker.
pub const MIN_NEW_SPEAKER_MS: u64 = 2_000;

/// How much more readily a new speaker opens while fewer than `min_speakers` are known.
const MIN_SPEAKERS_BOOST: f32 = 0.05;

/// A decision for one stretch of speech.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Label {
    pub speaker: u32,
    /// 0..1: how clearly this speaker won over the others.
    pub confidence: f32,
}

impl Speakers {
    fn similarities(&self, voiceprint: &[f32]) -> Vec<f32> {
        self.centroids
            .iter()
            .map(|c| {
                let mut mean: Vec<f32> = c.mean.iter().map(|&q| q as f32 / 127.0).collect();
                normalise(&mut mean);
                mean.iter().zip(voiceprint).map(|(a, b)| a * b).sum()
            })
            .collect()
    }

    /// Labels a voiceprint (unit length) of `speech_ms` of speech and learns from it. Only
    /// a voiceprint of at least `MIN_NEW_SPEAKER_MS` may open a new speaker (shorter ones
    /// are too noisy: they join the closest known speaker).
    pub fn assign(&mut self, voiceprint: &[f32], speech_ms: u64, policy: &TrackerPolicy) -> Label {
        let sims = self.similarities(voiceprint);
        let eager = if self.centroids.len() < policy.min_speakers {
            MIN_SPEAKERS_BOOST
        } else {
            0.0
        };
        let policy = &TrackerPolicy {
            new_speaker_below: policy.new_speaker_below + eager,
            ..*policy
        };
        let best = (0..sims.len()).max_by(|&a, &b| sims[a].total_cmp(&sims[b]));
        let current = self
            .last
            .map(|l| l as usize - 1)
            .filter(|&i| i < sims.len());
        let chosen = match (best, current) {
            (Some(b), Some(c))
                if sims[c] >= sims[b] - policy.hysteresis
                    && sims[c] >= policy.new_speaker_below =>
            {
                Some(c)
            }
            (Some(b), _) if sims[b] >= policy.new_speaker_below => Some(b),
            (Some(b), _)
                if self.centroids.len() >= policy.max_speakers.max(1)
                    || speech_ms < MIN_NEW_SPEAKER_MS =>
            {
                Some(b)
            }
            _ => None,
        };
        let (index, own) = match chosen {
            Some(i) => {
                // Only long, clear matches refine a voiceprint: short or doubtful ones would
                // blur it towards the other voices.
                if speech_ms >= MIN_NEW_SPEAKER_MS && sims[i] >= policy.new_speaker_below {
                    self.learn(i, voiceprint);
                }
                (i, sims[i])
            }
            None => {
                self.centroids.push(Centroid {
                    mean: quantise(voiceprint),
                    count: 1,
                });
                (self.centroids.len() - 1, 1.0)
            }
        };
        let rival = sims
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, s)| *s)
            .fold(policy.new_speaker_below, f32::max);
        let speaker = index as u32 + 1;
        self.last = Some(speaker);
        Label {
            speaker,
            confidence: (0.5 + (own - rival) / 0.4).clamp(0.0, 1.0),
        }
    }

    /// A stretch too short to judge: the current speaker, with low confidence.
    pub fn inherit(&self) -> Option<Label> {
        self.last.map(|speaker| Label {
            speaker,
            confidence: 0.3,
        })
    }

    fn learn(&mut self, index: usize, voiceprint: &[f32]) {
        let c = &mut self.centroids[index];
        let n = c.count as f32;
        let mut mean: Vec<f32> = c
            .mean
            .iter()
            .zip(voiceprint)
            .map(|(&q, v)| (q as f32 / 127.0) * n + v)
            .collect();
        normalise(&mut mean);
        c.mean = quantise(&mean);
        c.count = c.count.saturating_add(1).min(1_000);
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
        assert_eq!(s.centroids[0].count, 2);
        // A short match labels but does not learn.
        s.assign(&a, 1_000, &policy);
        assert_eq!(s.centroids[0].count, 2);
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
