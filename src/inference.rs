//! The inference pool: the model loads in the background while the server already
//! answers; a fixed set of worker slots runs engine calls off the async runtime; admission
//! is bounded (slots + queue), so overload is refused at once with a clear error instead of
//! queueing into timeouts or growing memory.
//!
//! Each slot owns an engine from [`Engines`]: in the service a worker process (`worker`),
//! whose death fails the call it was on and is answered by a new worker at once. Crashes
//! that come again and again are backed off, and the pool then says it is not ready
//! rather than flapping.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

use crate::asr::{AsrError, Job, Lender, ModelInfo, Transcriber};

/// Crashes within this window count as "again and again".
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// Crashes in the window that are restarted at once; each one more doubles the wait.
const CRASHES_FORGIVEN: usize = 3;
/// Longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where the pool's engines come from: a model loaded once, an engine opened per slot.
pub trait Engines: Send + Sync + 'static {
    /// Loads the model (once, on a thread of its own).
    fn load(&self) -> Result<ModelInfo, AsrError>;
    /// An engine for one slot, after `load` succeeded; again after the slot's engine died.
    fn open(&self) -> Result<Box<dyn SlotEngine>, AsrError>;
}

/// A slot's engine.
pub trait SlotEngine: Transcriber {
    /// How the engine ended, once it has (its calls fail; the slot opens another).
    fn death(&self) -> Option<String> {
        None
    }
    /// The worker process, where the engine runs in one.
    fn pid(&self) -> Option<u32> {
        None
    }
}

/// Engines that run in this process: one engine shared by every slot (tests, and
/// `PREPIS_ISOLATION=threads`).
pub struct InProcess<L> {
    load: Mutex<Option<L>>,
    engine: std::sync::OnceLock<Arc<dyn Transcriber>>,
}

impl<L> InProcess<L>
where
    L: FnOnce() -> Result<Arc<dyn Transcriber>, AsrError> + Send + 'static,
{
    pub fn new(load: L) -> Self {
        InProcess {
            load: Mutex::new(Some(load)),
            engine: std::sync::OnceLock::new(),
        }
    }
}

impl<L> Engines for InProcess<L>
where
    L: FnOnce() -> Result<Arc<dyn Transcriber>, AsrError> + Send + 'static,
{
    fn load(&self) -> Result<ModelInfo, AsrError> {
        let load = self.load.lock().unwrap_or_else(|p| p.into_inner()).take();
        let engine = load.ok_or_else(|| AsrError::Load("loaded twice".into()))?()?;
        let info = engine.info().clone();
        let _ = self.engine.set(engine);
        Ok(info)
    }

    fn open(&self) -> Result<Box<dyn SlotEngine>, AsrError> {
        let engine = self
            .engine
            .get()
            .ok_or_else(|| AsrError::Load("not loaded".into()))?;
        Ok(Box::new(Shared(Arc::clone(engine))))
    }
}

/// The shared in-process engine, as a slot sees it.
struct Shared(Arc<dyn Transcriber>);

impl Transcriber for Shared {
    fn transcribe(
        &self,
        samples: &[f32],
        options: &crate::asr::DecodeOptions,
    ) -> Result<crate::asr::Transcript, AsrError> {
        self.0.transcribe(samples, options)
    }
    fn info(&self) -> &ModelInfo {
        self.0.info()
    }
    fn tokenize(&self, text: &str) -> Vec<i32> {
        self.0.tokenize(text)
    }
}

impl SlotEngine for Shared {}

/// Where the model stands.
#[derive(Clone)]
enum ModelState {
    Loading,
    Ready(ModelInfo),
    Failed(String),
}

/// Why a job was not run.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("the model is still loading")]
    NotReady,
    #[error("the model could not be loaded: {0}")]
    Unavailable(String),
    #[error("all inference workers are busy and the queue is full")]
    Overloaded,
    #[error("the inference worker failed while running the request")]
    WorkerFailed,
    #[error("the engine workers are restarting after repeated crashes")]
    Restarting,
}

/// The model status shown by `/api/status`.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub ready: bool,
    pub error: Option<String>,
    pub info: Option<ModelInfo>,
}

