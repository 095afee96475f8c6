//! The `handler` binary. With no arguments it serves the API (what the Functions host
//! and containers run); `handler stream` and `handler transcribe` are its clients,
//! `handler convert-model` turns a CTranslate2 Whisper directory into the ggml file the
//! service loads (see `cli.rs`).

use std::process::ExitCode;

use clap::Parser;
use prepis::config::Config;
use prepis::convert::convert_ct2_dir;

mod cli;

#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cli::{Cli, Command, ConvertArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None | Some(Command::Serve) => return serve(),
        Some(Command::ConvertModel(args)) => convert(args),
        Some(Command::Stream(args)) => cli::stream(args),
        Some(Command::Transcribe(args)) => cli::transcribe(args),
        Some(Command::Probe(args)) => cli::probe(args),
        Some(Command::EngineHost(args)) => engine_host(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handler: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_filter);
    if config.context_key_ephemeral {
        tracing::warn!(
            event = "context_key_ephemeral",
            message = "PREPIS_CONTEXT_KEY is not set: context tokens are sealed with a random key of this \
                       process only; streams break on a restart or when another instance serves them. \
                       Set the same PREPIS_CONTEXT_KEY (openssl rand -base64 32) on every instance."
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        tracing::info!(
            event = "listening",
            port,
            address = %config.listen.ip(),
            functions_host = config.under_functions_host,
            model = %config.model,
            workers = config.workers,
            threads_per_worker = config.threads_per_inference,
        );
        let drain = std::time::Duration::from_secs_f64(config.shutdown_drain_seconds);
        let engines = prepis::server::Engines::configured(&config);
        let app = prepis::server::build_app(config, engines);
        prepis::server::run(listener, app, shutdown_signal(), drain).await;
        tracing::info!(event = "stopped");
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM (what the Functions host and orchestrators send) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!(event = "shutdown_requested");
}

/// One JSON object per line on stdout, no colour: what Application Insights ingests.
fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .with_env_filter(filter)
        .init();
}

/// The worker processes' host (started by the server; see `prepis::worker`).
fn engine_host(args: cli::EngineHostArgs) -> Result<(), String> {
    let filter = std::env::var("PREPIS_LOG").unwrap_or_else(|_| "info,whisper_rs=warn".into());
    init_logging(&filter);
    prepis::worker::run_host(prepis::worker::HostSettings {
        model: args.model,
        name: args.name,
        threads: args.threads,
        min_window_seconds: args.min_window_seconds,
    })
}

fn convert(args: ConvertArgs) -> Result<(), String> {
    let weight_type = args.weight_type;
    let hp = convert_ct2_dir(&args.ct2_dir, &args.out, weight_type)
        .map_err(|e| format!("conversion failed: {e}"))?;
    println!(
        "converted {} -> {} ({:?}, {} layers, {} vocab)",
        args.ct2_dir.display(),
        args.out.display(),
        weight_type,
        hp.n_audio_layer,
        hp.n_vocab
    );
    Ok(())
}
