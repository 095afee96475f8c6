//! The command line: `handler` (serve), `handler stream`, `handler transcribe`,
//! `handler convert-model`. Parsing is clap's; this module turns replies into text, JSON
//! lines, WebVTT or SRT, and feeds live audio from stdin to the streaming client.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use prepis::client::{stream_samples, ChunkReply, ClientError, Stream, StreamOptions, PCM_16K};
use prepis::model::WeightType;

#[derive(Parser)]
#[command(
    name = "handler",
    version,
    about = "prepis: stateless live transcription (Whisper) for Azure Functions and containers",
    long_about = "prepis: stateless live transcription (Whisper) for Azure Functions and containers.\n\n\
        Without a command, serves the API: POST /api/transcribe, GET /api/status, \
        GET /api/openapi.json, the live-captions page at /. It is configured by environment \
        variables (PORT, PREPIS_MODEL, PREPIS_CONTEXT_KEY, REDIS_URL, ...; see README.md).",
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
    fn name(self) -> &'static str {
        match self {
            Encoding::S16le => "s16le",
            Encoding::S16be => "s16be",
            Encoding::F32le => "f32le",
        }
    }

    fn bytes(self) -> usize {
        match self {
            Encoding::F32le => 4,
            _ => 2,
        }
    }
}

fn weight_type(v: &str) -> Result<WeightType, String> {
    WeightType::parse(v).ok_or_else(|| "q8_0, q4_0, f16 or f32".into())
}

