//! End-of-session relabelling: with the whole session's segment voiceprints at hand, the
//! speakers are found again by clustering them all at once (the live tracker had to decide
//! each stretch as it arrived, knowing only the past).
//!
//! When the stream's own speakers are at hand (the voiceprints its tracker ended with, learnt
//! from the whole stream), each segment goes to the closest of them: the live labels' count,
//! without their early guesses. Otherwise long segments are clustered agglomeratively
//! (average linkage on cosine similarity, weighted by speech length) until no two clusters are
//! closer than the threshold, within the stream's speaker bounds. Either way speakers that
//! converge are merged, a speaker whose own voiceprints sit nearer other speakers' (a mix of
//! two voices) is dissolved, and so is one left with too little speech;
//! segments without a voiceprint take the speaker of their neighbour with low confidence.

use super::tracker::Label;
use super::Voiceprint;

/// Voiceprints from at least this much speech form the clusters; shorter ones join them.
pub const ANCHOR_MS: u64 = 2_000;
/// At most this many voiceprints are clustered (the longest); the rest join the clusters.
const MAX_ANCHORS: usize = 1_500;
/// A cluster with less speech than this in all is taken for a stray part of another speaker
/// (noisy voiceprints of one voice that did not merge) and dissolved into the others, as long
/// as `min_speakers` remain (pyannote's clustering has the same rule, `min_cluster_size`).
pub const MIN_CLUSTER_MS: u64 = 4_000;

/// Bounds and threshold of one relabelling.
#[derive(Debug, Clone, Copy)]
pub struct RelabelPolicy {
    /// Clusters closer than this (average cosine similarity) are one speaker.
    pub merge_above: f32,
    pub min_speakers: usize,
    pub max_speakers: usize,
}

impl RelabelPolicy {
    /// A stream's: its tracker's bounds and clustering threshold.
    pub fn of(tracker: &super::TrackerPolicy) -> Self {
        RelabelPolicy {
            merge_above: tracker.merge_above,
            min_speakers: tracker.min_speakers,
            max_speakers: tracker.max_speakers,
        }
    }
}

/// Labels, one per voiceprint slot (`None` slots are segments too short to embed), numbered
/// from 1 in order of first appearance. `known`: the stream's speakers (unit voiceprints), if
/// any. `spans`: each slot's start and end (ms), when known: a slot without a voiceprint then
/// takes the label of the nearer labelled neighbour in time (a word at the start of a turn
/// belongs with what follows it), else of the previous one. All `None` only when no slot has
/// a voiceprint.
pub fn relabel(
    prints: &[Option<Voiceprint>],
    spans: &[(u64, u64)],
    known: &[Vec<f32>],
    policy: &RelabelPolicy,
) -> Vec<Option<Label>> {
    let with_print: Vec<usize> = (0..prints.len()).filter(|&i| prints[i].is_some()).collect();
    if with_print.is_empty() {
        return vec![None; prints.len()];
    }
    let speech = |i: usize| prints[i].as_ref().map_or(0, |p| p.speech_ms);
    let vector = |i: usize| {
        &prints[i]
            .as_ref()
            .expect("only slots with voiceprints")
            .vector
    };
    let mut centroids: Vec<Vec<f32>> = if known.is_empty() {
        let mut anchors: Vec<usize> = with_print
            .iter()
            .copied()
            .filter(|&i| speech(i) >= ANCHOR_MS)
            .collect();
        if anchors.is_empty() {
            anchors = with_print.clone();
        }
        if anchors.len() > MAX_ANCHORS {
            anchors.sort_by_key(|&i| std::cmp::Reverse(speech(i)));
            anchors.truncate(MAX_ANCHORS);
            anchors.sort_unstable();
        }
        let clusters = cluster(
            &anchors
                .iter()
                .map(|&i| vector(i).as_slice())
                .collect::<Vec<_>>(),
            &anchors
                .iter()
                .map(|&i| speech(i) as f32)
                .collect::<Vec<_>>(),
            policy,
        );
        clusters
            .iter()
            .map(|members| {
                Voiceprint::mean(members.iter().filter_map(|&m| prints[anchors[m]].as_ref()))
                    .map(|p| p.vector)
                    .unwrap_or_default()
            })
            .collect()
    } else {
        known.to_vec()
    };
    merge_converged(
        &mut centroids,
        prints,
        &with_print,
        policy.min_speakers.max(1),
    );
    dissolve_spurious(
        &mut centroids,
        prints,
        &with_print,
        policy.min_speakers.max(2),
    );
    // Every voiceprint joins its closest speaker; a speaker with too little speech in all is
    // dissolved (smallest first, while more than `min_speakers` remain) and its voiceprints
    // join the others.
    let mut labels: Vec<Option<Label>>;
    loop {
        labels = vec![None; prints.len()];
        let mut mass = vec![0u64; centroids.len()];
        for &i in &with_print {
            let v = vector(i);
            let sims: Vec<f32> = centroids.iter().map(|c| dot(c, v)).collect();
            let best = (0..sims.len())
                .max_by(|&a, &b| sims[a].total_cmp(&sims[b]))
                .unwrap_or(0);
            let rival = (0..sims.len())
                .filter(|&j| j != best)
                .map(|j| sims[j])
                .fold(policy.merge_above, f32::max);
            mass[best] += speech(i);
            labels[i] = Some(Label {
                speaker: best as u32,
                confidence: (0.5 + (sims[best] - rival) / 0.4).clamp(0.0, 1.0),
            });
        }
        let smallest = (0..centroids.len()).min_by_key(|&c| mass[c]);
        match smallest {
            Some(c) if centroids.len() > policy.min_speakers.max(1) && mass[c] < MIN_CLUSTER_MS => {
                centroids.remove(c);
            }
            _ => break,
        }
    }
    // Segments too short to embed: the nearer labelled neighbour's speaker (the previous
    // one's when times are unknown).
    let embedded = labels.clone();
    for (i, label) in labels.iter_mut().enumerate() {
        if label.is_none() {
            *label = nearer_label(&embedded, spans, i, 0.3);
        }
    }
    // Number the speakers from 1 in order of first appearance.
    let mut order: Vec<u32> = Vec::new();
    for label in labels.iter_mut().flatten() {
        let n = match order.iter().position(|&c| c == label.speaker) {
            Some(n) => n,
            None => {
                order.push(label.speaker);
                order.len() - 1
            }
        };
        label.speaker = n as u32 + 1;
    }
    labels
}

