//! The inference pool: the model loads in the background while the server already
//! answers; a fixed set of worker threads runs engine calls off the async runtime;
//! admission is bounded (workers + queue), so overload is refused at once with a clear
//! error instead of queueing into timeouts or growing memory.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{oneshot, Semaphore};

use crate::asr::{AsrError, ModelInfo, Transcriber};

type Job = Box<dyn FnOnce() + Send>;

/// Where the model stands.
#[derive(Clone)]
enum ModelState {
    Loading,
    Ready(Arc<dyn Transcriber>),
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
}

/// The model status shown by `/api/status`.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub ready: bool,
    pub error: Option<String>,
    pub info: Option<ModelInfo>,
}

/// Bounded pool of worker threads sharing one loaded model.
pub struct Inference {
    /// The model, once loaded.
    state: Arc<RwLock<ModelState>>,
    /// Permits for admitted jobs (running or queued); none left means overload.
    admission: Arc<Semaphore>,
    /// Admitted jobs on their way to a worker.
    jobs: SyncSender<Job>,
    /// Number of worker threads.
    workers: usize,
    /// Admission capacity (workers + queue).
    capacity: usize,
}

impl Inference {
    /// Starts `workers` threads, admits up to `workers + queue` jobs, and loads the model
    /// with `load` on a thread of its own.
    pub fn start<L>(workers: usize, queue: usize, load: L) -> Arc<Self>
    where
        L: FnOnce() -> Result<Arc<dyn Transcriber>, AsrError> + Send + 'static,
    {
        let capacity = workers + queue;
        let (jobs, receiver) = sync_channel::<Job>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..workers {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || work(&receiver))
                .expect("spawning an inference thread");
        }
        let state = Arc::new(RwLock::new(ModelState::Loading));
        let loading = Arc::clone(&state);
        std::thread::Builder::new()
            .name("model-load".into())
            .spawn(move || {
                let outcome = match load() {
                    Ok(engine) => ModelState::Ready(engine),
                    Err(e) => ModelState::Failed(e.to_string()),
                };
                *loading.write().unwrap_or_else(|p| p.into_inner()) = outcome;
            })
            .expect("spawning the model loader");
        Arc::new(Inference {
            state,
            admission: Arc::new(Semaphore::new(capacity)),
            jobs,
            workers,
            capacity,
        })
    }

    /// Whether the model is loaded, and what it is.
    pub fn status(&self) -> ModelStatus {
        match self.current() {
            ModelState::Loading => ModelStatus {
                ready: false,
                error: None,
                info: None,
            },
            ModelState::Ready(engine) => ModelStatus {
                ready: true,
                error: None,
                info: Some(engine.info().clone()),
            },
            ModelState::Failed(e) => ModelStatus {
                ready: false,
                error: Some(e),
                info: None,
            },
        }
    }

    /// Jobs admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.admission.available_permits()
    }

    /// Worker threads and admission capacity.
    pub fn limits(&self) -> (usize, usize) {
        (self.workers, self.capacity)
    }

    /// Runs `job` with the model on a worker thread and waits for its result.
    pub async fn run<R, F>(&self, job: F) -> Result<R, InferenceError>
    where
        R: Send + 'static,
        F: FnOnce(&dyn Transcriber) -> R + Send + 'static,
    {
        let engine = match self.current() {
            ModelState::Ready(engine) => engine,
            ModelState::Loading => return Err(InferenceError::NotReady),
            ModelState::Failed(e) => return Err(InferenceError::Unavailable(e)),
        };
        let permit = Arc::clone(&self.admission)
            .try_acquire_owned()
            .map_err(|_| InferenceError::Overloaded)?;
        let (reply, answer) = oneshot::channel();
        let task: Job = Box::new(move || {
            let result = job(engine.as_ref());
            drop(permit);
            let _ = reply.send(result);
        });
        self.jobs
            .try_send(task)
            .map_err(|_| InferenceError::Overloaded)?;
        answer.await.map_err(|_| InferenceError::WorkerFailed)
    }

    fn current(&self) -> ModelState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let guard = receiver.lock().unwrap_or_else(|p| p.into_inner());
            guard.recv()
        };
        let Ok(job) = job else { return };
        // A panicking job drops its reply (the caller sees WorkerFailed); the worker lives on.
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!(event = "inference_panic", "an inference job panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asr::{DecodeOptions, Transcript};
    use std::sync::atomic::{AtomicBool, Ordering};

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
        let pool = Inference::start(1, 0, move || {
            let _ = wait.recv();
            Ok(idle())
        });
        assert!(matches!(
            pool.run(|_| ()).await,
            Err(InferenceError::NotReady)
        ));
        go.send(()).unwrap();
        until_ready(&pool).await;
        assert!(pool.run(|_| 7).await.is_ok());

        let broken = Inference::start(1, 0, || Err(AsrError::Load("no file".into())));
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
        let pool = Inference::start(1, 0, || Ok(idle()));
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
}
