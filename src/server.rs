//! Serving: bind, run until the shutdown signal, let in-flight requests finish.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::asr::{Transcriber, WhisperEngine};
use crate::config::Config;
use crate::http;
use crate::inference::{InProcess, Inference};
use crate::metrics::Metrics;
use crate::service::App;
use crate::speaker::SpeakerEncoder;

/// What an app serves with: the Whisper pool and the speaker encoder.
pub struct Engines {
    /// The Whisper pool (the model may still be loading in it).
    pub inference: Arc<Inference>,
    /// `None`: speaker labels are off; `Err`: the encoder failed to load (why).
    pub speaker: Option<Result<Arc<dyn SpeakerEncoder>, String>>,
}

impl Engines {
    /// The configured engines: starts the inference pool, which loads the model in the
    /// background (the server answers the readiness probe meanwhile), and loads the speaker
    /// encoder.
    pub fn configured(config: &Config) -> Engines {
        Engines {
            inference: configured_inference(config),
            speaker: configured_speaker(config),
        }
    }
}

fn configured_inference(config: &Config) -> Arc<Inference> {
    // whisper.cpp's own log (language lookups run here too) goes through tracing, as in the
    // worker processes.
    whisper_rs::install_logging_hooks();
    if config.isolate_engine {
        let settings = config
            .resolve_model()
            .map(|model| crate::worker::HostSettings {
                model,
                name: config.model.clone(),
                threads: config.threads_per_inference,
                min_window_seconds: config.min_window_seconds,
            });
        match settings {
            Ok(settings) => Inference::start(
                config.workers,
                config.queue,
                crate::worker::Processes::new(settings),
            ),
            Err(e) => Inference::start(
                config.workers,
                config.queue,
                InProcess::new(move || Err(crate::asr::AsrError::Load(e))),
            ),
        }
    } else {
        let load_config = config.clone();
        Inference::start(
            config.workers,
            config.queue,
            InProcess::new(move || {
                let path = load_config
                    .resolve_model()
                    .map_err(crate::asr::AsrError::Load)?;
                let started = std::time::Instant::now();
                let engine = WhisperEngine::load(
                    &path,
                    &load_config.model,
                    load_config.threads_per_inference,
                    load_config.min_window_seconds,
                )?;
                tracing::info!(
                    event = "model_loaded",
                    model = %load_config.model,
                    size_bytes = engine.info().size_bytes,
                    load_ms = started.elapsed().as_millis() as u64,
                    isolation = "thread",
                );
                Ok(Arc::new(engine) as Arc<dyn Transcriber>)
            }),
        )
    }
}

fn configured_speaker(config: &Config) -> Option<Result<Arc<dyn SpeakerEncoder>, String>> {
    config.speaker_model.as_deref().map(|path| {
        let started = std::time::Instant::now();
        match crate::speaker::Ge2eEncoder::load(path) {
            Ok(encoder) => {
                tracing::info!(event = "speaker_model_loaded", path = %path.display(), load_ms = started.elapsed().as_millis() as u64);
                Ok(Arc::new(encoder) as Arc<dyn SpeakerEncoder>)
            }
            Err(e) => {
                tracing::error!(event = "speaker_model_unavailable", error = %e);
                Err(format!("{e} (run scripts/fetch-speaker.sh, or set PREPIS_SPEAKER_MODEL=off)"))
            }
        }
    })
}

/// Builds the application around its engines (`Engines::configured`, or a test's fakes).
pub fn build_app(config: Config, engines: Engines) -> Arc<App> {
    let sessions =
        config.redis_url.as_deref().and_then(
            |url| match crate::context::sessions::SessionStore::new(url, config.session_ttl_seconds)
            {
                Ok(store) => Some(store),
                Err(e) => {
                    tracing::error!(event = "redis_config_invalid", error = %e);
                    None
                }
            },
        );
    Arc::new(App {
        config,
        inference: engines.inference,
        metrics: Metrics::default(),
        sessions,
        speaker: engines.speaker,
        lifecycle: Default::default(),
    })
}

/// Serves `app` on `listener` until `shutdown` completes, then drains: new API requests get
/// 503, requests in flight finish for at most `drain` (the platform kills the process not long after SIGTERM; a
/// clean exit 0 within its grace period is what the Functions host and orchestrators expect).
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: std::time::Duration,
) {
    let (stopping, mut deadline) = tokio::sync::watch::channel(false);
    let (closing, mut close) = tokio::sync::watch::channel(false);
    let draining = Arc::clone(&app);
    tokio::spawn(async move {
        shutdown.await;
        // Refuse new API requests (503), then close the listener once the last one is done.
        draining.lifecycle.drain();
        let _ = stopping.send(true);
        draining.lifecycle.idle().await;
        let _ = closing.send(true);
    });
    let limits = ConnectionLimits {
        header_timeout: std::time::Duration::from_secs_f64(app.config.read_timeout_seconds),
        // A context token may come in `X-Prepis-Context`: the header buffer holds the
        // largest token accepted (hyper's default, ~400 KB, was below it) and the rest.
        header_bytes: (app.config.max_context_bytes + 64 * 1024).max(400 * 1024),
    };
    let server = serve(listener, http::routes(app), limits, async move {
        let _ = close.wait_for(|s| *s).await;
    });
    tokio::select! {
        _ = server => {}
        _ = async {
            let _ = deadline.wait_for(|s| *s).await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(event = "shutdown_deadline", drain_seconds = drain.as_secs_f64(), message = "requests still in flight at the drain deadline were cut off");
        }
    }
}

/// What one HTTP/1 connection may take.
#[derive(Clone, Copy)]
struct ConnectionLimits {
    /// Longest the request headers may take to arrive.
    header_timeout: std::time::Duration,
    /// Largest request head (hyper's read buffer).
    header_bytes: usize,
}

/// warp's filter on hyper's HTTP/1 + HTTP/2 connections (what `warp::serve` does, plus a
/// header read timeout: a client that trickles its headers cannot hold a connection), until
/// `close`; then the listener closes and open connections finish.
async fn serve(
    listener: TcpListener,
    routes: warp::filters::BoxedFilter<(warp::reply::Response,)>,
    limits: ConnectionLimits,
    close: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut close = std::pin::pin!(close);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!(event = "accept_failed", error = %e);
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            },
            _ = &mut close => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes.clone()));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.header_bytes);
            let connection = watcher
                .watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
            if let Err(e) = connection.await {
                tracing::debug!(event = "connection_error", error = %e);
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