/// The label of the labelled slot nearest to slot `i` in time (before it on a tie, or when
/// `spans` does not give the times), its confidence capped at `cap`.
fn nearer_label(
    labels: &[Option<Label>],
    spans: &[(u64, u64)],
    i: usize,
    cap: f32,
) -> Option<Label> {
    let before = (0..i).rev().find(|&j| labels[j].is_some());
    let after = (i + 1..labels.len()).find(|&j| labels[j].is_some());
    let pick = match (before, after) {
        (Some(b), Some(a)) if spans.len() == labels.len() => {
            let gap_before = spans[i].0.saturating_sub(spans[b].1);
            let gap_after = spans[a].0.saturating_sub(spans[i].1);
            Some(if gap_after < gap_before { a } else { b })
        }
        (b, a) => b.or(a),
    };
    pick.and_then(|j| labels[j]).map(|l| Label {
        confidence: l.confidence.min(cap),
        ..l
    })
}

/// Speakers whose speech, heard whole, is this alike are one voice opened twice (tune half:
/// the means of two different voices' segments scored 0.40-0.80, the two halves of one voice's
/// segments 0.97-0.98).
pub const CONVERGED_ABOVE: f32 = 0.9;

/// Merges speakers that converge: each voiceprint goes to its closest speaker, each speaker
/// becomes the speech-weighted mean of its voiceprints, and the two most alike merge while
/// they are more alike than `CONVERGED_ABOVE` and more than `min_speakers` remain.
fn merge_converged(
    centroids: &mut Vec<Vec<f32>>,
    prints: &[Option<Voiceprint>],
    with_print: &[usize],
    min_speakers: usize,
) {
    loop {
        let mut members: Vec<Vec<&Voiceprint>> = vec![Vec::new(); centroids.len()];
        for &i in with_print {
            let Some(p) = prints[i].as_ref() else {
                continue;
            };
            let best = (0..centroids.len()).max_by(|&a, &b| {
                dot(&centroids[a], &p.vector).total_cmp(&dot(&centroids[b], &p.vector))
            });
            if let Some(b) = best {
                members[b].push(p);
            }
        }
        let means: Vec<Option<Voiceprint>> = members
            .iter()
            .map(|m| Voiceprint::mean(m.iter().copied()))
            .collect();
        let mut closest: Option<(usize, usize, f32)> = None;
        for a in 0..means.len() {
            for b in a + 1..means.len() {
                if let (Some(x), Some(y)) = (&means[a], &means[b]) {
                    let s = dot(&x.vector, &y.vector);
                    if closest.is_none_or(|(_, _, c)| s > c) {
                        closest = Some((a, b, s));
                    }
                }
            }
        }
        match closest {
            Some((a, b, s)) if s > CONVERGED_ABOVE && centroids.len() > min_speakers => {
                let joined: Vec<&Voiceprint> =
                    members[a].iter().chain(&members[b]).copied().collect();
                if let Some(mean) = Voiceprint::mean(joined) {
                    centroids[a] = mean.vector;
                }
                centroids.remove(b);
            }
            _ => return,
        }
    }
}

