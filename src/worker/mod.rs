//! Whisper in worker processes, supervised by the handler: a poisoned chunk (a native abort
//! or a segfault in whisper.cpp, the OOM killer) costs that chunk, never the instance.
//!
//! The handler starts one engine host (`handler engine-host`, see `host`), which loads the
//! model and forks workers on request; each worker's socket is handed to the handler, and
//! [`Worker`] is a [`Transcriber`] that calls it. When a worker dies, its call fails with
//! [`AsrError::Crashed`] and the inference pool asks for a new one (a fork: milliseconds).

mod host;
#[cfg(any(feature = "crash-marker", test))]
mod marker;
mod wire;

use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use host::{run as run_host, HostSettings};

use crate::asr::{AsrError, DecodeOptions, ModelInfo, Transcriber, Transcript};
use wire::{Answer, Call, Control, Exited, Loaded, Spawned};

/// The engine host process and its control socket.
pub struct EngineHost {
    control: Mutex<UnixStream>,
    process: Mutex<Child>,
    info: ModelInfo,
    /// The control socket failed: the host is gone and must be started again.
    lost: AtomicBool,
}

impl EngineHost {
    /// Starts the host (this same executable) and waits until it has loaded the model.
    pub fn launch(settings: &HostSettings) -> Result<Arc<Self>, AsrError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            AsrError::Load(format!("starting the engine host: {what}: {e}"))
        };
        let exe = std::env::current_exe().map_err(|e| failed("current_exe", &e))?;
        let (ours, theirs) = UnixStream::pair().map_err(|e| failed("socketpair", &e))?;
        let mut process = Command::new(exe)
            .args(settings.to_args())
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .spawn()
            .map_err(|e| failed("spawn", &e))?;
        match wire::receive::<Loaded>(&ours) {
            Ok(Loaded::Ready(info)) => Ok(Arc::new(EngineHost {
                control: Mutex::new(ours),
                process: Mutex::new(process),
                info,
                lost: AtomicBool::new(false),
            })),
            Ok(Loaded::Failed(e)) => {
                let _ = process.wait();
                Err(AsrError::Load(e))
            }
            Err(_) => {
                let how = process
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                Err(AsrError::Load(format!(
                    "the engine host ended while loading the model ({how})"
                )))
            }
        }
    }

    /// The model the host loaded.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Whether the host can still fork workers.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// A new worker, forked from the host.
    pub fn spawn(self: &Arc<Self>) -> Result<Worker, AsrError> {
        let control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let answer = wire::send(&control, &Control::Spawn)
            .and_then(|()| wire::receive_with_fd::<Spawned>(&control));
        match answer {
            Ok((Spawned::Worker { pid }, Some(fd))) => Ok(Worker {
                pid,
                socket: UnixStream::from(fd),
                host: Arc::clone(self),
                dead: Mutex::new(None),
            }),
            Ok((Spawned::Worker { pid }, None)) => Err(AsrError::Load(format!(
                "the engine host forked worker {pid} but sent no socket"
            ))),
            Ok((Spawned::Failed(e), _)) => Err(AsrError::Load(format!("forking a worker: {e}"))),
            Err(e) => {
                self.lost.store(true, Ordering::SeqCst);
                Err(AsrError::Load(format!("the engine host is gone ({e})")))
            }
        }
    }

    /// How worker `pid` ended (after its socket closed).
    fn reap(&self, pid: i32) -> String {
        let control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let answer = wire::send(&control, &Control::Reap { pid })
            .and_then(|()| wire::receive::<Exited>(&control));
        match answer {
            Ok(Exited(how)) => how,
            Err(e) => {
                self.lost.store(true, Ordering::SeqCst);
                format!("unknown: the engine host is gone too ({e})")
            }
        }
    }
}

impl Drop for EngineHost {
    fn drop(&mut self) {
        let process = self.process.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = process.kill();
        let _ = process.wait();
    }
}

/// One worker process: a [`Transcriber`] whose calls run there.
pub struct Worker {
    pid: i32,
    socket: UnixStream,
    host: Arc<EngineHost>,
    /// How the worker ended, once it has.
    dead: Mutex<Option<String>>,
}

