//! The policy's promise, tested through `process_chunk` with a scripted engine: every word
//! that appeared in a hypothesis becomes final exactly once (or is still pending), whatever
//! the passes do — return nothing, loop, stop early, be cut inside a word, or leave the
//! tail at its cap. The audio is real speech (pocketsphinx's LibriVox reader), so the VAD
//! sees what it sees in service; the script's words are laid on its speech, ~300 ms each.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use crate::asr::{ModelInfo, Segment, Transcript, Word};

/// What a scripted pass does wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// No words at all.
    Nothing,
    /// The first half of its words, then a phrase looped into one instant.
    Loop,
    /// The first half of its words, then Whisper's loop was cut out (`unreliable_from`).
    CutLoop,
    /// A decoder that stopped early: the words of the first third of the window.
    StopsEarly,
    /// DTW lost its way before a pause: the last word of a phrase is put at the start of
    /// the next phrase, and the word before it stretches over it.
    Late,
    /// DTW puts every word's start 250 ms late (inside the word), the word before
    /// stretched to it, and every word ends a sentence (a cut point): a cut just before a
    /// start lands inside the word.
    LateStarts,
    /// In a window that holds a phrase's end, DTW crams the phrase's last three words into
    /// one instant, the start of the last of them, and stretches the word before over them
    /// (whisper.cpp's habit at a phrase's end).
    CrammedEnd,
}

/// An engine that "hears" the script's words lying inside the window it is given.
struct ScriptedEngine {
    /// The stream's words: (name, start ms, end ms).
    words: Vec<(String, u64, u64)>,
    /// Stream time of the window the next call gets (the test sets it from the state).
    window_start_ms: AtomicU64,
    /// Faults by call number.
    faults: BTreeMap<usize, Fault>,
    calls: AtomicUsize,
    /// Every script word some pass returned.
    heard: Mutex<Vec<String>>,
    info: ModelInfo,
}

impl Transcriber for ScriptedEngine {
    fn transcribe(&self, samples: &[f32], _: &DecodeOptions) -> Result<Transcript, AsrError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let start = self.window_start_ms.load(Ordering::SeqCst);
        let end = start + to_ms(samples.len() as u64);
        let secs = |ms: u64| (ms - start) as f64 / 1000.0;
        // A word cut by the window's start is not heard; one cut by its end is heard short.
        let mut words: Vec<Word> = self
            .words
            .iter()
            .filter(|(_, s, _)| *s >= start && *s + 50 < end)
            .map(|(name, s, e)| Word {
                word: name.clone(),
                start: secs(*s),
                end: secs((*e).min(end)),
                probability: 0.9,
            })
            .collect();
        let mut unreliable_from = None;
        match self.faults.get(&call) {
            Some(Fault::Nothing) => words.clear(),
            Some(Fault::Loop) => {
                words.truncate(words.len() / 2);
                let at = words.last().map_or(0.0, |w| w.end);
                for i in 0..4 {
                    words.push(Word {
                        word: format!("loop{i}"),
                        start: at,
                        end: at,
                        probability: 0.9,
                    });
                }
            }
            Some(Fault::CutLoop) => {
                words.truncate(words.len() / 2);
                unreliable_from = Some(words.last().map_or(0.0, |w| w.end));
            }
            Some(Fault::StopsEarly) => {
                let limit = samples.len() as f64 / 16_000.0 / 3.0;
                words.retain(|w| w.end <= limit);
            }
            Some(Fault::Late) => {
                let phrase_end = (1..words.len().saturating_sub(1))
                    .find(|&m| words[m + 1].start - words[m].end > 0.15);
                if let Some(m) = phrase_end {
                    let at = words[m + 1].start;
                    words[m - 1].end = at;
                    words[m].start = at;
                }
            }
            Some(Fault::LateStarts) => {
                for m in 0..words.len() {
                    words[m].word.push('.');
                    if m > 0 {
                        words[m].start = (words[m].start + 0.25).min(words[m].end);
                        words[m - 1].end = words[m].start;
                    }
                }
            }
            Some(Fault::CrammedEnd) => {
                // The window holds a phrase's end: the script's next word starts over 1.3 s
                // after its last heard word does.
                let phrase_end = words.last().is_some_and(|last| {
                    let i = self.words.iter().position(|(name, ..)| *name == last.word);
                    i.is_some_and(|i| {
                        self.words
                            .get(i + 1)
                            .is_none_or(|(_, next, _)| *next > self.words[i].1 + 1_300)
                    })
                });
                if let Some(first) = words.len().checked_sub(3).filter(|_| phrase_end) {
                    let at = words[words.len() - 1].start;
                    for word in &mut words[first..] {
                        word.start = at;
                    }
                    if first > 0 {
                        words[first - 1].end = at;
                    }
                }
            }
            None => {}
        }
        let mut heard = self.heard.lock().unwrap();
        heard.extend(
            words
                .iter()
                .filter(|w| w.word.starts_with('w'))
                .map(|w| w.word.clone()),
        );
        let segments = if words.is_empty() {
            Vec::new()
        } else {
            vec![Segment {
                text: words
                    .iter()
                    .map(|w| w.word.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                start: words[0].start,
                end: words.last().map_or(0.0, |w| w.end),
                confidence: 0.9,
                no_speech_probability: 0.0,
                avg_logprob: -0.2,
                words,
            }]
        };
        Ok(Transcript {
            segments,
            language: Some("en".into()),
            unreliable_from,
        })
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }
}