/// Voiceprints from at least this much speech judge which speakers are real (shorter ones
/// are too noisy), at most `MAX_JUDGES` of them (the longest).
const JUDGE_MS: u64 = 1_000;
const MAX_JUDGES: usize = 800;

/// Dissolves the speakers that are mixes: while some speaker's own voiceprints sit, on
/// average, nearer another speaker's than their own (its members' silhouette is negative),
/// the one of them whose removal (its voiceprints joining their next-closest speaker) raises
/// the speech-weighted silhouette of all the judging voiceprints most is removed, down to
/// `min_speakers`. A speaker the tracker opened for a mix of two voices sits between them;
/// a real voice, even one close to another or one that split into two modes, holds its own
/// voiceprints. Not removing any speaker that raises the silhouette: on the tune half that
/// merged a real voice into its neighbours (a whole file, tune/four: 16 % confusion to 39 %).
/// No similarity threshold either: on the test half one voice's own modes (0.86 apart) are
/// further apart than two voices on one telephone line (0.90), so none separates them.
fn dissolve_spurious(
    centroids: &mut Vec<Vec<f32>>,
    prints: &[Option<Voiceprint>],
    with_print: &[usize],
    min_speakers: usize,
) {
    let mut judges: Vec<&Voiceprint> = with_print
        .iter()
        .filter_map(|&i| prints[i].as_ref())
        .filter(|p| p.speech_ms >= JUDGE_MS)
        .collect();
    if judges.len() > MAX_JUDGES {
        judges.sort_by_key(|p| std::cmp::Reverse(p.speech_ms));
        judges.truncate(MAX_JUDGES);
    }
    // Too few voiceprints to judge by: fewer than two a speaker.
    if centroids.len() <= min_speakers || judges.len() < 2 * centroids.len() {
        return;
    }
    let silhouette = Silhouette::new(&judges);
    let closest = |centroids: &[Vec<f32>]| -> Vec<usize> {
        judges
            .iter()
            .map(|p| {
                (0..centroids.len())
                    .max_by(|&a, &b| {
                        dot(&centroids[a], &p.vector).total_cmp(&dot(&centroids[b], &p.vector))
                    })
                    .unwrap_or(0)
            })
            .collect()
    };
    while centroids.len() > min_speakers {
        let labels = closest(centroids);
        let Some(now) = silhouette.of(&labels, centroids.len()) else {
            return;
        };
        let score = now.overall();
        let mut best: Option<(f32, Vec<Vec<f32>>)> = None;
        for gone in (0..centroids.len()).filter(|&c| now.speaker(c) < 0.0) {
            let rest: Vec<Vec<f32>> = (0..centroids.len())
                .filter(|&c| c != gone)
                .map(|c| centroids[c].clone())
                .collect();
            // The others, recentred on the voiceprints they now hold.
            let labels = closest(&rest);
            let recentred: Vec<Vec<f32>> = (0..rest.len())
                .filter_map(|c| {
                    Voiceprint::mean(
                        judges
                            .iter()
                            .zip(&labels)
                            .filter(|&(_, &l)| l == c)
                            .map(|(p, _)| *p),
                    )
                })
                .map(|p| p.vector)
                .collect();
            let after_labels = closest(&recentred);
            let Some(after) = silhouette.of(&after_labels, recentred.len()) else {
                continue;
            };
            let s = after.overall();
            if best.as_ref().is_none_or(|(b, _)| s > *b) {
                best = Some((s, recentred));
            }
        }
        match best {
            Some((s, rest)) if s > score => *centroids = rest,
            _ => return,
        }
    }
}

/// Cosine distances between fixed voiceprints, and their weights (speech length), to judge
/// labellings of them by the silhouette.
struct Silhouette {
    distance: Vec<Vec<f32>>,
    weight: Vec<f32>,
}

