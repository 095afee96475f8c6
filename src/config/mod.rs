//! Service configuration, read once from environment variables (Azure app settings arrive
//! that way) into one typed, validated value that is passed down.
//!
//! Two stages, as ripgrep does it: `Config::from_env` reads and validates plain values
//! without touching the disk; `Config::resolve_model` does the fallible lookup of the
//! model file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

mod api_key;

pub use api_key::ApiKey;

use crate::context::{ContextKey, ContextKeys};
use crate::stream::StreamPolicy;

/// Everything the service can be told, with its defaults documented in docs/operations.md.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen: `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT` under the Functions host,
    /// otherwise `0.0.0.0:$PORT` (default 7071).
    pub listen: SocketAddr,
    /// Whether the Functions host started us (it sets `FUNCTIONS_CUSTOMHANDLER_PORT`).
    pub under_functions_host: bool,
    /// `PREPIS_MODEL`: a model name (`base`, `tiny.en`) or a path to a ggml file.
    pub model: String,
    /// `PREPIS_MODEL_DIR`: where `make model` puts converted models
    /// (default `$PREPIS_CACHE/models`, `PREPIS_CACHE` defaulting to `~/.cache/prepis`).
    pub model_dir: PathBuf,
    /// `PREPIS_THREADS`: CPU threads used by one inference.
    pub threads_per_inference: usize,
    /// `PREPIS_WORKERS`: inferences that run at the same time.
    pub workers: usize,
    /// `PREPIS_QUEUE`: admitted requests that may wait for a worker; beyond, 429.
    pub queue: usize,
    /// `PREPIS_ISOLATION`: `process` (the default) runs Whisper in supervised worker
    /// processes, so a native crash costs one request; `thread` runs it in this process.
    pub isolate_engine: bool,
    /// `PREPIS_MAX_BODY_BYTES`: largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// `PREPIS_MAX_AUDIO_SECONDS`: longest audio accepted in one request (413 beyond).
    pub max_audio_seconds: f64,
    /// `PREPIS_RESPONSE_SECONDS`: how long a response may take before the front end cuts it
    /// (Azure's front end: 230 s). A request whose audio would take longer (by the measured
    /// speed) is refused at once (422 `response_too_slow`): stream it instead.
    pub response_seconds: f64,
    /// `PREPIS_LANGUAGE`: language used when a request names none; `auto` detects it.
    pub default_language: Option<String>,
    /// `PREPIS_MIN_WINDOW_SECONDS`: the smallest encoder window; shorter audio is encoded
    /// in a window of this size instead of Whisper's fixed 30 s (30 turns sizing off).
    pub min_window_seconds: f64,
    /// `PREPIS_CONTEXT_KEY` (base64, 32 bytes) and `PREPIS_CONTEXT_KEY_PREVIOUS` (accepted
    /// during a rotation): seal the context tokens. Absent: a random per-process key.
    pub context_keys: ContextKeys,
    /// True when no `PREPIS_CONTEXT_KEY` was given (fine for one process, wrong for several).
    pub context_key_ephemeral: bool,
    /// `PREPIS_CONTEXT_TTL_SECONDS`: the longest a stream may last before its tokens expire.
    pub context_ttl_seconds: u64,
    /// `PREPIS_MAX_CONTEXT_BYTES`: largest context token accepted.
    pub max_context_bytes: usize,
    /// `REDIS_URL`: enables Redis sessions (`redis://host:6379`, `rediss://` for TLS).
    pub redis_url: Option<String>,
    /// `PREPIS_SESSION_TTL_SECONDS`: how long a Redis session outlives its last chunk.
    pub session_ttl_seconds: u64,
    /// The streaming policy: `PREPIS_GUARD_MS`, `PREPIS_ENDPOINT_MS`, `PREPIS_PAUSE_COMMIT_MS`
    /// (0 turns commit-at-pause off), `PREPIS_MAX_TAIL_MS`.
    pub stream: StreamPolicy,
    /// `PREPIS_SPEAKER_MODEL`: the GE2E weights (`scripts/fetch-speaker.sh`), default
    /// `<model dir>/ge2e.safetensors`; `off` disables speaker labels.
    pub speaker_model: Option<PathBuf>,
    /// The speaker tracker: `PREPIS_SPEAKER_THRESHOLD` (new speaker below this cosine),
    /// `PREPIS_SPEAKER_HYSTERESIS`, `PREPIS_MAX_SPEAKERS`, `PREPIS_SPEAKER_NEW_VOICE`.
    pub speakers: crate::speaker::TrackerPolicy,
    /// `PREPIS_CORS_ORIGINS`: origins (comma-separated, or `*`) whose pages may call the
    /// API from a browser when the handler serves it directly; empty: none.
    pub cors_origins: Vec<String>,
    /// `PREPIS_API_KEY`: the key every API request must present outside the Functions host
    /// (there, function keys guard the routes); `None` when unset or under the host.
    pub api_key: Option<ApiKey>,
    /// `PREPIS_SHUTDOWN_SECONDS`: after SIGTERM, how long in-flight requests may finish.
    pub shutdown_drain_seconds: f64,
    /// `PREPIS_READ_TIMEOUT_SECONDS`: longest a request's headers, and then its body, may take
    /// to arrive (408 / connection closed beyond), so that a client that stalls cannot hold a
    /// connection forever.
    pub read_timeout_seconds: f64,
    /// `PREPIS_LOG`: tracing filter (`info`, `debug`, `prepis=debug,warp=info`, …).
    pub log_filter: String,
}