fn chunk_seconds(v: &str) -> Result<f64, String> {
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
fn transcribe_url(url: &str) -> String {
    if url.contains("/transcribe") {
        url.to_string()
    } else {
        format!("{}/api/transcribe", url.trim_end_matches('/'))
    }
}

impl ClientArgs {
    fn options(&self) -> StreamOptions {
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

    fn raw_format(&self) -> RawPcm {
        RawPcm {
            rate: self.rate.unwrap_or(16_000),
            channels: self.channels.unwrap_or(1),
            encoding: self.encoding.unwrap_or(Encoding::S16le),
        }
    }

    /// The raw PCM format of a file, if the options say it is one.
    fn raw_file_format(&self) -> Option<RawPcm> {
        (self.rate.is_some() || self.channels.is_some() || self.encoding.is_some())
            .then(|| self.raw_format())
    }
}

/// Raw PCM as it arrives on stdin.
#[derive(Clone, Copy)]
struct RawPcm {
    rate: u32,
    channels: u16,
    encoding: Encoding,
}

impl RawPcm {
    fn media_type(&self) -> String {
        format!(
            "audio/pcm;rate={};channels={};encoding={}",
            self.rate,
            self.channels,
            self.encoding.name()
        )
    }

    fn frame_bytes(&self) -> usize {
        self.encoding.bytes() * self.channels.max(1) as usize
    }
}

pub fn stream(args: StreamArgs) -> Result<(), String> {
    let mut options = args.client.options();
    options.chunk_seconds = args.chunk;
    options.realtime = args.realtime;
    options.session_id = args.session.clone();
    let mut out = Output::new(args.client.format);
    if args.file == "-" {
        return stream_stdin(&args, options, &mut out);
    }
    let bytes = std::fs::read(&args.file).map_err(|e| format!("{}: {e}", args.file))?;
    let audio = decode_local(&bytes, args.client.raw_file_format())
        .map_err(|e| format!("{}: {e}", args.file))?;
    let total = audio.len() as f64 / 16_000.0;
    // A file shows its progress; the unconfirmed words are for live input.
    let progress = std::io::stderr().is_terminal();
    out.live = false;
    let chunk_len = ((args.chunk * 16_000.0) as usize).max(160);
    let chunks = audio.len().div_ceil(chunk_len);
    out.begin();
    stream_samples(&audio, &options, |reply| {
        if progress {
            clear_progress();
        }
        out.reply(reply);
        if progress && reply.chunk + 1 < chunks {
            let done = ((reply.chunk + 1) * chunk_len) as f64 / 16_000.0;
            draw_progress(done.min(total), total);
        }
    })
    .map_err(describe)?;
    if progress {
        clear_progress();
    }
    out.finish();
    Ok(())
}

/// Live audio from stdin: a reader thread takes bytes as they come (so a microphone pipe
/// never overruns while a request is in flight); each chunk goes out once a chunk's worth
/// has arrived, with whatever else has arrived meanwhile, and an empty `final` chunk ends
/// the stream at end of input.
fn stream_stdin(args: &StreamArgs, options: StreamOptions, out: &mut Output) -> Result<(), String> {
    let (sender, receiver) = mpsc::channel::<std::io::Result<Vec<u8>>>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if sender.send(Ok(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = sender.send(Err(e));
                    break;
                }
            }
        }
    });
    let mut pending = Vec::new();
    let mut ended = false;
    // The format: a WAV header if there is one, else the raw format of the options.
    let format = loop {
        if pending.len() >= 4 && !pending.starts_with(b"RIFF") || ended && pending.len() < 4 {
            break args.client.raw_format();
        }
        if let Some(parsed) = wav_header(&pending) {
            let (format, data_start) = parsed?;
            pending.drain(..data_start);
            break format;
        }
        if ended {
            return Err("stdin: the WAV header is cut off".into());
        }
        match receiver.recv() {
            Ok(block) => pending.extend(block.map_err(|e| format!("reading stdin: {e}"))?),
            Err(_) => ended = true,
        }
    };
    let media_type = format.media_type();
    let frame = format.frame_bytes();
    let chunk_bytes = ((args.chunk * format.rate as f64) as usize).max(1) * frame;
    let mut stream = Stream::new(options).map_err(|e| e.to_string())?;
    out.begin();
    loop {
        while !ended && pending.len() < chunk_bytes {
            match receiver.recv() {
                Ok(block) => pending.extend(block.map_err(|e| format!("reading stdin: {e}"))?),
                Err(_) => ended = true,
            }
        }
        // Whatever else is already here goes along (a service slower than real time then
        // gets longer chunks instead of a growing backlog), up to 4 chunks at once.
        while let Ok(block) = receiver.try_recv() {
            pending.extend(block.map_err(|e| format!("reading stdin: {e}"))?);
            if pending.len() >= 4 * chunk_bytes {
                break;
            }
        }
        let take = if ended {
            pending.len() / frame * frame
        } else {
            pending.len().min(4 * chunk_bytes) / frame * frame
        };
        let body: Vec<u8> = pending.drain(..take).collect();
        if ended && body.is_empty() && stream.chunks_sent() > 0 {
            // Nothing more: an empty final chunk commits the words still pending.
            let reply = stream.send(&[], PCM_16K, true).map_err(describe)?;
            out.reply(&reply);
            break;
        }
        if body.is_empty() {
            return Err("stdin: no audio".into());
        }
        // Converted here to 16 kHz mono, what the service would make of it: this client
        // keeps the unconfirmed audio and sends it back, so the context carries none.
        let limits = prepis::audio::DecodeLimits {
            max_seconds: f64::INFINITY,
        };
        let audio = prepis::audio::decode_chunk(&body, Some(&media_type), limits)
            .map_err(|e| format!("stdin: {e}"))?;
        for reply in stream
            .send_samples(&audio.samples, ended)
            .map_err(describe)?
        {
            out.reply(&reply);
        }
        if ended {
            break;
        }
    }
    out.finish();
    Ok(())
}

/// Parses the WAV header at the start of `bytes` (which start with `RIFF`): `None` while
/// more bytes are needed, else the PCM format and where the samples start. A WAV written
/// to a pipe has no real data length: the samples run to the end of input.
fn wav_header(bytes: &[u8]) -> Option<Result<(RawPcm, usize), String>> {
    if bytes.len() < 12 {
        return None;
    }
    if &bytes[8..12] != b"WAVE" {
        return Some(Err("stdin: a RIFF file that is not WAV".into()));
    }
    let mut at = 12;
    let mut format = None;
    loop {
        let header = bytes.get(at..at + 8)?;
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let id = &header[..4];
        if id == b"data" {
            let Some(format) = format else {
                return Some(Err("stdin: WAV data before its fmt chunk".into()));
            };
            return Some(Ok((format, at + 8)));
        }
        let body = bytes.get(at + 8..at + 8 + size)?;
        if id == b"fmt " {
            if body.len() < 16 {
                return Some(Err("stdin: WAV fmt chunk too short".into()));
            }
            let mut tag = u16::from_le_bytes([body[0], body[1]]);
            let channels = u16::from_le_bytes([body[2], body[3]]);
            let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            let bits = u16::from_le_bytes([body[14], body[15]]);
            if tag == 0xFFFE && body.len() >= 26 {
                // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the real tag.
                tag = u16::from_le_bytes([body[24], body[25]]);
            }
            let encoding = match (tag, bits) {
                (1, 16) => Encoding::S16le,
                (3, 32) => Encoding::F32le,
                _ => {
                    return Some(Err(format!(
                    "stdin: WAV with {bits}-bit samples (format {tag}) cannot be streamed live; \
                         send 16-bit PCM or 32-bit float (sox -b 16, ffmpeg -c:a pcm_s16le)"
                )))
                }
            };
            if channels == 0 || rate == 0 {
                return Some(Err("stdin: WAV header with no channels or rate".into()));
            }
            format = Some(RawPcm {
                rate,
                channels,
                encoding,
            });
        }
        at += 8 + size + size % 2;
    }
}