impl Worker {
    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// How the worker ended, when it has (its calls then fail with `Crashed`); a worker
    /// that died between calls (killed from outside) is noticed here, before a call.
    pub fn death(&self) -> Option<String> {
        let known = self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if known.is_some() {
            return known;
        }
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        let mut byte = [0u8; 1];
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        match recv(self.socket.as_raw_fd(), &mut byte, flags) {
            // Between calls a live worker sends nothing: only EOF or an error is readable.
            Ok(0) | Err(nix::errno::Errno::ECONNRESET) => match self.died() {
                AsrError::Crashed(how) => Some(how),
                _ => None,
            },
            _ => None,
        }
    }

    fn known_death(&self) -> Option<String> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The socket failed: the worker is gone; learn how from the host.
    fn died(&self) -> AsrError {
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        let how = dead
            .get_or_insert_with(|| format!("worker {} {}", self.pid, self.host.reap(self.pid)))
            .clone();
        AsrError::Crashed(how)
    }

    fn call(&self, call: &Call, options: Option<&DecodeOptions>) -> Result<Answer, AsrError> {
        if let Some(how) = self.known_death() {
            return Err(AsrError::Crashed(how));
        }
        wire::send(&self.socket, call).map_err(|_| self.died())?;
        loop {
            match wire::receive::<Answer>(&self.socket).map_err(|_| self.died())? {
                Answer::Progress(segments) => {
                    if let Some(listener) = options.and_then(|o| o.progress.as_ref()) {
                        listener.tell(&segments);
                    }
                }
                answer => return Ok(answer),
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the socket ends a live worker; the host reaps it.
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        if self.known_death().is_none() && !self.host.lost() {
            let _ = self.host.reap(self.pid);
        }
    }
}

impl crate::inference::SlotEngine for Worker {
    fn death(&self) -> Option<String> {
        Worker::death(self)
    }
    fn pid(&self) -> Option<u32> {
        Some(self.pid())
    }
}

impl Transcriber for Worker {
    fn transcribe(&self, samples: &[f32], options: &DecodeOptions) -> Result<Transcript, AsrError> {
        let call = Call::Transcribe {
            samples: samples.to_vec(),
            options: wire::Options {
                language: options.language.clone(),
                prompt: options.prompt.clone(),
                translate: options.translate,
                temperature: options.temperature,
                progress: options.progress.is_some(),
            },
        };
        match self.call(&call, Some(options))? {
            Answer::Transcript(result) => result.map_err(AsrError::Inference),
            other => Err(AsrError::Inference(format!("unexpected answer {other:?}"))),
        }
    }

    fn info(&self) -> &ModelInfo {
        &self.host.info
    }

    fn tokenize(&self, text: &str) -> Vec<i32> {
        match self.call(&Call::Tokenize(text.to_string()), None) {
            Ok(Answer::Tokens(tokens)) => tokens,
            _ => Vec::new(),
        }
    }
}

/// The service's engines: worker processes forked from one engine host, which is started
/// again (the model loaded again) if it is ever lost.
pub struct Processes {
    settings: HostSettings,
    host: Mutex<Option<Arc<EngineHost>>>,
}

impl Processes {
    pub fn new(settings: HostSettings) -> Self {
        Processes {
            settings,
            host: Mutex::new(None),
        }
    }

    fn host(&self) -> Result<Arc<EngineHost>, AsrError> {
        let mut host = self.host.lock().unwrap_or_else(|p| p.into_inner());
        match host.as_ref() {
            Some(h) if !h.lost() => Ok(Arc::clone(h)),
            _ => {
                let started = std::time::Instant::now();
                let launched = EngineHost::launch(&self.settings)?;
                tracing::info!(
                    event = "model_loaded",
                    model = %self.settings.name,
                    size_bytes = launched.info().size_bytes,
                    load_ms = started.elapsed().as_millis() as u64,
                    isolation = "process",
                );
                *host = Some(Arc::clone(&launched));
                Ok(launched)
            }
        }
    }
}

impl crate::inference::Engines for Processes {
    fn load(&self) -> Result<ModelInfo, AsrError> {
        Ok(self.host()?.info().clone())
    }

    fn open(&self) -> Result<Box<dyn crate::inference::SlotEngine>, AsrError> {
        Ok(Box::new(self.host()?.spawn()?))
    }
}
