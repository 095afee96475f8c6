//! Long audio on every idle worker at once. Audio longer than one Whisper window is cut at
//! pauses into windows of at most 30 s, and the windows are transcribed side by side: the
//! slot the request runs on takes them one after another, and every slot that is idle when
//! the request starts is lent to it and takes them too (faster-whisper's batched pipeline
//! cuts at VAD pauses the same way). Each window is decoded on its own, with the client's
//! prompt but not conditioned on the text of the window before, so that no window waits for
//! another and a loop in one window cannot carry into the next. The text comes back in the
//! order of the audio, and a listener (`DecodeOptions::progress`) hears each window as soon as
//! every window before it is done.

use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex};

use super::{AsrError, DecodeOptions, ModelInfo, Progress, Segment, Transcriber, Transcript};
use crate::vad::SpeechMap;

/// Longest window: Whisper's own.
const MAX_WINDOW_SAMPLES: usize = 30 * 16_000;
/// A window is cut no earlier than this after its start (shorter windows give Whisper less
/// context to go on).
const MIN_WINDOW_SAMPLES: usize = 10 * 16_000;
/// Pauses at least this long (ms) are candidates for a cut.
const MIN_PAUSE_MS: u64 = 80;
/// Pauses longer than this count as equally good cuts; the latest of them is taken.
const GOOD_PAUSE_MS: u64 = 300;

/// Work for a slot's engine.
pub type Job = Box<dyn FnOnce(&dyn Transcriber) + Send>;

/// The pool's idle slots, as a request borrows them.
pub trait Lender: Send + Sync {
    /// Runs `job` on a slot that is idle now, on its own; `false` when none is (the job is
    /// dropped unrun).
    fn lend(&self, job: Job) -> bool;
    /// Whether a request is waiting for a slot: a lent slot goes back to it after the
    /// window it is on.
    fn wanted(&self) -> bool;
}

/// How one window is transcribed with an engine (the stream's rules for a window of
/// speech: `stream::window::transcribe_speech`).
pub type WindowFn = fn(&dyn Transcriber, &[f32], &DecodeOptions) -> Result<Transcript, AsrError>;

/// A slot's engine that spreads long audio over idle slots (see the module).
pub struct Spread<'a> {
    engine: &'a dyn Transcriber,
    lender: Arc<dyn Lender>,
    window: WindowFn,
}

impl<'a> Spread<'a> {
    pub fn new(engine: &'a dyn Transcriber, lender: Arc<dyn Lender>, window: WindowFn) -> Self {
        Spread {
            engine,
            lender,
            window,
        }
    }
}

impl Transcriber for Spread<'_> {
    fn transcribe(&self, samples: &[f32], options: &DecodeOptions) -> Result<Transcript, AsrError> {
        if samples.len() <= MAX_WINDOW_SAMPLES {
            return self.engine.transcribe(samples, options);
        }
        let pauses = SpeechMap::of(samples).pauses_ms(MIN_PAUSE_MS);
        let windows = windows(samples, &pauses);
        let work = Arc::new(Work::new(samples, windows, self.window, options));
        let mut lent = 0;
        for _ in 1..work.windows.len() {
            let (helper, lender) = (Arc::clone(&work), Arc::clone(&self.lender));
            let job = move |engine: &dyn Transcriber| {
                helper.take_windows(engine, || lender.wanted());
            };
            if !self.lender.lend(Box::new(job)) {
                break;
            }
            lent += 1;
        }
        tracing::debug!(
            event = "spread",
            seconds = samples.len() as f64 / 16_000.0,
            windows = ?work.windows.iter().map(|w| w.start as f64 / 16_000.0).collect::<Vec<_>>(),
            lent,
        );
        work.take_windows(self.engine, || false);
        work.finish(options)
    }

    fn info(&self) -> &ModelInfo {
        self.engine.info()
    }

    fn tokenize(&self, text: &str) -> Vec<i32> {
        self.engine.tokenize(text)
    }
}