/// LibriVox speech with pauses of several lengths between the utterances.
pub(crate) fn speech() -> Vec<f32> {
    speech_with_pauses(&[4_800, 19_200, 1_600])
}

/// LibriVox speech, the utterances separated by pauses of these lengths (samples), in turn.
fn speech_with_pauses(pauses: &[usize]) -> Vec<f32> {
    let dir = std::path::Path::new("/usr/share/pocketsphinx/test/data/librivox");
    let mut audio = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("pocketsphinx-testdata (scripts/install-deps.sh --test)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    paths.sort();
    for (i, path) in paths.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap();
        let limits = crate::audio::DecodeLimits { max_seconds: 600.0 };
        let decoded = crate::audio::decode_chunk(&bytes, Some("audio/wav"), limits).unwrap();
        audio.extend(decoded.samples);
        audio.extend(std::iter::repeat_n(0.0, pauses[i % pauses.len()]));
    }
    audio
}

/// Pseudo-words of ~300 ms over the VAD's speech runs.
fn script(audio: &[f32]) -> Vec<(String, u64, u64)> {
    let map = SpeechMap::of(audio);
    let total = to_ms(audio.len() as u64);
    let speech_end = total - (map.trailing_silence_seconds() * 1000.0) as u64;
    let mut runs = Vec::new();
    let mut from = map.speech_onset_after(0).unwrap();
    for (start, end) in map.pauses_ms(MIN_CUT_PAUSE_MS) {
        runs.push((from, start));
        from = end;
    }
    runs.push((from, speech_end));
    let mut words = Vec::new();
    for (start, end) in runs {
        let n = ((end - start) as f64 / 300.0).round().max(1.0) as u64;
        let step = (end - start) / n;
        for k in 0..n {
            let s = start + k * step;
            words.push((format!("w{}", words.len()), s, s + step.saturating_sub(20)));
        }
    }
    words
}

/// Streams the audio in 2 s chunks (the last one marked last when `last`) through the
/// policy; the final words in order and the state at the end.
fn stream(engine: &ScriptedEngine, audio: &[f32], last: bool) -> (Vec<String>, StreamState) {
    stream_keeping(engine, audio, last, TailAudio::default())
}