pub fn probe(args: ProbeArgs) -> Result<(), String> {
    let url = args.url.unwrap_or_else(|| {
        let port = ["FUNCTIONS_CUSTOMHANDLER_PORT", "PORT"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|p| !p.is_empty()))
            .unwrap_or_else(|| "7071".into());
        format!("http://127.0.0.1:{port}/api/status?probe=ready")
    });
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(&url).send().map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body: Value = response.json().unwrap_or(Value::Null);
    if status.is_success() && body["ready"] == true {
        Ok(())
    } else {
        Err(format!("{url}: not ready ({status}): {body}"))
    }
}

pub fn transcribe(args: TranscribeArgs) -> Result<(), String> {
    let bytes = if args.file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading stdin: {e}"))?;
        buf
    } else {
        std::fs::read(&args.file).map_err(|e| format!("{}: {e}", args.file))?
    };
    // The service finds the format by its magic bytes; raw PCM is named by the options.
    let media_type = match args.client.raw_file_format() {
        Some(raw) if prepis::audio::sniff(&bytes).is_none() => raw.media_type(),
        _ => "application/octet-stream".to_string(),
    };
    let mut stream = Stream::new(args.client.options()).map_err(|e| e.to_string())?;
    let mut out = Output::new(args.client.format);
    match stream.transcribe(&bytes, &media_type) {
        Err(error) if too_long_for_one_request(&error) => {
            // Too long for one response (or request): streamed instead, the same transcript
            // in chunks.
            eprintln!("prepis: {}; streaming it instead", describe(error));
            let audio = decode_local(&bytes, args.client.raw_file_format())
                .map_err(|e| format!("{}: {e}", args.file))?;
            out.live = false;
            out.begin();
            stream_samples(&audio, &args.client.options(), |reply| out.reply(reply))
                .map_err(describe)?;
        }
        result => {
            let reply = result.map_err(describe)?;
            out.begin();
            out.reply(&reply);
        }
    }
    out.finish();
    Ok(())
}

/// Whether the service refused a whole recording for its length (stream it instead).
fn too_long_for_one_request(error: &ClientError) -> bool {
    match error {
        ClientError::Rejected { body, .. } => serde_json::from_str::<Value>(body).is_ok_and(|v| {
            matches!(
                v["error"]["code"].as_str(),
                Some("response_too_slow" | "audio_too_long")
            )
        }),
        _ => false,
    }
}