/// Cuts `len` samples into windows of at most 30 s, each cut in a pause (`pauses`, in ms):
/// among the pauses 10-30 s after the window's start, the longest, and of those longer than
/// 0.3 s the latest (chosen on the tune half: fewer, longer windows). Where there is none
/// (speech that runs on), in the quietest 20 ms of the window's last 10 s.
pub fn windows(samples: &[f32], pauses: &[(u64, u64)]) -> Vec<Range<usize>> {
    let len = samples.len();
    let mut out = Vec::new();
    let mut start = 0;
    while len - start > MAX_WINDOW_SAMPLES {
        let range = start + MIN_WINDOW_SAMPLES..start + MAX_WINDOW_SAMPLES;
        let cut = pauses
            .iter()
            .map(|&(from, to)| {
                (
                    ((from + to) / 2) as usize * 16,
                    (to - from).min(GOOD_PAUSE_MS),
                )
            })
            .filter(|(middle, _)| range.contains(middle))
            .max_by_key(|&(middle, length)| (length, middle))
            .map_or_else(
                || quietest_frame(samples, start + 2 * MIN_WINDOW_SAMPLES..range.end),
                |(middle, _)| middle,
            );
        out.push(start..cut);
        start = cut;
    }
    out.push(start..len);
    out
}

/// The start of the quietest 20 ms frame in `range`.
fn quietest_frame(samples: &[f32], range: Range<usize>) -> usize {
    const FRAME: usize = 320;
    range
        .clone()
        .step_by(FRAME)
        .filter(|at| at + FRAME <= range.end)
        .min_by(|&a, &b| {
            let energy = |at: usize| samples[at..at + FRAME].iter().map(|s| s * s).sum::<f32>();
            energy(a).total_cmp(&energy(b))
        })
        .unwrap_or(range.end)
}

/// A segment of several words in (almost) no time: DTW found no audio for them. (A decoder
/// whose window ends inside speech repeats earlier sentences there, all at the last instant.)
fn crammed(segment: &Segment) -> bool {
    let span = match (segment.words.first(), segment.words.last()) {
        (Some(first), Some(last)) => last.end - first.start,
        _ => return false,
    };
    segment.words.len() > 1 && span < CRAMMED_SECONDS
}

/// Words of a segment fitted into less than this are crammed.
const CRAMMED_SECONDS: f64 = 0.05;

/// The windows of one request and what became of them.
struct Work {
    samples: Vec<f32>,
    windows: Vec<Range<usize>>,
    window: WindowFn,
    /// The request's options, without its listener (told here, in order).
    options: DecodeOptions,
    progress: Option<Progress>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The next window nobody has taken.
    next: usize,
    /// Windows taken and not finished.
    running: usize,
    /// Each window's transcript (times from the start of the audio), once done.
    done: Vec<Option<Result<Transcript, AsrError>>>,
    /// Windows the listener has heard.
    told: usize,
    /// A window failed: nobody takes another.
    failed: bool,
}