/// A setting that could not be used, with the variable's name.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    reason: String,
}

/// The model names `make model` knows how to fetch.
pub const KNOWN_MODELS: &[&str] = &["base", "tiny.en"];

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let functions_port = get("FUNCTIONS_CUSTOMHANDLER_PORT")
            .map(|v| ("FUNCTIONS_CUSTOMHANDLER_PORT", v))
            .or_else(|| get("FUNCTIONS_HTTPWORKER_PORT").map(|v| ("FUNCTIONS_HTTPWORKER_PORT", v)));
        let (listen, under_functions_host) = match functions_port {
            Some((name, value)) => {
                let port = parse(name, &value)?;
                (SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port), true)
            }
            None => {
                let port = match get("PORT") {
                    Some(v) => parse("PORT", &v)?,
                    None => 7071,
                };
                (
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                    false,
                )
            }
        };

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads_per_inference: usize = number_in(&get, "PREPIS_THREADS", 1, AT_LEAST_ONE)?;
        let workers: usize = number_in(
            &get,
            "PREPIS_WORKERS",
            (cores / threads_per_inference).max(1),
            AT_LEAST_ONE,
        )?;
        // No waiting room by default: under overload a chunk is refused in milliseconds rather
        // than queued behind others (bench/results/overload.md); the client sends its audio again.
        let queue: usize = number(&get, "PREPIS_QUEUE", 0)?;
        let isolate_engine = match get("PREPIS_ISOLATION").as_deref() {
            None | Some("process") => true,
            Some("thread") => false,
            Some(other) => {
                return Err(ConfigError {
                    name: "PREPIS_ISOLATION",
                    value: other.to_string(),
                    reason: "process (worker processes, the default) or thread".into(),
                })
            }
        };
        let max_body_bytes: usize = number_in(
            &get,
            "PREPIS_MAX_BODY_BYTES",
            25 * 1024 * 1024,
            AT_LEAST_ONE,
        )?;
        let max_audio_seconds = number_in(&get, "PREPIS_MAX_AUDIO_SECONDS", 300.0, POSITIVE)?;
        let response_seconds = number_in(&get, "PREPIS_RESPONSE_SECONDS", 230.0, POSITIVE)?;
        let shutdown_drain_seconds =
            number_in(&get, "PREPIS_SHUTDOWN_SECONDS", 20.0, (0.0..=3600.0, ""))?;
        let read_timeout_seconds = number_in(
            &get,
            "PREPIS_READ_TIMEOUT_SECONDS",
            60.0,
            (0.1..=3600.0, ""),
        )?;
        let min_window_seconds =
            number_in(&get, "PREPIS_MIN_WINDOW_SECONDS", 10.0, (1.0..=30.0, ""))?;

        let default_language = match get("PREPIS_LANGUAGE") {
            None => None,
            Some(v) if v == "auto" => None,
            Some(v) => {
                let lang = v.to_ascii_lowercase();
                if !crate::asr::is_known_language(&lang) {
                    return Err(ConfigError {
                        name: "PREPIS_LANGUAGE",
                        value: v,
                        reason: "not a Whisper language code (e.g. en, de, fr) or auto".into(),
                    });
                }
                Some(lang)
            }
        };

        let model_dir = get("PREPIS_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let cache = get("PREPIS_CACHE").map(PathBuf::from).unwrap_or_else(|| {
                    let home = get("HOME").unwrap_or_else(|| ".".to_string());
                    PathBuf::from(home).join(".cache").join("prepis")
                });
                cache.join("models")
            });

        let key = |name: &'static str| -> Result<Option<ContextKey>, ConfigError> {
            get(name)
                .map(|v| {
                    ContextKey::from_base64(&v).map_err(|reason| ConfigError {
                        name,
                        value: "(hidden)".into(),
                        reason: format!("{reason}; generate one with `openssl rand -base64 32`"),
                    })
                })
                .transpose()
        };
        let current = key("PREPIS_CONTEXT_KEY")?;
        let context_key_ephemeral = current.is_none();
        let context_keys = ContextKeys {
            current: current.unwrap_or_else(ContextKey::random),
            previous: key("PREPIS_CONTEXT_KEY_PREVIOUS")?,
        };
        let context_ttl_seconds: u64 = number(&get, "PREPIS_CONTEXT_TTL_SECONDS", 12 * 3600)?;
        let max_context_bytes: usize = number(&get, "PREPIS_MAX_CONTEXT_BYTES", 512 * 1024)?;

        let session_ttl_seconds: u64 = number(&get, "PREPIS_SESSION_TTL_SECONDS", 3600)?;
        let defaults = StreamPolicy::default();
        let max_tail_ms = number_in(
            &get,
            "PREPIS_MAX_TAIL_MS",
            defaults.max_tail_ms,
            (2_000..=20_000, ""),
        )?;
        let stream = StreamPolicy {
            guard_ms: number(&get, "PREPIS_GUARD_MS", defaults.guard_ms)?,
            endpoint_silence_ms: number(&get, "PREPIS_ENDPOINT_MS", defaults.endpoint_silence_ms)?,
            pause_commit_ms: number(&get, "PREPIS_PAUSE_COMMIT_MS", defaults.pause_commit_ms)?,
            soft_tail_ms: defaults.soft_tail_ms.min(max_tail_ms * 4 / 5),
            max_tail_ms,
            ..defaults
        };

        let speaker_model = match get("PREPIS_SPEAKER_MODEL").as_deref() {
            Some("off" | "none" | "false") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => Some(
                beside_executable("ge2e.safetensors")
                    .filter(|p| p.is_file())
                    .unwrap_or_else(|| model_dir.join("ge2e.safetensors")),
            ),
        };
        let tracker = crate::speaker::TrackerPolicy::default();
        let speakers = crate::speaker::TrackerPolicy {
            new_speaker_below: number(&get, "PREPIS_SPEAKER_THRESHOLD", tracker.new_speaker_below)?,
            hysteresis: number(&get, "PREPIS_SPEAKER_HYSTERESIS", tracker.hysteresis)?,
            max_speakers: number(&get, "PREPIS_MAX_SPEAKERS", tracker.max_speakers)?,
            merge_above: number(&get, "PREPIS_RELABEL_THRESHOLD", tracker.merge_above)?,
            new_voice_below: number(&get, "PREPIS_SPEAKER_NEW_VOICE", tracker.new_voice_below)?,
            ..tracker
        };
        if !(-1.0..=1.0).contains(&speakers.new_speaker_below)
            || !(-1.0..=1.0).contains(&speakers.merge_above)
            || speakers.max_speakers == 0
        {
            return Err(ConfigError {
                name: "PREPIS_SPEAKER_THRESHOLD",
                value: speakers.new_speaker_below.to_string(),
                reason: "cosine similarities in -1..1 (also PREPIS_RELABEL_THRESHOLD; PREPIS_MAX_SPEAKERS at least 1)".into(),
            });
        }

        Ok(Config {
            listen,
            under_functions_host,
            model: get("PREPIS_MODEL").unwrap_or_else(|| "base".to_string()),
            model_dir,
            threads_per_inference,
            workers,
            queue,
            isolate_engine,
            max_body_bytes,
            max_audio_seconds,
            response_seconds,
            default_language,
            min_window_seconds,
            context_keys,
            context_key_ephemeral,
            context_ttl_seconds,
            max_context_bytes,
            redis_url: get("REDIS_URL"),
            session_ttl_seconds,
            stream,
            speaker_model,
            speakers,
            cors_origins: get("PREPIS_CORS_ORIGINS")
                .unwrap_or_default()
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            api_key: get("PREPIS_API_KEY")
                .filter(|_| !under_functions_host)
                .map(|k| ApiKey::new(k.trim())),
            shutdown_drain_seconds,
            read_timeout_seconds,
            log_filter: get("PREPIS_LOG").unwrap_or_else(|| "info,whisper_rs=warn".to_string()),
        })
    }

    /// Finds the ggml file for `model`: an existing path as given, else
    /// `ggml-<name>.bin` beside the executable (`models/`, the Functions app layout),
    /// then in `model_dir`.
    pub fn resolve_model(&self) -> Result<PathBuf, String> {
        let given = PathBuf::from(&self.model);
        if given.is_file() {
            return Ok(given);
        }
        let file = format!("ggml-{}.bin", self.model);
        let mut candidates: Vec<PathBuf> = beside_executable(&file).into_iter().collect();
        candidates.push(self.model_dir.join(&file));
        candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
            let hint = if KNOWN_MODELS.contains(&self.model.as_str()) {
                format!("run `make model MODEL={}`", self.model)
            } else {
                "set PREPIS_MODEL to a ggml model file".to_string()
            };
            format!(
                "model {:?} not found (looked for {file} beside the handler and in {}): {hint}",
                self.model,
                self.model_dir.display()
            )
        })
    }
}