/// Decodes a file here, to 16 kHz mono (the service would do the same; sending PCM chunks
/// keeps every chunk decodable on its own).
fn decode_local(bytes: &[u8], raw: Option<RawPcm>) -> Result<Vec<f32>, String> {
    let declared = raw.map(|r| r.media_type());
    let audio = prepis::audio::decode_chunk(
        bytes,
        declared.as_deref(),
        prepis::audio::DecodeLimits {
            max_seconds: 24.0 * 3600.0,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(audio.samples)
}

/// An error as a user reads it: the service's own message where it gave one.
fn describe(error: ClientError) -> String {
    if let ClientError::Rejected { status, body, .. } = &error {
        if let Ok(v) = serde_json::from_str::<Value>(body) {
            if let (Some(code), Some(message)) =
                (v["error"]["code"].as_str(), v["error"]["message"].as_str())
            {
                let hint = if matches!(code, "audio_too_long" | "response_too_slow") {
                    "\n(hint: `handler stream FILE` sends a recording of any length in chunks)"
                } else {
                    ""
                };
                return format!("the service answered {status} {code}: {message}{hint}");
            }
        }
    }
    error.to_string()
}

fn draw_progress(done: f64, total: f64) {
    let width = 30;
    let fraction = if total > 0.0 {
        (done / total).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let filled = (fraction * width as f64).round() as usize;
    eprint!(
        "\r[{}{}] {:3.0}% {} / {}",
        "#".repeat(filled),
        "-".repeat(width - filled),
        fraction * 100.0,
        clock(done),
        clock(total)
    );
    let _ = std::io::stderr().flush();
}

fn clear_progress() {
    eprint!("\r\x1b[K");
}

/// Writes replies in the chosen format as they come.
struct Output {
    format: Format,
    cues: usize,
    /// stdout is a terminal: show the partial text, replaced by the next reply.
    live: bool,
    partial_shown: bool,
    out: std::io::Stdout,
}

impl Output {
    fn new(format: Format) -> Output {
        let out = std::io::stdout();
        Output {
            format,
            cues: 0,
            live: format == Format::Text && out.is_terminal(),
            partial_shown: false,
            out,
        }
    }

    fn begin(&mut self) {
        if self.format == Format::Vtt {
            let _ = writeln!(self.out, "WEBVTT\n");
        }
    }

    fn reply(&mut self, reply: &ChunkReply) {
        let mut out = self.out.lock();
        if self.partial_shown {
            let _ = write!(out, "\r\x1b[K");
            self.partial_shown = false;
        }
        if self.format == Format::Json {
            let _ = writeln!(out, "{}", reply.body);
            let _ = out.flush();
            return;
        }
        for segment in reply.body["results"].as_array().into_iter().flatten() {
            let start = segment["start"].as_f64().unwrap_or(0.0);
            let end = segment["end"].as_f64().unwrap_or(start);
            let text = segment["text"].as_str().unwrap_or("").trim();
            let speaker = segment["speaker"].as_u64();
            self.cues += 1;
            let _ = match self.format {
                Format::Text => {
                    let who = speaker.map(|s| format!("S{s}: ")).unwrap_or_default();
                    writeln!(out, "[{} - {}] {who}{text}", clock(start), clock(end))
                }
                Format::Vtt => {
                    let voice = speaker
                        .map(|s| format!("<v Speaker {s}>"))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{}\n{} --> {}\n{voice}{}\n",
                        self.cues,
                        cue_time(start, '.'),
                        cue_time(end, '.'),
                        escape_vtt(text)
                    )
                }
                Format::Srt => {
                    let who = speaker
                        .map(|s| format!("Speaker {s}: "))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{}\n{} --> {}\n{who}{text}\n",
                        self.cues,
                        cue_time(start, ','),
                        cue_time(end, ',')
                    )
                }
                Format::Json => unreachable!(),
            };
        }
        if self.live {
            if let Some(partial) = reply.body["partial"]["text"]
                .as_str()
                .filter(|t| !t.is_empty())
            {
                // One terminal line, grey; the next reply replaces it.
                let chars: Vec<char> = partial.trim().chars().collect();
                let keep = chars
                    .len()
                    .saturating_sub(terminal_columns().saturating_sub(2));
                let shown: String = chars[keep..].iter().collect();
                let _ = write!(out, "\x1b[2m{shown}\x1b[0m");
                self.partial_shown = true;
            }
        }
        let _ = out.flush();
    }

    fn finish(&mut self) {
        if self.partial_shown {
            let _ = write!(self.out, "\r\x1b[K");
        }
        let _ = self.out.flush();
    }
}

fn terminal_columns() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(80)
}

/// `mm:ss.mmm` (`h:mm:ss.mmm` from an hour on).
fn clock(seconds: f64) -> String {
    let total_ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (
        total_ms / 3_600_000,
        total_ms / 60_000 % 60,
        total_ms / 1000 % 60,
        total_ms % 1000,
    );
    if h > 0 {
        format!("{h}:{m:02}:{s:02}.{ms:03}")
    } else {
        format!("{m:02}:{s:02}.{ms:03}")
    }
}

/// `hh:mm:ss.mmm` (WebVTT) or `hh:mm:ss,mmm` (SRT).
fn cue_time(seconds: f64, separator: char) -> String {
    let total_ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        total_ms / 3_600_000,
        total_ms / 60_000 % 60,
        total_ms / 1000 % 60,
        total_ms % 1000
    )
}

fn escape_vtt(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
