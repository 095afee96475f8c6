//! The `handler` binary. With no arguments it serves the API (what the Functions host
//! and containers run); `handler convert-model` turns a CTranslate2 Whisper directory
//! into the ggml file the service loads.

use std::path::PathBuf;
use std::process::ExitCode;

use prepis::config::Config;
use prepis::model::{convert_ct2_dir, WeightType};

const USAGE: &str = "\
prepis handler: stateless live transcription (Whisper) for Azure Functions and containers

USAGE:
    handler                       serve the API (configured by environment variables, see README)
    handler convert-model CT2_DIR OUT.bin [--type q8_0|f16|f32]
                                  convert a CTranslate2 Whisper model to ggml
    handler --help | --version
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(),
        Some("convert-model") => convert(&args[1..]),
        Some("--version") | Some("-V") => {
            println!("handler {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help") | Some("-h") | Some("help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
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
        let app = prepis::server::build_app(config);
        prepis::server::run(listener, app, shutdown_signal()).await;
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

fn convert(args: &[String]) -> ExitCode {
    let mut positional = Vec::new();
    let mut weight_type = WeightType::Q8_0;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--type" {
            match iter.next().and_then(|t| WeightType::parse(t)) {
                Some(t) => weight_type = t,
                None => {
                    eprintln!("--type takes q8_0, f16 or f32");
                    return ExitCode::from(2);
                }
            }
        } else {
            positional.push(PathBuf::from(arg));
        }
    }
    let [ct2_dir, out] = positional.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match convert_ct2_dir(ct2_dir, out, weight_type) {
        Ok(hp) => {
            println!(
                "converted {} -> {} ({:?}, {} layers, {} vocab)",
                ct2_dir.display(),
                out.display(),
                weight_type,
                hp.n_audio_layer,
                hp.n_vocab
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("conversion failed: {e}");
            ExitCode::FAILURE
        }
    }
}
