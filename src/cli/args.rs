//! The command line's arguments (clap): the subcommands and their options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::raw::RawPcm;
use prepis::client::StreamOptions;
use prepis::convert::WeightType;

#[derive(Parser)]
#[command(
    name = "handler",
    version,
    about = "prepis: stateless live transcription (Whisper) for Azure Functions and containers",
    long_about = "prepis: stateless live transcription (Whisper) for Azure Functions and containers.\n\n\
        Without a command, serves the API: POST /api/transcribe, GET /api/status, \
        GET /api/openapi.json, the live-captions page at /. It is configured by environment \
        variables (PORT, PREPIS_MODEL, PREPIS_CONTEXT_KEY, REDIS_URL, ...; see docs/operations.md).",
    after_help = "Examples:\n  \
        handler                                             serve on $PORT (default 7071)\n  \
        handler transcribe meeting.mp3 --format srt > meeting.srt\n  \
        handler stream lecture.wav --url https://app.azurewebsites.net --key $KEY\n  \
        arecord -f S16_LE -r 16000 -c 1 | handler stream -   live captions from the microphone\n  \
        ffmpeg -i talk.mkv -f wav - | handler stream - --format vtt"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the API (the default; what the Functions host and containers run).
    Serve,
    /// Stream audio to the service in chunks, as a live client does, and print the
    /// transcript as it becomes final.
    ///
    /// FILE is any format the service reads (WAV, FLAC, MP3, Ogg/WebM Opus, M4A), decoded
    /// here and sent as 16 kHz PCM chunks; a progress bar shows on a terminal. `-` reads
    /// live audio from stdin: WAV (16-bit or float, as `arecord`, `sox -t wav -` and
    /// `ffmpeg -f wav -` write it) or raw PCM (`--rate`, `--channels`, `--encoding`);
    /// chunks go out as the audio arrives, and on a terminal the unconfirmed words show in
    /// grey until they are final.
    Stream(StreamArgs),
    /// Transcribe a whole file in one request (up to the service's PREPIS_MAX_AUDIO_SECONDS,
    /// 300 s by default; use `stream` for longer recordings).
    Transcribe(TranscribeArgs),
    /// Convert a CTranslate2 ("faster-whisper") Whisper directory to the ggml file the
    /// service loads.
    ConvertModel(ConvertArgs),
    /// Exit 0 when the service on this machine can serve requests, 1 otherwise: a health
    /// check for images without curl (the Dockerfile's HEALTHCHECK).
    Probe(ProbeArgs),
    /// The engine host the server starts for its worker processes (not for users).
    #[command(hide = true)]
    EngineHost(EngineHostArgs),
}

#[derive(Args)]
pub struct EngineHostArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub threads: usize,
    #[arg(long)]
    pub min_window_seconds: f64,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// The status URL; by default the local service on $PORT (or
    /// FUNCTIONS_CUSTOMHANDLER_PORT, or 7071).
    #[arg(long)]
    pub url: Option<String>,
}

/// What both client commands take.
#[derive(Args)]
pub struct ClientArgs {
    /// The service: a base URL (http://host:7071) or the full transcribe URL; several,
    /// comma-separated, are used round-robin (any instance continues any stream).
    #[arg(long, env = "PREPIS_URL", default_value = "http://127.0.0.1:7071")]
    pub url: String,
    /// Function key (Functions host) or API key (PREPIS_API_KEY of a container).
    #[arg(long, env = "PREPIS_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Language code (en, de, ...); detected when absent.
    #[arg(long)]
    pub language: Option<String>,
    /// Output: readable text, JSON lines (one response per line), WebVTT or SRT.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// No speaker labels (skips the speaker encoder).
    #[arg(long)]
    pub no_speakers: bool,
    /// Let the service carry the stream's unconfirmed audio in the context token (larger
    /// tokens) instead of keeping it here and sending it back with each chunk.
    #[arg(long)]
    pub no_keep_audio: bool,
    /// Raw PCM input: sample rate in Hz [default: 16000] (WAV and other containers carry
    /// their own). Live audio on stdin is raw PCM unless it starts with a WAV header; a file
    /// is read as raw PCM when one of --rate, --channels, --encoding is given.
    #[arg(long)]
    pub rate: Option<u32>,
    /// Raw PCM input: channels [default: 1].
    #[arg(long)]
    pub channels: Option<u16>,
    /// Raw PCM input: sample encoding [default: s16le].
    #[arg(long, value_enum)]
    pub encoding: Option<Encoding>,
}