/// One slot, as `/api/status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SlotStatus {
    /// The worker process (none while it starts, or for in-process engines).
    pub pid: Option<u32>,
    /// An engine is open and takes jobs.
    pub up: bool,
    /// A job is running on it.
    pub busy: bool,
    /// Seconds until a backed-off restart (repeated crashes).
    pub backoff_seconds: Option<f64>,
    #[serde(skip)]
    backoff_until: Option<Instant>,
}

/// Crash and restart counters.
#[derive(Debug, Clone, Default)]
pub struct Supervision {
    pub crashes: u64,
    pub restarts: u64,
    pub slots: Vec<SlotStatus>,
}

/// What the slots and the handler share.
struct Pool {
    model: RwLock<ModelState>,
    slots: Mutex<Vec<SlotStatus>>,
    crashes: AtomicU64,
    restarts: AtomicU64,
    recent_crashes: Mutex<VecDeque<Instant>>,
    /// Jobs sent to the slots and not yet taken by one.
    queued: AtomicUsize,
}

impl Pool {
    fn slot(&self, index: usize, update: impl FnOnce(&mut SlotStatus)) {
        update(&mut self.slots.lock().unwrap_or_else(|p| p.into_inner())[index]);
    }

    /// Counts a crash; how long to wait before the restart.
    fn crashed(&self) -> Duration {
        self.crashes.fetch_add(1, Ordering::SeqCst);
        self.failed()
    }

    /// Counts a failure (a crash, an engine that would not start); how long to wait before
    /// the next start: nothing for the first few in a minute, then doubling.
    fn failed(&self) -> Duration {
        let now = Instant::now();
        let mut recent = self
            .recent_crashes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        recent.push_back(now);
        while recent.front().is_some_and(|t| now - *t > CRASH_WINDOW) {
            recent.pop_front();
        }
        match recent.len().checked_sub(CRASHES_FORGIVEN + 1) {
            None => Duration::ZERO,
            Some(n) => Duration::from_secs(1u64 << n.min(5)).min(MAX_BACKOFF),
        }
    }
}

/// Bounded pool of worker slots.
pub struct Inference {
    pool: Arc<Pool>,
    /// Permits for admitted jobs (running or queued); none left means overload.
    admission: Arc<Semaphore>,
    /// Admitted jobs on their way to a slot.
    jobs: SyncSender<Job>,
    /// Number of slots.
    workers: usize,
    /// Admission capacity (slots + queue).
    capacity: usize,
}

impl Inference {
    /// Loads the model with `engines` on a thread of its own, then opens `workers` slots;
    /// admits up to `workers + queue` jobs.
    pub fn start(workers: usize, queue: usize, engines: impl Engines) -> Arc<Self> {
        let capacity = workers + queue;
        // Room for the admitted jobs and for a job lent each slot (`lend`).
        let (jobs, receiver) = sync_channel::<Job>(capacity + workers);
        let receiver = Arc::new(Mutex::new(receiver));
        let pool = Arc::new(Pool {
            model: RwLock::new(ModelState::Loading),
            slots: Mutex::new(vec![SlotStatus::default(); workers]),
            crashes: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            recent_crashes: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
        });
        let loading = Arc::clone(&pool);
        std::thread::Builder::new()
            .name("model-load".into())
            .spawn(move || {
                let outcome = match engines.load() {
                    Ok(info) => ModelState::Ready(info),
                    Err(e) => ModelState::Failed(e.to_string()),
                };
                let ready = matches!(outcome, ModelState::Ready(_));
                *loading.model.write().unwrap_or_else(|p| p.into_inner()) = outcome;
                if !ready {
                    return;
                }
                let engines: Arc<dyn Engines> = Arc::new(engines);
                for index in 0..workers {
                    let (pool, engines, receiver) = (
                        Arc::clone(&loading),
                        Arc::clone(&engines),
                        Arc::clone(&receiver),
                    );
                    std::thread::Builder::new()
                        .name(format!("inference-{index}"))
                        .spawn(move || slot(index, &*engines, &pool, &receiver))
                        .expect("spawning an inference thread");
                }
            })
            .expect("spawning the model loader");
        Arc::new(Inference {
            pool,
            admission: Arc::new(Semaphore::new(capacity)),
            jobs,
            workers,
            capacity,
        })
    }