/// One labelling's silhouette values: for each voiceprint, how much closer it is to its own
/// speaker's others than to the nearest other speaker's (-1 to 1; 0 when it is its speaker's
/// only one).
struct Silhouettes<'a> {
    values: Vec<f32>,
    labels: &'a [usize],
    weight: &'a [f32],
}

impl Silhouettes<'_> {
    /// Speech-weighted mean over all voiceprints.
    fn overall(&self) -> f32 {
        self.mean(|_| true)
    }

    /// Speech-weighted mean over one speaker's voiceprints.
    fn speaker(&self, c: usize) -> f32 {
        self.mean(|i| self.labels[i] == c)
    }

    fn mean(&self, take: impl Fn(usize) -> bool) -> f32 {
        let (mut sum, mut mass) = (0.0, 0.0);
        for (i, v) in self.values.iter().enumerate().filter(|&(i, _)| take(i)) {
            sum += self.weight[i] * v;
            mass += self.weight[i];
        }
        if mass > 0.0 {
            sum / mass
        } else {
            0.0
        }
    }
}

impl Silhouette {
    fn new(prints: &[&Voiceprint]) -> Self {
        let n = prints.len();
        let mut distance = vec![vec![0.0f32; n]; n];
        for a in 0..n {
            for b in a + 1..n {
                let d = 1.0 - dot(&prints[a].vector, &prints[b].vector);
                distance[a][b] = d;
                distance[b][a] = d;
            }
        }
        let weight = prints.iter().map(|p| p.speech_ms as f32).collect();
        Silhouette { distance, weight }
    }

    /// `None` when fewer than two speakers hold voiceprints, or one holds none.
    fn of<'a>(&'a self, labels: &'a [usize], speakers: usize) -> Option<Silhouettes<'a>> {
        let mut mass = vec![0.0f32; speakers];
        for (i, &l) in labels.iter().enumerate() {
            mass[l] += self.weight[i];
        }
        if speakers < 2 || mass.contains(&0.0) {
            return None;
        }
        let values = self
            .distance
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let mut to = vec![0.0f32; speakers];
                for (j, d) in row.iter().enumerate() {
                    to[labels[j]] += self.weight[j] * d;
                }
                let own = labels[i];
                let others = mass[own] - self.weight[i];
                if others <= 0.0 {
                    return 0.0;
                }
                let a = to[own] / others;
                let b = (0..speakers)
                    .filter(|&c| c != own)
                    .map(|c| to[c] / mass[c])
                    .fold(f32::INFINITY, f32::min);
                (b - a) / a.max(b).max(f32::EPSILON)
            })
            .collect();
        Some(Silhouettes {
            values,
            labels,
            weight: &self.weight,
        })
    }
}