/// `models/<file>` beside the executable: the Functions app layout (`make package`).
fn beside_executable(file: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("models").join(file))
}

fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError {
        name,
        value: value.to_string(),
        reason: "not a valid number".into(),
    })
}

/// Values a setting may take, and how to say so (empty: "must be between A and B").
type Allowed<T> = (std::ops::RangeInclusive<T>, &'static str);
const AT_LEAST_ONE: Allowed<usize> = (1..=usize::MAX, "must be at least 1");
/// Positive and finite.
const POSITIVE: Allowed<f64> = (
    f64::MIN_POSITIVE..=f64::MAX,
    "must be a positive number of seconds",
);

/// A numeric setting that must lie in `allowed`.
fn number_in<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    (range, rule): Allowed<T>,
) -> Result<T, ConfigError> {
    let value = number(get, name, default)?;
    if range.contains(&value) {
        return Ok(value);
    }
    let reason = if rule.is_empty() {
        format!("must be between {} and {}", range.start(), range.end())
    } else {
        rule.to_string()
    };
    Err(ConfigError {
        name,
        value: value.to_string(),
        reason,
    })
}

fn number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(name) {
        Some(v) => parse(name, &v),
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn standalone_listens_on_all_interfaces_at_port() {
        let c = config(&[("PORT", "8123")]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8123".parse().unwrap());
        assert!(!c.under_functions_host);
        assert_eq!(config(&[]).unwrap().listen.port(), 7071);
    }

    #[test]
    fn functions_host_port_wins_and_binds_loopback() {
        let c = config(&[("PORT", "8123"), ("FUNCTIONS_CUSTOMHANDLER_PORT", "40001")]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:40001".parse().unwrap());
        assert!(c.under_functions_host);
        let legacy = config(&[("FUNCTIONS_HTTPWORKER_PORT", "40002")]).unwrap();
        assert_eq!(legacy.listen.port(), 40002);
    }

    #[test]
    fn the_api_key_guards_standalone_only() {
        assert!(config(&[("PREPIS_API_KEY", "k")])
            .unwrap()
            .api_key
            .is_some());
        assert!(config(&[]).unwrap().api_key.is_none());
        // Function keys guard the routes under the host.
        let hosted = config(&[
            ("PREPIS_API_KEY", "k"),
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "4"),
        ]);
        assert!(hosted.unwrap().api_key.is_none());
    }

    #[test]
    fn rejects_bad_values_naming_the_variable() {
        let err = config(&[("PREPIS_THREADS", "zero")]).unwrap_err();
        assert!(err.to_string().contains("PREPIS_THREADS"));
        assert!(config(&[("PREPIS_WORKERS", "0")]).is_err());
        assert!(config(&[("PREPIS_LANGUAGE", "klingon")]).is_err());
        assert!(config(&[("PREPIS_MAX_AUDIO_SECONDS", "NaN")]).is_err());
        assert!(config(&[("PORT", "70000")]).is_err());
    }

    #[test]
    fn model_dir_follows_the_cache_settings() {
        let dir = |pairs: &[(&str, &str)]| config(pairs).unwrap().model_dir;
        assert_eq!(
            dir(&[("HOME", "/h")]),
            PathBuf::from("/h/.cache/prepis/models")
        );
        assert_eq!(
            dir(&[("HOME", "/h"), ("PREPIS_CACHE", "/c")]),
            PathBuf::from("/c/models")
        );
        assert_eq!(
            dir(&[("PREPIS_CACHE", "/c"), ("PREPIS_MODEL_DIR", "/m")]),
            PathBuf::from("/m")
        );
        assert_eq!(
            dir(&[("HOME", "/h"), ("PREPIS_MODEL_DIR", "")]),
            PathBuf::from("/h/.cache/prepis/models")
        );
    }

    #[test]
    fn context_key_is_parsed_or_ephemeral_and_never_printed() {
        let c = config(&[]).unwrap();
        assert!(c.context_key_ephemeral);
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let c = config(&[("PREPIS_CONTEXT_KEY", key)]).unwrap();
        assert!(!c.context_key_ephemeral);
        assert!(!format!("{c:?}").contains(key));
        let err = config(&[("PREPIS_CONTEXT_KEY", "c2hvcnQ=")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PREPIS_CONTEXT_KEY") && !err.contains("c2hvcnQ"),
            "{err}"
        );
    }

    #[test]
    fn language_auto_means_detect() {
        assert_eq!(
            config(&[("PREPIS_LANGUAGE", "auto")])
                .unwrap()
                .default_language,
            None
        );
        assert_eq!(
            config(&[("PREPIS_LANGUAGE", "DE")])
                .unwrap()
                .default_language
                .as_deref(),
            Some("de")
        );
    }
}