impl Work {
    fn new(
        samples: &[f32],
        windows: Vec<Range<usize>>,
        window: WindowFn,
        options: &DecodeOptions,
    ) -> Self {
        let mut options = options.clone();
        let progress = options.progress.take();
        let state = State {
            done: windows.iter().map(|_| None).collect(),
            ..State::default()
        };
        Work {
            samples: samples.to_vec(),
            windows,
            window,
            options,
            progress,
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes windows one after another and transcribes them with `engine`, until none is
    /// left or `give_back` says the slot is wanted elsewhere.
    fn take_windows(&self, engine: &dyn Transcriber, give_back: impl Fn() -> bool) {
        loop {
            let index = {
                let mut state = self.lock();
                if state.failed || state.next == self.windows.len() || give_back() {
                    return;
                }
                state.next += 1;
                state.running += 1;
                state.next - 1
            };
            let result = self.transcribe(engine, index);
            let mut state = self.lock();
            state.running -= 1;
            state.failed |= result.is_err();
            state.done[index] = Some(result);
            self.tell_in_order(&mut state);
            self.changed.notify_all();
        }
    }

    fn transcribe(&self, engine: &dyn Transcriber, index: usize) -> Result<Transcript, AsrError> {
        let window = self.windows[index].clone();
        let offset = window.start as f64 / 16_000.0;
        // DTW stretches a window's last word over the padding after its audio (up to 30 s):
        // no time runs into the next window.
        let end = window.len() as f64 / 16_000.0;
        let time = |t: f64| t.min(end) + offset;
        let samples = &self.samples[window];
        // A panic in the engine must not leave the request waiting for this window.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            (self.window)(engine, samples, &self.options)
        }))
        .unwrap_or_else(|_| Err(AsrError::Inference("the engine panicked".into())));
        result.map(|mut transcript| {
            for segment in &mut transcript.segments {
                segment.start = time(segment.start);
                segment.end = time(segment.end);
                for word in &mut segment.words {
                    word.start = time(word.start);
                    word.end = time(word.end);
                }
            }
            transcript.unreliable_from = transcript.unreliable_from.map(time);
            transcript.segments.retain(|s| !crammed(s));
            transcript
        })
    }

    /// Tells the listener every finished window that follows the ones it has heard.
    fn tell_in_order(&self, state: &mut State) {
        while let Some(Some(Ok(transcript))) = state.done.get(state.told) {
            if let Some(progress) = &self.progress {
                progress.tell(&transcript.segments);
            }
            state.told += 1;
        }
    }

    /// Waits for the windows being transcribed elsewhere and joins them in order; the first
    /// failed window's error when one failed.
    fn finish(&self, options: &DecodeOptions) -> Result<Transcript, AsrError> {
        let mut state = self.lock();
        while state.running > 0 {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        let mut joined = Transcript {
            segments: Vec::new(),
            language: None,
            unreliable_from: None,
        };
        for done in state.done.iter_mut() {
            let transcript = match done.take() {
                Some(result) => result?,
                None => continue,
            };
            joined.segments.extend(transcript.segments);
            joined.language = joined.language.or(transcript.language);
            joined.unreliable_from = joined.unreliable_from.or(transcript.unreliable_from);
        }
        joined.language = joined.language.or_else(|| options.language.clone());
        Ok(joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asr::{Segment, Word};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SECOND: usize = 16_000;

    #[test]
    fn windows_are_cut_in_the_longest_pause_and_never_exceed_30_s() {
        // 75 s with pauses (ms): a short one at 12 s, a long one at 20 s, another at 27 s.
        let pauses = [
            (12_000, 12_100),
            (20_000, 21_000),
            (27_000, 28_000),
            (50_000, 50_300),
        ];
        let w = windows(&vec![0.1; 75 * SECOND], &pauses);
        // Both long pauses are "good": the later one is cut, in its middle.
        assert_eq!(w[0], 0..27_500 * 16);
        // Next: pauses 37.5-57.5 s → 50.15 s.
        assert_eq!(w[1], 27_500 * 16..50_150 * 16);
        assert_eq!(w[2], 50_150 * 16..75 * SECOND);
        // No pause at all: cut in the quietest 20 ms of the last 10 s; short audio is one
        // window.
        let mut loud = vec![0.1; 65 * SECOND];
        loud[26 * SECOND..26 * SECOND + 320].fill(0.01);
        loud[51 * SECOND..51 * SECOND + 320].fill(0.01);
        assert_eq!(
            windows(&loud, &[]),
            vec![
                0..26 * SECOND,
                26 * SECOND..51 * SECOND,
                51 * SECOND..65 * SECOND
            ]
        );
        assert_eq!(windows(&loud[..30 * SECOND], &pauses), vec![0..30 * SECOND]);
    }

    #[test]
    fn several_words_in_no_time_are_crammed_one_word_is_not() {
        let word = |start: f64, end: f64| Word {
            word: "w".into(),
            start,
            end,
            probability: 0.9,
        };
        let segment = |words: Vec<Word>| Segment {
            text: String::new(),
            start: 0.0,
            end: 30.0,
            confidence: 0.9,
            no_speech_probability: 0.0,
            avg_logprob: -0.1,
            words,
        };
        assert!(crammed(&segment(vec![
            word(29.98, 29.98),
            word(29.98, 30.0)
        ])));
        assert!(!crammed(&segment(vec![word(29.98, 30.0)])));
        assert!(!crammed(&segment(vec![word(29.0, 29.4), word(29.4, 30.0)])));
    }

    /// An engine that names the window it heard by its length in seconds, counts how many
    /// calls run at once, and fails the call numbered `fail_on_call`.
    struct Counting {
        running: AtomicUsize,
        most: AtomicUsize,
        calls: AtomicUsize,
        fail_on_call: Option<usize>,
        info: ModelInfo,
    }

    impl Transcriber for Counting {
        fn transcribe(&self, samples: &[f32], _: &DecodeOptions) -> Result<Transcript, AsrError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            self.running.fetch_sub(1, Ordering::SeqCst);
            let seconds = samples.len() / SECOND;
            let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail_on_call == Some(call) {
                return Err(AsrError::Inference("failed".into()));
            }
            // The word is stretched over the padding after the audio, as DTW does.
            let word = Word {
                word: format!("w{seconds}"),
                start: 1.0,
                end: 45.0,
                probability: 0.9,
            };
            Ok(Transcript {
                segments: vec![Segment {
                    text: word.word.clone(),
                    start: 1.0,
                    end: 45.0,
                    confidence: 0.9,
                    no_speech_probability: 0.0,
                    avg_logprob: -0.1,
                    words: vec![word],
                }],
                language: Some("en".into()),
                unreliable_from: None,
            })
        }
        fn info(&self) -> &ModelInfo {
            &self.info
        }
    }

    fn counting(fail_on_call: Option<usize>) -> Arc<Counting> {
        Arc::new(Counting {
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            fail_on_call,
            info: ModelInfo::scripted(),
        })
    }

    fn plain(
        engine: &dyn Transcriber,
        samples: &[f32],
        options: &DecodeOptions,
    ) -> Result<Transcript, AsrError> {
        engine.transcribe(samples, options)
    }

    /// Lends `slots` helper threads running `engine`.
    struct Threads {
        engine: Arc<Counting>,
        slots: usize,
        lent: AtomicUsize,
    }

    impl Lender for Threads {
        fn lend(&self, job: Job) -> bool {
            if self.lent.fetch_add(1, Ordering::SeqCst) >= self.slots {
                return false;
            }
            let engine = Arc::clone(&self.engine);
            std::thread::spawn(move || job(engine.as_ref()));
            true
        }
        fn wanted(&self) -> bool {
            false
        }
    }

    fn lend(engine: Arc<Counting>, slots: usize) -> Arc<dyn Lender> {
        Arc::new(Threads {
            engine,
            slots,
            lent: AtomicUsize::new(0),
        })
    }

    /// Real speech with pauses, `seconds` long, and the windows it is cut into.
    fn speech(seconds: usize) -> (Vec<f32>, Vec<Range<usize>>) {
        let speech = crate::stream::invariants::speech();
        let audio: Vec<f32> = speech
            .iter()
            .copied()
            .cycle()
            .take(seconds * SECOND)
            .collect();
        let pauses = SpeechMap::of(&audio).pauses_ms(MIN_PAUSE_MS);
        let windows = windows(&audio, &pauses);
        (audio, windows)
    }

    #[test]
    fn windows_run_side_by_side_and_come_back_in_order_with_their_times() {
        let engine = counting(None);
        let told = Arc::new(Mutex::new(Vec::new()));
        let heard = Arc::clone(&told);
        let options = DecodeOptions {
            progress: Some(Progress::new(move |s: &[Segment]| {
                heard.lock().unwrap().push(s[0].text.clone())
            })),
            ..DecodeOptions::default()
        };
        let spread = Spread::new(engine.as_ref(), lend(Arc::clone(&engine), 2), plain);
        let (audio, windows) = speech(95);
        assert!(windows.len() >= 4, "{windows:?}");
        let transcript = spread.transcribe(&audio, &options).unwrap();
        assert!(engine.most.load(Ordering::SeqCst) >= 2, "ran one at a time");
        let texts: Vec<&str> = transcript
            .segments
            .iter()
            .map(|s| s.text.as_str())
            .collect();
        let expected: Vec<String> = windows
            .iter()
            .map(|w| format!("w{}", w.len() / SECOND))
            .collect();
        assert_eq!(texts, expected);
        // Each window's times are from the start of the audio, and end with its audio.
        for (segment, window) in transcript.segments.iter().zip(&windows) {
            let start = window.start as f64 / 16_000.0 + 1.0;
            let end = window.end as f64 / 16_000.0;
            assert!((segment.start - start).abs() < 1e-9);
            assert!((segment.words[0].start - start).abs() < 1e-9);
            assert!((segment.end - end).abs() < 1e-9);
            assert!((segment.words[0].end - end).abs() < 1e-9);
        }
        assert_eq!(
            *told.lock().unwrap(),
            texts,
            "the listener hears the windows in order"
        );
        assert_eq!(transcript.language.as_deref(), Some("en"));
    }

    #[test]
    fn with_no_slot_to_lend_the_windows_run_one_after_another() {
        let engine = counting(None);
        let spread = Spread::new(engine.as_ref(), lend(Arc::clone(&engine), 0), plain);
        let (audio, windows) = speech(95);
        let transcript = spread
            .transcribe(&audio, &DecodeOptions::default())
            .unwrap();
        assert_eq!(engine.most.load(Ordering::SeqCst), 1);
        assert_eq!(transcript.segments.len(), windows.len());
    }

    #[test]
    fn a_failed_window_fails_the_request_and_waits_for_no_one() {
        // The engine fails its second call.
        let engine = counting(Some(2));
        let spread = Spread::new(engine.as_ref(), lend(Arc::clone(&engine), 2), plain);
        let err = spread
            .transcribe(&speech(95).0, &DecodeOptions::default())
            .unwrap_err();
        assert!(matches!(err, AsrError::Inference(_)));
    }
}