/// Average-linkage agglomerative clustering of unit vectors with weights; returns the
/// clusters as lists of indices.
fn cluster(vectors: &[&[f32]], weights: &[f32], policy: &RelabelPolicy) -> Vec<Vec<usize>> {
    let n = vectors.len();
    let mut sim = vec![vec![0.0f32; n]; n];
    for a in 0..n {
        for b in a + 1..n {
            let s = dot(vectors[a], vectors[b]);
            sim[a][b] = s;
            sim[b][a] = s;
        }
    }
    let mut members: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let mut weight: Vec<f32> = weights.iter().map(|w| w.max(1.0)).collect();
    let mut alive: Vec<bool> = vec![true; n];
    let mut count = n;
    let min = policy.min_speakers.max(1);
    let max = policy.max_speakers.max(min);
    while count > min {
        let mut best: Option<(usize, usize, f32)> = None;
        for a in (0..n).filter(|&a| alive[a]) {
            for b in (a + 1..n).filter(|&b| alive[b]) {
                if best.is_none_or(|(_, _, s)| sim[a][b] > s) {
                    best = Some((a, b, sim[a][b]));
                }
            }
        }
        let Some((a, b, s)) = best else { break };
        if s < policy.merge_above && count <= max {
            break;
        }
        // Merge b into a (Lance–Williams update for weighted average linkage).
        let (wa, wb) = (weight[a], weight[b]);
        for c in (0..n).filter(|&c| alive[c] && c != a && c != b) {
            let merged = (wa * sim[a][c] + wb * sim[b][c]) / (wa + wb);
            sim[a][c] = merged;
            sim[c][a] = merged;
        }
        weight[a] = wa + wb;
        let moved = std::mem::take(&mut members[b]);
        members[a].extend(moved);
        alive[b] = false;
        count -= 1;
    }
    members.into_iter().filter(|m| !m.is_empty()).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speaker::encoder::{dequantise, normalise, quantise, DIM};

    fn voice(seed: u32, noise: u32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIM as u32)
            .map(|i| {
                let base = ((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0 - 0.5;
                let jitter = ((i * 31 + noise * 977) % 100) as f32 / 100.0 - 0.5;
                base + 0.3 * jitter
            })
            .collect();
        normalise(&mut v);
        v
    }

    fn print(seed: u32, noise: u32, speech_ms: u64) -> Option<Voiceprint> {
        Some(Voiceprint {
            vector: voice(seed, noise),
            speech_ms,
        })
    }

    const POLICY: RelabelPolicy = RelabelPolicy {
        merge_above: 0.8,
        min_speakers: 1,
        max_speakers: 8,
    };

    #[test]
    fn finds_each_voice_once_numbered_by_first_appearance() {
        let prints = vec![
            print(7, 1, 3_000),
            print(3, 2, 3_000),
            None,
            print(7, 3, 2_500),
            print(3, 4, 1_200),
            print(9, 5, 4_000),
            print(7, 6, 3_000),
        ];
        let labels: Vec<u32> = relabel(&prints, &[], &[], &POLICY)
            .iter()
            .map(|l| l.unwrap().speaker)
            .collect();
        assert_eq!(labels, vec![1, 2, 2, 1, 2, 3, 1]);
        // The short, unembedded segment has low confidence.
        assert!(relabel(&prints, &[], &[], &POLICY)[2].unwrap().confidence <= 0.3);
    }

    #[test]
    fn speaker_bounds_hold() {
        let prints: Vec<_> = (0..6).map(|s| print(s, s, 5_000)).collect();
        let most = |max| {
            relabel(
                &prints,
                &[],
                &[],
                &RelabelPolicy {
                    max_speakers: max,
                    ..POLICY
                },
            )
            .iter()
            .map(|l| l.unwrap().speaker)
            .max()
            .unwrap()
        };
        assert_eq!(most(8), 6);
        assert_eq!(most(2), 2);
        let fewest = relabel(
            &[print(1, 1, 3_000), print(1, 2, 3_000)],
            &[],
            &[],
            &RelabelPolicy {
                min_speakers: 2,
                ..POLICY
            },
        );
        assert_eq!(fewest[1].unwrap().speaker, 2);
    }

    #[test]
    fn a_voice_with_little_speech_in_all_joins_the_others() {
        let prints = vec![print(7, 1, 5_000), print(3, 2, 2_500), print(7, 3, 5_000)];
        let labels: Vec<u32> = relabel(&prints, &[], &[], &POLICY)
            .iter()
            .map(|l| l.unwrap().speaker)
            .collect();
        assert_eq!(labels, vec![1, 1, 1]);
    }

    #[test]
    fn nothing_to_cluster_gives_no_labels() {
        assert_eq!(relabel(&[None, None], &[], &[], &POLICY), vec![None, None]);
        assert!(relabel(&[], &[], &[], &POLICY).is_empty());
    }

    #[test]
    fn the_streams_own_speakers_label_every_segment() {
        // Voices 3 and 7 are the stream's speakers (known in that order); a short segment
        // of voice 7 first, which clustering alone would leave out of the anchors.
        let prints = vec![
            print(7, 1, 1_200),
            print(3, 2, 3_000),
            print(7, 3, 3_000),
            None,
            print(3, 4, 3_000),
        ];
        let known = vec![voice(3, 0), voice(7, 0)];
        let labels: Vec<u32> = relabel(&prints, &[], &known, &POLICY)
            .iter()
            .map(|l| l.unwrap().speaker)
            .collect();
        assert_eq!(
            labels,
            vec![1, 2, 1, 1, 2],
            "renumbered by first appearance"
        );
        // With times: the unembedded word just before voice 3's speech is voice 3's.
        let spans = [
            (0, 1_200),
            (2_000, 5_000),
            (6_000, 9_000),
            (10_500, 10_800),
            (10_900, 14_000),
        ];
        let labels: Vec<u32> = relabel(&prints, &spans, &known, &POLICY)
            .iter()
            .map(|l| l.unwrap().speaker)
            .collect();
        assert_eq!(labels, vec![1, 2, 1, 2, 2]);
    }

    #[test]
    fn a_voice_opened_twice_is_one_speaker_in_the_final_labels() {
        // The stream's tracker ended with voice a twice (a1, a2: 0.98 alike) and voice b;
        // the segments of a go to either a1 or a2.
        let a1 = voice(3, 0);
        let mut a2: Vec<f32> = a1
            .iter()
            .zip(voice(9, 1))
            .map(|(x, y)| x + 0.2 * y)
            .collect();
        normalise(&mut a2);
        let b = voice(7, 0);
        assert!(dot(&a1, &a2) > CONVERGED_ABOVE && dot(&a1, &b) < 0.8);
        let at = |v: &Vec<f32>| {
            Some(Voiceprint {
                vector: v.clone(),
                speech_ms: 5_000,
            })
        };
        let prints = vec![at(&a1), at(&b), at(&a2), at(&b), at(&a1), at(&b)];
        let known = vec![a1.clone(), a2.clone(), b.clone()];
        let labels: Vec<u32> = relabel(&prints, &[], &known, &POLICY)
            .iter()
            .map(|l| l.unwrap().speaker)
            .collect();
        assert_eq!(labels, vec![1, 2, 1, 2, 1, 2]);
    }

    /// A unit vector of `DIM` pseudo-random components (xorshift), nearly orthogonal to
    /// those of other seeds.
    fn random_unit(seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..DIM)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        normalise(&mut v);
        v
    }

    /// Weighted sum of vectors, normalised.
    fn blend(parts: &[(f32, &[f32])]) -> Vec<f32> {
        let mut v = vec![0.0f32; DIM];
        for (k, part) in parts {
            for (s, x) in v.iter_mut().zip(part.iter()) {
                *s += k * x;
            }
        }
        normalise(&mut v);
        v
    }

    #[test]
    fn a_speaker_opened_for_a_mix_of_two_voices_is_dissolved() {
        // Three voices (0.64 alike, as GE2E's voices are 0.4-0.8), their segments 0.9 alike
        // to their voice; the tracker ended with them and a fourth speaker halfway between a
        // and b, which takes the segments that mix them.
        let common = random_unit(1);
        let voices: Vec<Vec<f32>> = (2..5)
            .map(|s| blend(&[(0.8, &common), (0.6, &random_unit(s))]))
            .collect();
        let (a, b) = (&voices[0], &voices[1]);
        let mix = blend(&[(1.0, a), (1.0, b)]);
        let segment = |parts: &[(f32, &[f32])], noise: u64| {
            let v = blend(parts);
            Some(Voiceprint {
                vector: blend(&[(1.0, &v), (0.45, &random_unit(noise))]),
                speech_ms: 3_000,
            })
        };
        let mut prints = Vec::new();
        for n in 0..6 {
            for (k, v) in voices.iter().enumerate() {
                prints.push(segment(&[(1.0, v)], 100 + 10 * n + k as u64));
            }
        }
        for n in 0..2 {
            prints.push(segment(&[(1.0, a), (0.4, b)], 200 + n));
            prints.push(segment(&[(0.4, a), (1.0, b)], 300 + n));
        }
        let mut known = voices.clone();
        known.push(mix.clone());
        let before: Vec<u32> = known_labels(&prints, &known);
        assert!(
            before[18..].contains(&4),
            "the mix takes the mixed segments"
        );
        let labels: Vec<u32> = relabel(&prints, &[], &known, &POLICY)
            .iter()
            .map(|l| l.unwrap().speaker)
            .collect();
        assert_eq!(labels.iter().max(), Some(&3), "{labels:?}");
        assert_eq!(&labels[..6], &[1, 2, 3, 1, 2, 3]);
        assert_eq!(
            &labels[18..],
            &[1, 2, 1, 2],
            "the mixed segments go to their voices"
        );
    }

    /// Each voiceprint's closest of `known` (numbered from 1 in `known`'s order).
    fn known_labels(prints: &[Option<Voiceprint>], known: &[Vec<f32>]) -> Vec<u32> {
        prints
            .iter()
            .map(|p| {
                let v = &p.as_ref().unwrap().vector;
                (0..known.len())
                    .max_by(|&x, &y| dot(&known[x], v).total_cmp(&dot(&known[y], v)))
                    .unwrap() as u32
                    + 1
            })
            .collect()
    }

    #[test]
    fn quantised_voiceprints_survive_storage() {
        let v = voice(4, 4);
        let back = dequantise(&quantise(&v));
        assert!(dot(&v, &back) > 0.999);
    }
}
