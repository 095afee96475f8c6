//! The command line: `handler` (serve), `handler stream`, `handler transcribe`,
//! `handler convert-model`. Parsing is clap's; this module turns replies into text, JSON
//! lines, WebVTT or SRT, and feeds live audio from stdin to the streaming client.

use std::io::{IsTerminal, Read};
use std::sync::mpsc;

use serde_json::Value;

use prepis::client::{stream_with, ChunkReply, ClientError, Stream, StreamOptions, PCM_16K};

mod args;
mod output;
mod raw;

pub use args::*;
use output::{clear_progress, draw_progress, Output};
use raw::{wav_header, RawPcm};

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
    let mut stream = Stream::new(options.clone()).map_err(|e| e.to_string())?;
    out.begin();
    let replies = stream_with(&mut stream, &audio, &options, |reply| {
        if progress {
            clear_progress();
        }
        if live_output(&args, &out) {
            out.reply(reply);
        }
        if progress && reply.chunk + 1 < chunks {
            let done = ((reply.chunk + 1) * chunk_len) as f64 / 16_000.0;
            draw_progress(done.min(total), total);
        }
    })
    .map_err(describe)?;
    if progress {
        clear_progress();
    }
    final_labels(&args, &stream, &replies, &mut out)?;
    out.finish();
    Ok(())
}

/// Whether each reply is printed as it comes: not when `--relabel` prints the transcript
/// at the end instead (JSON lines print both).
fn live_output(args: &StreamArgs, out: &Output) -> bool {
    !args.relabel || out.is_json()
}

/// `--relabel`: the whole transcript with its final speaker labels.
fn final_labels(
    args: &StreamArgs,
    stream: &Stream,
    replies: &[ChunkReply],
    out: &mut Output,
) -> Result<(), String> {
    if !args.relabel {
        return Ok(());
    }
    let body = stream.relabel(replies).map_err(describe)?;
    out.reply(&ChunkReply {
        chunk: replies.len(),
        body,
        latency: std::time::Duration::ZERO,
        attempts: 1,
    });
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
    let mut replies = Vec::new();
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
            if live_output(args, out) {
                out.reply(&reply);
            }
            replies.push(reply);
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
            if live_output(args, out) {
                out.reply(&reply);
            }
            replies.push(reply);
        }
        if ended {
            break;
        }
    }
    final_labels(args, &stream, &replies, out)?;
    out.finish();
    Ok(())
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
            let options = args.client.options();
            let mut streamed = Stream::new(options.clone()).map_err(|e| e.to_string())?;
            let replies = stream_with(&mut streamed, &audio, &options, |_| {}).map_err(describe)?;
            // The same answer as one request gives: one transcript with final speaker labels
            // (the stream relabelled at its end); the replies as they came when there are
            // no voiceprints to relabel (speakers off) or the relabel failed.
            match streamed.relabel(&replies) {
                Ok(body) => out.reply(&ChunkReply {
                    chunk: replies.len(),
                    body,
                    latency: std::time::Duration::ZERO,
                    attempts: 1,
                }),
                Err(e) => {
                    if !args.client.no_speakers {
                        eprintln!(
                            "prepis: no final speaker labels ({}); live labels kept",
                            describe(e)
                        );
                    }
                    replies.iter().for_each(|reply| out.reply(reply));
                }
            }
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
