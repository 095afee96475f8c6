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
    handler stream FILE|- [--url URL[,URL…]] [--chunk 2] [--language en] [--format text|json]
                   [--realtime] [--key KEY] [--session ID]
                                  stream an audio file (WAV, or raw s16le 16 kHz on stdin) to the
                                  service in chunks, echoing the context; prints final text
    handler convert-model CT2_DIR OUT.bin [--type q8_0|q4_0|f16|f32]
                                  convert a CTranslate2 Whisper model to ggml
    handler --help | --version
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(),
        Some("convert-model") => convert(&args[1..]),
        Some("stream") => stream(&args[1..]),
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
        let drain = std::time::Duration::from_secs_f64(config.shutdown_drain_seconds);
        let app = prepis::server::build_app(config);
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

fn convert(args: &[String]) -> ExitCode {
    let mut positional = Vec::new();
    let mut weight_type = WeightType::Q8_0;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--type" {
            match iter.next().and_then(|t| WeightType::parse(t)) {
                Some(t) => weight_type = t,
                None => {
                    eprintln!("--type takes q8_0, q4_0, f16 or f32");
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

fn stream(args: &[String]) -> ExitCode {
    use prepis::audio::{decode_chunk, DecodeLimits};
    use prepis::client::{stream_samples, StreamOptions};

    let mut options = StreamOptions::default();
    let mut file = None;
    let mut json = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = |name: &str| {
            iter.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let parsed: Result<(), String> = match arg.as_str() {
            "--url" => value("--url").map(|v| {
                options.urls = v.split(',').map(|u| transcribe_url(u.trim())).collect();
            }),
            "--chunk" => value("--chunk").and_then(|v| {
                let seconds: f64 = v
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|_| format!("--chunk {v:?}"))?;
                if !(0.1..=30.0).contains(&seconds) {
                    return Err("--chunk must be between 0.1 and 30 seconds".into());
                }
                options.chunk_seconds = seconds;
                Ok(())
            }),
            "--language" => value("--language").map(|v| options.language = Some(v)),
            "--key" => value("--key").map(|v| options.key = Some(v)),
            "--session" => value("--session").map(|v| options.session_id = Some(v)),
            "--format" => value("--format").and_then(|v| match v.as_str() {
                "json" => {
                    json = true;
                    Ok(())
                }
                "text" => Ok(()),
                other => Err(format!("--format {other:?}: text or json")),
            }),
            "--realtime" => {
                options.realtime = true;
                Ok(())
            }
            other if file.is_none() && !other.starts_with("--") || other == "-" => {
                file = Some(other.to_string());
                Ok(())
            }
            other => Err(format!("unknown option {other:?}")),
        };
        if let Err(e) = parsed {
            eprintln!("{e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let Some(file) = file else {
        eprintln!("stream: which file?\n\n{USAGE}");
        return ExitCode::from(2);
    };
    let bytes = if file == "-" {
        let mut buf = Vec::new();
        if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf) {
            eprintln!("reading stdin: {e}");
            return ExitCode::FAILURE;
        }
        buf
    } else {
        match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{file}: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let audio = match decode_chunk(
        &bytes,
        Some("audio/pcm;rate=16000"),
        DecodeLimits {
            max_seconds: 24.0 * 3600.0,
        },
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = stream_samples(&audio.samples, &options, |reply| {
        if json {
            println!("{}", reply.body);
            return;
        }
        for segment in reply.body["results"].as_array().into_iter().flatten() {
            println!(
                "[{} - {}] {}",
                clock(segment["start"].as_f64().unwrap_or(0.0)),
                clock(segment["end"].as_f64().unwrap_or(0.0)),
                segment["text"].as_str().unwrap_or("")
            );
        }
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts a base URL (`http://host:7071`) or the full transcribe URL.
fn transcribe_url(url: &str) -> String {
    if url.contains("/transcribe") {
        url.to_string()
    } else {
        format!("{}/api/transcribe", url.trim_end_matches('/'))
    }
}

fn clock(seconds: f64) -> String {
    let total_ms = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}.{:03}",
        total_ms / 60_000,
        total_ms / 1000 % 60,
        total_ms % 1000
    )
}
