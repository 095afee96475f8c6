//! `handler engine-host`: the process that loads the model once and forks a worker for
//! each of the handler's requests. A worker inherits the weights (shared pages, copied on
//! write, and never written), serves calls on a socket of its own, and is the only process
//! that runs whisper.cpp: a native abort there ends one worker and the call it was on.
//!
//! The host stays single-threaded (it forks): it loads, then only reads its control socket
//! (its stdin, a Unix socket from the handler), forks, and reaps.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::wire::{self, Answer, Call, Control, Exited, Loaded, Spawned};
use crate::asr::{DecodeOptions, Progress, Transcriber, WhisperEngine};

/// What the host loads (the handler passes it on the command line).
#[derive(Debug, Clone)]
pub struct HostSettings {
    pub model: PathBuf,
    pub name: String,
    pub threads: usize,
    pub min_window_seconds: f64,
}

impl HostSettings {
    /// The hidden subcommand's arguments.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "engine-host".into(),
            "--model".into(),
            self.model.to_string_lossy().into(),
            "--name".into(),
            self.name.clone(),
            "--threads".into(),
            self.threads.to_string(),
            "--min-window-seconds".into(),
            self.min_window_seconds.to_string(),
        ]
    }
}

/// Runs the host on the control socket at descriptor 0 until the handler goes away.
pub fn run(settings: HostSettings) -> Result<(), String> {
    // The host and its workers live as long as their sockets: when the handler exits (even
    // killed with SIGKILL) they read end-of-file and exit. (Not PR_SET_PDEATHSIG: it fires
    // when the thread that started us ends, and the handler starts us from a pool thread.)
    // A terminal's Ctrl-C reaches the whole process group: the handler drains on it, and
    // its workers must finish the requests in flight (they exit when their sockets close).
    // SAFETY: setting a signal disposition; no handler function is involved.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGINT, nix::sys::signal::SigHandler::SigIgn);
    }
    // SAFETY: the handler started this process with the control socket as its stdin.
    let mut control = UnixStream::from(unsafe { OwnedFd::from_raw_fd(0) });
    let started = Instant::now();
    let engine = match WhisperEngine::load(
        &settings.model,
        &settings.name,
        settings.threads,
        settings.min_window_seconds,
    ) {
        Ok(engine) => engine,
        Err(e) => {
            let _ = wire::send(&control, &Loaded::Failed(e.to_string()));
            return Err(e.to_string());
        }
    };
    tracing::info!(
        event = "engine_host_ready",
        pid = std::process::id(),
        load_ms = started.elapsed().as_millis() as u64,
    );
    wire::send(&control, &Loaded::Ready(engine.info().clone())).map_err(|e| e.to_string())?;
    let mut workers: Vec<Pid> = Vec::new();
    loop {
        let request: Control = match wire::receive(&control) {
            Ok(r) => r,
            // The handler is gone (or shutting down): so are we, and the workers with us
            // (one may still be computing a request nobody waits for).
            Err(_) => {
                for pid in workers {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                }
                return Ok(());
            }
        };
        match request {
            Control::Spawn => {
                let (back, pid) = spawn(&engine, control)?;
                control = back;
                workers.extend(pid);
            }
            Control::Reap { pid } => {
                let pid = Pid::from_raw(pid);
                workers.retain(|w| *w != pid);
                let how = reap(pid);
                wire::send(&control, &Exited(how)).map_err(|e| e.to_string())?;
            }
        }
    }
}

/// Forks one worker; the parent sends the handler its pid and its socket, and goes on
/// with `control` (the child closes it: only the handler and the host hold it).
fn spawn(engine: &WhisperEngine, control: UnixStream) -> Result<(UnixStream, Option<Pid>), String> {
    let (ours, theirs) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            let failed = Spawned::Failed(format!("socketpair: {e}"));
            wire::send(&control, &failed).map_err(|e| e.to_string())?;
            return Ok((control, None));
        }
    };
    // SAFETY: this process has one thread (it never starts another), so the child may
    // run any code.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(control);
            drop(ours);
            // Rust's runtime catches SIGSEGV and SIGBUS to report stack overflows and returns
            // from a signal sent with kill(1); a worker must die of them, as of any crash.
            // SAFETY: setting signal dispositions to their defaults.
            unsafe {
                use nix::sys::signal::{signal, SigHandler};
                let _ = signal(Signal::SIGSEGV, SigHandler::SigDfl);
                let _ = signal(Signal::SIGBUS, SigHandler::SigDfl);
            }
            serve(engine, theirs);
            std::process::exit(0);
        }
        Ok(ForkResult::Parent { child }) => {
            drop(theirs);
            let spawned = Spawned::Worker {
                pid: child.as_raw(),
            };
            wire::send_with_fd(&control, &spawned, ours.as_raw_fd()).map_err(|e| e.to_string())?;
            tracing::debug!(event = "engine_worker_forked", pid = child.as_raw());
            return Ok((control, Some(child)));
        }
        Err(e) => {
            let failed = Spawned::Failed(format!("fork: {e}"));
            wire::send(&control, &failed).map_err(|e| e.to_string())?;
        }
    }
    Ok((control, None))
}

/// How worker `pid` ended (it closed its socket: it is exiting or gone); one that is
/// still running after a moment is killed.
fn reap(pid: Pid) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(WaitStatus::StillAlive) => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return "stopped answering (killed)".into();
            }
            Ok(WaitStatus::Exited(_, code)) => return format!("exited with status {code}"),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return format!("killed by signal {}", signal.as_str())
            }
            Ok(other) => return format!("{other:?}"),
            Err(e) => return format!("not found ({e})"),
        }
    }
}

/// A worker: answers calls on `socket` until the handler closes it.
fn serve(engine: &WhisperEngine, socket: UnixStream) {
    while let Ok(call) = wire::receive::<Call>(&socket) {
        let answer = match call {
            Call::Tokenize(text) => Answer::Tokens(engine.tokenize(&text)),
            Call::Transcribe { samples, options } => {
                #[cfg(feature = "crash-marker")]
                if super::marker::present(&samples) {
                    // The test build's poison pill: what a native assert does.
                    std::process::abort();
                }
                let progress = match (options.progress, socket.try_clone()) {
                    (true, Ok(listener)) => Some(Progress::new(move |segments| {
                        let _ = wire::send(&listener, &Answer::Progress(segments.to_vec()));
                    })),
                    _ => None,
                };
                let options = DecodeOptions {
                    language: options.language,
                    prompt: options.prompt,
                    translate: options.translate,
                    temperature: options.temperature,
                    progress,
                };
                let result = engine.transcribe(&samples, &options);
                Answer::Transcript(result.map_err(|e| e.to_string()))
            }
        };
        if wire::send(&socket, &answer).is_err() {
            return;
        }
    }
}