#[derive(Args)]
pub struct StreamArgs {
    /// Audio file, or `-` for live audio on stdin.
    pub file: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Seconds of audio per chunk.
    #[arg(long, default_value_t = 2.0, value_parser = chunk_seconds)]
    pub chunk: f64,
    /// Send a file's chunks at the pace of real time, as a live source would.
    #[arg(long)]
    pub realtime: bool,
    /// Keep the stream in this Redis session (service with REDIS_URL) instead of the
    /// context token; the transcript can then be read with GET ?session_id=.
    #[arg(long)]
    pub session: Option<String>,
    /// At the end, label the speakers again over the whole stream (final labels) and
    /// print the transcript with them (JSON: one more line, `"labels": "final"`).
    #[arg(long)]
    pub relabel: bool,
}

#[derive(Args)]
pub struct TranscribeArgs {
    /// Audio file, or `-` for stdin.
    pub file: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// The CTranslate2 model directory (model.bin, config.json, tokenizer.json).
    pub ct2_dir: PathBuf,
    /// The ggml file to write.
    pub out: PathBuf,
    /// Weight precision: q8_0, q4_0, f16 or f32.
    #[arg(long = "type", default_value = "q8_0", value_parser = weight_type)]
    pub weight_type: WeightType,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Vtt,
    Srt,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    S16le,
    S16be,
    F32le,
}

impl Encoding {
    pub(super) fn name(self) -> &'static str {
        match self {
            Encoding::S16le => "s16le",
            Encoding::S16be => "s16be",
            Encoding::F32le => "f32le",
        }
    }

    pub(super) fn bytes(self) -> usize {
        match self {
            Encoding::F32le => 4,
            _ => 2,
        }
    }
}

pub(super) fn weight_type(v: &str) -> Result<WeightType, String> {
    WeightType::parse(v).ok_or_else(|| "q8_0, q4_0, f16 or f32".into())
}

pub(super) fn chunk_seconds(v: &str) -> Result<f64, String> {
    let seconds: f64 = v
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{v:?} is not a number of seconds"))?;
    if (0.1..=30.0).contains(&seconds) {
        Ok(seconds)
    } else {
        Err("between 0.1 and 30 seconds".into())
    }
}

/// Accepts a base URL (`http://host:7071`) or the full transcribe URL.
pub(super) fn transcribe_url(url: &str) -> String {
    if url.contains("/transcribe") {
        url.to_string()
    } else {
        format!("{}/api/transcribe", url.trim_end_matches('/'))
    }
}

impl ClientArgs {
    pub(super) fn options(&self) -> StreamOptions {
        StreamOptions {
            urls: self
                .url
                .split(',')
                .map(|u| transcribe_url(u.trim()))
                .collect(),
            key: self.key.clone(),
            language: self.language.clone(),
            speakers: !self.no_speakers,
            keep_audio: !self.no_keep_audio,
            ..StreamOptions::default()
        }
    }

    pub(super) fn raw_format(&self) -> RawPcm {
        RawPcm {
            rate: self.rate.unwrap_or(16_000),
            channels: self.channels.unwrap_or(1),
            encoding: self.encoding.unwrap_or(Encoding::S16le),
        }
    }

    /// The raw PCM format of a file, if the options say it is one.
    pub(super) fn raw_file_format(&self) -> Option<RawPcm> {
        (self.rate.is_some() || self.channels.is_some() || self.encoding.is_some())
            .then(|| self.raw_format())
    }
}