/// [`stream`], the tail kept as `kept` is (empty): with [`TailAudio::Client`] the client
/// sends back the last `tail_samples` samples it sent, and the state carries no audio.
fn stream_keeping(
    engine: &ScriptedEngine,
    audio: &[f32],
    last: bool,
    kept: TailAudio,
) -> (Vec<String>, StreamState) {
    let policy = StreamPolicy::default();
    let client_keeps = kept.with_client();
    let mut state = StreamState {
        tail: kept,
        ..StreamState::default()
    };
    let mut sent = 0;
    let mut finals = Vec::new();
    let chunks: Vec<&[f32]> = audio.chunks(32_000).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        engine
            .window_start_ms
            .store(to_ms(state.tail_start), Ordering::SeqCst);
        let options = ChunkOptions {
            last: last && i + 1 == chunks.len(),
            ..ChunkOptions::default()
        };
        let resent = &audio[sent - state.tail_samples() as usize..sent];
        let tail = state.tail_audio(client_keeps.then_some(resent)).unwrap();
        sent += chunk.len();
        let (next, outcome) =
            process_chunk(engine, None, state, &tail, chunk, &options, &policy).unwrap();
        assert_eq!(
            next.tail.stored_bytes() == 0,
            client_keeps || next.tail_samples() == 0
        );
        finals.extend(
            outcome
                .segments
                .iter()
                .flat_map(|s| s.words.iter().map(|w| w.text.clone())),
        );
        state = next;
    }
    (finals, state)
}

fn engine(audio: &[f32], faults: &[(usize, Fault)]) -> ScriptedEngine {
    ScriptedEngine {
        words: script(audio),
        window_start_ms: AtomicU64::new(0),
        faults: faults.iter().copied().collect(),
        calls: AtomicUsize::new(0),
        heard: Mutex::new(Vec::new()),
        info: ModelInfo::scripted(),
    }
}

/// Every heard word final exactly once and in order (or still pending when `pending` is
/// given), and nothing final that the script does not hold.
fn assert_every_heard_word_once(engine: &ScriptedEngine, finals: &[String], pending: &[TimedWord]) {
    let mut seen = std::collections::BTreeSet::new();
    for w in finals {
        assert!(
            w.starts_with('w'),
            "a hallucination became final: {w} in {finals:?}"
        );
        assert!(seen.insert(w.clone()), "{w} final twice: {finals:?}");
    }
    let index = |w: &str| w[1..].trim_end_matches('.').parse::<usize>().unwrap();
    assert!(
        finals.windows(2).all(|p| index(&p[0]) < index(&p[1])),
        "final words out of order: {finals:?}"
    );
    let pending: Vec<&str> = pending.iter().map(|w| w.text.as_str()).collect();
    for w in engine.heard.lock().unwrap().iter() {
        assert!(
            seen.contains(w) || pending.contains(&w.as_str()),
            "{w} appeared in a hypothesis and was lost: finals {finals:?}, pending {pending:?}"
        );
    }
}

#[test]
fn a_clean_stream_finalises_every_word_once() {
    let audio = speech();
    let engine = engine(&audio, &[]);
    let (finals, state) = stream(&engine, &audio, true);
    assert_every_heard_word_once(&engine, &finals, &[]);
    assert_eq!(finals.len(), engine.words.len(), "{finals:?}");
    assert!(state.pending.is_empty());
}

#[test]
fn bad_passes_lose_no_word() {
    let audio = speech();
    let cases: Vec<(&str, Vec<(usize, Fault)>)> = vec![
        ("a pass that returns nothing", vec![(3, Fault::Nothing)]),
        (
            "passes that return nothing, twice",
            vec![(4, Fault::Nothing), (5, Fault::Nothing)],
        ),
        ("a looping pass", vec![(2, Fault::Loop), (6, Fault::Loop)]),
        (
            "a loop cut out",
            vec![(3, Fault::CutLoop), (7, Fault::CutLoop)],
        ),
        (
            "a decoder that stops early",
            vec![(2, Fault::StopsEarly), (5, Fault::StopsEarly)],
        ),
        (
            "passes that put a phrase's last word after the pause",
            (1..12).map(|call| (call, Fault::Late)).collect(),
        ),
        (
            "passes that put every word's start late",
            (0..200).map(|call| (call, Fault::LateStarts)).collect(),
        ),
    ];
    for (what, faults) in cases {
        let engine = engine(&audio, &faults);
        let (finals, _) = stream(&engine, &audio, true);
        assert_every_heard_word_once(&engine, &finals, &[]);
        assert_eq!(
            finals.len(),
            engine.words.len(),
            "{what}: every word is heard again later and final: {finals:?}"
        );
    }
}