    /// Whether requests can be served (the model is loaded, a slot is up, and none is
    /// backing off after repeated crashes), and what the model is.
    pub fn status(&self) -> ModelStatus {
        match self.current() {
            ModelState::Loading => ModelStatus {
                ready: false,
                error: None,
                info: None,
            },
            ModelState::Ready(info) => {
                let slots = self.pool.slots.lock().unwrap_or_else(|p| p.into_inner());
                let ready =
                    slots.iter().any(|s| s.up) && slots.iter().all(|s| s.backoff_until.is_none());
                ModelStatus {
                    ready,
                    error: None,
                    info: Some(info),
                }
            }
            ModelState::Failed(e) => ModelStatus {
                ready: false,
                error: Some(e),
                info: None,
            },
        }
    }

    /// Crashes, restarts and the slots.
    pub fn supervision(&self) -> Supervision {
        let now = Instant::now();
        let slots = self
            .pool
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| SlotStatus {
                backoff_seconds: s.backoff_until.map(|t| {
                    (t.saturating_duration_since(now).as_secs_f64() * 10.0).round() / 10.0
                }),
                ..s.clone()
            })
            .collect();
        Supervision {
            crashes: self.pool.crashes.load(Ordering::SeqCst),
            restarts: self.pool.restarts.load(Ordering::SeqCst),
            slots,
        }
    }

    /// Jobs admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.admission.available_permits()
    }

    /// Worker slots and admission capacity.
    pub fn limits(&self) -> (usize, usize) {
        (self.workers, self.capacity)
    }

    /// Runs `job` with an engine on a worker slot and waits for its result.
    pub async fn run<R, F>(&self, job: F) -> Result<R, InferenceError>
    where
        R: Send + 'static,
        F: FnOnce(&dyn Transcriber) -> R + Send + 'static,
    {
        match self.current() {
            ModelState::Ready(_) => {}
            ModelState::Loading => return Err(InferenceError::NotReady),
            ModelState::Failed(e) => return Err(InferenceError::Unavailable(e)),
        }
        let up = {
            let slots = self.pool.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.iter().any(|s| s.up || s.backoff_until.is_none())
        };
        if !up {
            return Err(InferenceError::Restarting);
        }
        let permit = Arc::clone(&self.admission)
            .try_acquire_owned()
            .map_err(|_| InferenceError::Overloaded)?;
        let (reply, answer) = oneshot::channel();
        let task: Job = Box::new(move |engine: &dyn Transcriber| {
            let result = job(engine);
            drop(permit);
            let _ = reply.send(result);
        });
        self.send(task).map_err(|_| InferenceError::Overloaded)?;
        answer.await.map_err(|_| InferenceError::WorkerFailed)
    }

    fn send(&self, job: Job) -> Result<(), ()> {
        self.pool.queued.fetch_add(1, Ordering::SeqCst);
        self.jobs.try_send(job).map_err(|_| {
            self.pool.queued.fetch_sub(1, Ordering::SeqCst);
        })
    }

    fn current(&self) -> ModelState {
        self.pool
            .model
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A request lends the slots that are idle when it starts for its own long audio
/// (`asr::Spread`). A lent slot holds no admission permit: a request that comes meanwhile is
/// admitted as usual and waits at most for the window the lent slot is on, after which the
/// slot goes back to it.
impl Lender for Inference {
    fn lend(&self, job: Job) -> bool {
        if !matches!(self.current(), ModelState::Ready(_)) {
            return false;
        }
        let idle = {
            let slots = self.pool.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.iter().filter(|s| s.up && !s.busy).count()
        };
        idle > self.pool.queued.load(Ordering::SeqCst) && self.send(job).is_ok()
    }

    fn wanted(&self) -> bool {
        self.pool.queued.load(Ordering::SeqCst) > 0
    }
}

/// One slot: opens an engine, runs jobs on it, and opens another when it dies.
fn slot(index: usize, engines: &dyn Engines, pool: &Pool, receiver: &Mutex<Receiver<Job>>) {
    let mut first = true;
    let mut waiting: Option<Job> = None;
    loop {
        let engine = match engines.open() {
            Ok(engine) => engine,
            Err(e) => {
                tracing::error!(event = "engine_start_failed", slot = index, error = %e);
                let wait = pool.failed().max(Duration::from_millis(500));
                backoff(pool, index, wait);
                continue;
            }
        };
        pool.slot(index, |s| {
            s.pid = engine.pid();
            s.up = true;
            s.backoff_until = None;
        });
        if !first {
            pool.restarts.fetch_add(1, Ordering::SeqCst);
            tracing::info!(event = "engine_restarted", slot = index, pid = engine.pid());
        }
        first = false;
        let death = loop {
            let job = match waiting.take() {
                Some(job) => job,
                None => {
                    let guard = receiver.lock().unwrap_or_else(|p| p.into_inner());
                    match guard.recv() {
                        Ok(job) => {
                            pool.queued.fetch_sub(1, Ordering::SeqCst);
                            job
                        }
                        Err(_) => return,
                    }
                }
            };
            // A worker killed while idle is replaced before it is given the job.
            if let Some(how) = engine.death() {
                waiting = Some(job);
                break how;
            }
            pool.slot(index, |s| s.busy = true);
            // A panicking job drops its reply (the caller sees WorkerFailed); the slot lives on.
            if std::panic::catch_unwind(AssertUnwindSafe(|| job(engine.as_ref()))).is_err() {
                tracing::error!(event = "inference_panic", "an inference job panicked");
            }
            pool.slot(index, |s| s.busy = false);
            if let Some(how) = engine.death() {
                break how;
            }
        };
        pool.slot(index, |s| {
            s.up = false;
            s.pid = None;
        });
        let wait = pool.crashed();
        tracing::error!(
            event = "engine_crashed",
            slot = index,
            pid = engine.pid(),
            how = %death,
            crashes = pool.crashes.load(Ordering::SeqCst),
            restart_in_seconds = wait.as_secs_f64(),
            message = "an engine worker died (a request it was running got engine_crashed); a new worker starts",
        );
        drop(engine);
        if !wait.is_zero() {
            backoff(pool, index, wait);
        }
    }
}

/// Holds a slot down for `wait` (the pool says it is not ready meanwhile).
fn backoff(pool: &Pool, index: usize, wait: Duration) {
    pool.slot(index, |s| s.backoff_until = Some(Instant::now() + wait));
    tracing::warn!(
        event = "engine_backoff",
        slot = index,
        wait_seconds = wait.as_secs_f64()
    );
    std::thread::sleep(wait);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asr::{DecodeOptions, Transcript};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Idle(ModelInfo);

    impl Transcriber for Idle {
        fn transcribe(&self, _: &[f32], _: &DecodeOptions) -> Result<Transcript, AsrError> {
            Ok(Transcript {
                segments: vec![],
                language: None,
                unreliable_from: None,
            })
        }
        fn info(&self) -> &ModelInfo {
            &self.0
        }
    }

    fn idle() -> Arc<dyn Transcriber> {
        Arc::new(Idle(ModelInfo {
            name: "idle".into(),
            path: String::new(),
            size_bytes: 0,
            engine: "test".into(),
            multilingual: false,
        }))
    }

    async fn until_ready(pool: &Inference) {
        while !pool.status().ready {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn refuses_before_load_and_reports_load_failure() {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let pool = Inference::start(
            1,
            0,
            InProcess::new(move || {
                let _ = wait.recv();
                Ok(idle())
            }),
        );
        assert!(matches!(
            pool.run(|_| ()).await,
            Err(InferenceError::NotReady)
        ));
        go.send(()).unwrap();
        until_ready(&pool).await;
        assert!(pool.run(|_| 7).await.is_ok());

        let broken = Inference::start(
            1,
            0,
            InProcess::new(|| Err(AsrError::Load("no file".into()))),
        );
        while broken.status().error.is_none() {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            broken.run(|_| ()).await,
            Err(InferenceError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn overload_is_refused_at_once_and_panics_do_not_kill_workers() {
        let pool = Inference::start(1, 0, InProcess::new(|| Ok(idle())));
        until_ready(&pool).await;
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let started = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&started);
        let busy_pool = Arc::clone(&pool);
        let busy = tokio::spawn(async move {
            busy_pool
                .run(move |_| {
                    flag.store(true, Ordering::SeqCst);
                    let _ = blocked.recv();
                })
                .await
        });
        while pool.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            pool.run(|_| ()).await,
            Err(InferenceError::Overloaded)
        ));
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert!(started.load(Ordering::SeqCst));

        let panicked: Result<(), _> = pool.run(|_| panic!("boom")).await;
        assert!(matches!(panicked, Err(InferenceError::WorkerFailed)));
        assert_eq!(pool.run(|_| 5).await.unwrap(), 5);
    }

    /// Engines whose calls on audio starting with `POISON` kill them (as a native abort
    /// kills a worker process).
    struct Fragile {
        opened: AtomicUsize,
    }

    const POISON: f32 = 0.5;

    struct FragileEngine {
        info: ModelInfo,
        dead: Mutex<Option<String>>,
        pid: u32,
    }

    impl Transcriber for FragileEngine {
        fn transcribe(&self, samples: &[f32], _: &DecodeOptions) -> Result<Transcript, AsrError> {
            if samples.first() == Some(&POISON) {
                *self.dead.lock().unwrap() = Some("killed by signal SIGABRT".into());
                return Err(AsrError::Crashed("SIGABRT".into()));
            }
            Ok(Transcript {
                segments: vec![],
                language: None,
                unreliable_from: None,
            })
        }
        fn info(&self) -> &ModelInfo {
            &self.info
        }
    }

    impl SlotEngine for FragileEngine {
        fn death(&self) -> Option<String> {
            self.dead.lock().unwrap().clone()
        }
        fn pid(&self) -> Option<u32> {
            Some(self.pid)
        }
    }

    impl Engines for Fragile {
        fn load(&self) -> Result<ModelInfo, AsrError> {
            Ok(ModelInfo::scripted())
        }
        fn open(&self) -> Result<Box<dyn SlotEngine>, AsrError> {
            let n = self.opened.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(FragileEngine {
                info: ModelInfo::scripted(),
                dead: Mutex::new(None),
                pid: 1000 + n as u32,
            }))
        }
    }

    async fn until_up(pool: &Inference) {
        while !pool.status().ready {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_crash_fails_one_job_and_the_slot_restarts_then_repeats_back_off() {
        let pool = Inference::start(
            1,
            0,
            Fragile {
                opened: AtomicUsize::new(0),
            },
        );
        until_up(&pool).await;
        let first = pool.supervision().slots[0].pid;
        let crashed = pool
            .run(|e| e.transcribe(&[POISON], &DecodeOptions::default()))
            .await;
        assert!(matches!(crashed, Ok(Err(AsrError::Crashed(_)))));
        // The next job runs on a new engine.
        let next = pool
            .run(|e| e.transcribe(&[0.0], &DecodeOptions::default()))
            .await;
        assert!(matches!(next, Ok(Ok(_))));
        let supervision = pool.supervision();
        assert_eq!((supervision.crashes, supervision.restarts), (1, 1));
        assert_ne!(supervision.slots[0].pid, first);
        assert!(pool.status().ready);

        // Crashes again and again: the restart waits, and the pool says it is not ready.
        for _ in 0..CRASHES_FORGIVEN {
            let _ = pool
                .run(|e| e.transcribe(&[POISON], &DecodeOptions::default()))
                .await;
        }
        while pool.supervision().slots[0].backoff_seconds.is_none() {
            tokio::task::yield_now().await;
        }
        assert!(!pool.status().ready);
        assert!(matches!(
            pool.run(|_| ()).await,
            Err(InferenceError::Restarting)
        ));
        assert_eq!(pool.supervision().crashes, 1 + CRASHES_FORGIVEN as u64);
    }
}