#[test]
fn words_crammed_before_an_endpoint_are_heard_again() {
    // Every utterance ends in a 1.5 s pause, so its last pass is at an endpoint, and DTW
    // crams the utterance's last words there: they are cut off the pass, and their audio
    // must stay in the tail although nothing else is pending.
    let audio = speech_with_pauses(&[24_000]);
    let faults: Vec<(usize, Fault)> = (0..200).map(|c| (c, Fault::CrammedEnd)).collect();
    let engine = engine(&audio, &faults);
    let (finals, _) = stream(&engine, &audio, true);
    assert_every_heard_word_once(&engine, &finals, &[]);
    assert_eq!(finals.len(), engine.words.len(), "{finals:?}");
}

#[test]
fn at_the_tail_cap_heard_words_are_committed_not_dropped() {
    // Six failed passes in a row: the tail outgrows its 10 s cap while passes say nothing.
    let audio = speech();
    let faults: Vec<(usize, Fault)> = (2..8).map(|c| (c, Fault::Nothing)).collect();
    let engine = engine(&audio, &faults);
    let (finals, _) = stream(&engine, &audio, true);
    assert_every_heard_word_once(&engine, &finals, &[]);
}

#[test]
fn without_a_last_chunk_every_heard_word_is_final_or_pending() {
    let audio = speech();
    let engine = engine(&audio, &[(3, Fault::Loop), (5, Fault::Nothing)]);
    let (finals, state) = stream(&engine, &audio, false);
    assert_every_heard_word_once(&engine, &finals, &state.pending);
}

#[test]
fn a_tail_the_client_keeps_continues_the_stream_and_is_checked() {
    let audio = speech();
    let faulty = engine(&audio, &[(3, Fault::Nothing)]);
    let (finals, _) = stream_keeping(&faulty, &audio, true, TailAudio::Client { digest: 0 });
    assert_every_heard_word_once(&faulty, &finals, &[]);
    assert_eq!(finals.len(), faulty.words.len(), "{finals:?}");

    // Mid-stream: what comes back must be exactly the last samples sent.
    let clean = engine(&audio, &[]);
    let (_, state) = stream_keeping(
        &clean,
        &audio[..5 * 32_000],
        false,
        TailAudio::Client { digest: 0 },
    );
    let n = state.tail_samples() as usize;
    assert!(n > 0, "a stream that ends mid-phrase keeps a tail");
    let sent = &audio[..5 * 32_000];
    let tail = &sent[sent.len() - n..];
    assert_eq!(state.tail_audio(Some(tail)).unwrap(), tail);
    assert_eq!(state.tail_audio(None), Err(TailError::Missing(n as u64)));
    assert_eq!(
        state.tail_audio(Some(&tail[1..])),
        Err(TailError::Length {
            got: n as u64 - 1,
            want: n as u64
        })
    );
    let mut altered = tail.to_vec();
    altered[n / 2] += 0.01;
    assert_eq!(state.tail_audio(Some(&altered)), Err(TailError::Mismatch));
}

#[test]
fn a_session_keeps_the_same_tail_as_a_client_that_keeps_it() {
    // 16-bit audio, as clients send it: a Redis session's PCM tail loses nothing of it,
    // so session and keep_audio streams hear the same windows (a token's μ-law does not).
    let audio: Vec<f32> = speech()
        .iter()
        .map(|s| f32::from(tail::pcm16(*s)) / 32768.0)
        .collect();
    let sent = &audio[..5 * 32_000];
    let (_, client) = stream_keeping(
        &engine(&audio, &[]),
        sent,
        false,
        TailAudio::Client { digest: 0 },
    );
    let n = client.tail_samples() as usize;
    let resent = &sent[sent.len() - n..];
    let (_, session) = stream_keeping(
        &engine(&audio, &[]),
        sent,
        false,
        TailAudio::Pcm16(Vec::new()),
    );
    assert!(n > 0);
    assert_eq!(session.tail_audio(None).unwrap(), resent);
    assert_eq!(client.tail_audio(Some(resent)).unwrap(), resent);
    let (_, token) = stream_keeping(&engine(&audio, &[]), sent, false, TailAudio::default());
    assert_ne!(token.tail_audio(None).unwrap(), resent, "μ-law is lossy");
}
