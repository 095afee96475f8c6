//! The streaming client: uploads audio as real-time-sized chunks, echoes the context token,
//! and follows the client contract (retry a failed chunk with the same context — safe, as
//! responses are deterministic —, honour `Retry-After` on 429/503). Used by `handler
//! stream`, the tests and the benchmarks.

use std::time::{Duration, Instant};

use serde_json::Value;

/// How to stream.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Service URLs (`…/api/transcribe`); chunks go round-robin over them.
    pub urls: Vec<String>,
    /// Function key (`x-functions-key`) or API key, if the service needs one.
    pub key: Option<String>,
    /// Chunk length in seconds.
    pub chunk_seconds: f64,
    /// Wait for each chunk's duration before sending it, as a live source would.
    pub realtime: bool,
    /// Language to force.
    pub language: Option<String>,
    /// Attempts per chunk before giving up.
    pub attempts: u32,
    /// Redis mode: keep the stream in this session instead of the context token.
    pub session_id: Option<String>,
    /// Speaker labels (`diarize=false` when off).
    pub speakers: bool,
    /// Keep the stream's unconfirmed audio here and send it back with each chunk
    /// (`keep_audio`), so that the context token carries no audio (16 kHz PCM chunks only).
    pub keep_audio: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            urls: vec!["http://127.0.0.1:7071/api/transcribe".into()],
            key: None,
            chunk_seconds: 2.0,
            realtime: false,
            language: None,
            attempts: 20,
            session_id: None,
            speakers: true,
            keep_audio: true,
        }
    }
}

/// What went wrong while streaming.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("chunk {chunk}: the service answered {status}: {body}")]
    Rejected {
        chunk: usize,
        status: u16,
        body: String,
    },
    #[error("chunk {chunk}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        chunk: usize,
        attempts: u32,
        last: String,
    },
    #[error("chunk {chunk}: something in front of the service (not prepis) refused the request with {status}: {body}")]
    FrontDoor {
        chunk: usize,
        status: u16,
        body: String,
    },
    #[error("chunk {chunk}: the service's speech engine crashed on it: {message}")]
    Crashed { chunk: usize, message: String },
    #[error("HTTP client: {0}")]
    Http(String),
}

/// One chunk's outcome.
#[derive(Debug, Clone)]
pub struct ChunkReply {
    /// Index of the chunk in the stream.
    pub chunk: usize,
    /// The response body.
    pub body: Value,
    /// Client-side time from sending to the answer (the last attempt).
    pub latency: Duration,
    /// Attempts it took.
    pub attempts: u32,
}

/// Streams 16 kHz mono samples; calls `on_reply` after each chunk; returns every reply.
pub fn stream_samples(
    samples: &[f32],
    options: &StreamOptions,
    on_reply: impl FnMut(&ChunkReply),
) -> Result<Vec<ChunkReply>, ClientError> {
    let mut stream = Stream::new(options.clone())?;
    stream_with(&mut stream, samples, options, on_reply)
}

/// [`stream_samples`] on a stream the caller keeps (to ask for its final labels after).
pub fn stream_with(
    stream: &mut Stream,
    samples: &[f32],
    options: &StreamOptions,
    mut on_reply: impl FnMut(&ChunkReply),
) -> Result<Vec<ChunkReply>, ClientError> {
    let chunk_len = ((options.chunk_seconds * 16_000.0) as usize).max(160);
    let chunks: Vec<&[f32]> = samples.chunks(chunk_len).collect();
    let started = Instant::now();
    let mut replies = Vec::with_capacity(chunks.len());
    for (index, chunk) in chunks.iter().enumerate() {
        if options.realtime {
            let due = Duration::from_secs_f64((index + 1) as f64 * chunk_len as f64 / 16_000.0);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let last = index + 1 == chunks.len();
        for reply in stream.send_samples(chunk, last)? {
            on_reply(&reply);
            replies.push(reply);
        }
    }
    Ok(replies)
}

/// The media type of 16 kHz mono s16le, what [`pcm_s16le`] makes.
pub const PCM_16K: &str = "audio/pcm;rate=16000;encoding=s16le";

/// Shortest chunk a refused one is split into.
const MIN_SPLIT_SAMPLES: usize = 4_000;

/// Samples in [-1, 1] as 16-bit little-endian PCM.
pub fn pcm_s16le(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect()
}

/// One stream in progress: sends chunks in order, carrying the context token (or the
/// session's `seq`) from each reply to the next request.
pub struct Stream {
    client: reqwest::blocking::Client,
    options: StreamOptions,
    context: Option<String>,
    /// The unconfirmed audio the service asked back (16-bit PCM), when the client keeps it.
    tail: Option<Vec<u8>>,
    next: usize,
    /// Chunks skipped because they crashed the engine (the session's `seq` counts only
    /// the chunks it took).
    skipped: usize,
}

/// What one request carries besides the audio.
struct Extras<'a> {
    last: Option<bool>,
    tail: Option<&'a [u8]>,
    keep_audio: bool,
}

impl Stream {
    pub fn new(options: StreamOptions) -> Result<Stream, ClientError> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(240))
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(Stream {
            client,
            options,
            context: None,
            tail: None,
            next: 0,
            skipped: 0,
        })
    }

    /// Sends the next chunk of 16 kHz samples. When something in front of the service
    /// refuses it (a body limit, say), it goes again as two shorter chunks. A chunk that
    /// crashes the service's engine is skipped with a warning (never sent again: it would
    /// crash the next instance too) and the stream goes on from the context it had.
    pub fn send_samples(
        &mut self,
        samples: &[f32],
        last: bool,
    ) -> Result<Vec<ChunkReply>, ClientError> {
        match self.send(&pcm_s16le(samples), PCM_16K, last) {
            Err(ClientError::Crashed { chunk, .. }) => {
                eprintln!(
                    "prepis: warning: chunk {} ({:.1} s of audio) crashed the service's speech engine; it is skipped and the stream goes on",
                    chunk + 1,
                    samples.len() as f64 / 16_000.0
                );
                if last && (self.context.is_some() || self.options.session_id.is_some()) {
                    // The words still pending are committed by an empty last chunk.
                    return self.send(&[], PCM_16K, true).map(|reply| vec![reply]);
                }
                Ok(Vec::new())
            }
            Err(ClientError::FrontDoor { status, .. })
                if samples.len() >= 2 * MIN_SPLIT_SAMPLES =>
            {
                eprintln!(
                    "prepis: something in front of the service refused a {:.1} s chunk ({status}); sending it as two shorter ones",
                    samples.len() as f64 / 16_000.0
                );
                let (first, second) = samples.split_at(samples.len() / 2);
                let mut replies = self.send_samples(first, false)?;
                replies.extend(self.send_samples(second, last)?);
                Ok(replies)
            }
            other => other.map(|reply| vec![reply]),
        }
    }

    /// Sends the next chunk (`content_type` names its format; an empty `body` may end the
    /// stream with `last`), retrying as the client contract says; returns the reply.
    pub fn send(
        &mut self,
        body: &[u8],
        content_type: &str,
        last: bool,
    ) -> Result<ChunkReply, ClientError> {
        let index = self.next;
        let keeps = self.options.keep_audio
            && self.options.session_id.is_none()
            && (content_type == PCM_16K || body.is_empty());
        let extras = Extras {
            last: Some(last),
            tail: self.tail.as_deref(),
            keep_audio: keeps && self.context.is_none(),
        };
        let reply = match self.post(index, body, content_type, &extras) {
            Err(crashed @ ClientError::Crashed { .. }) => {
                self.next += 1;
                self.skipped += 1;
                return Err(crashed);
            }
            other => other?,
        };
        self.context = reply.body["context"].as_str().map(str::to_string);
        // The service says how much of the audio sent so far it needs again.
        self.tail = reply.body["stream"]["tail_samples"].as_u64().map(|n| {
            let mut sent = self.tail.take().unwrap_or_default();
            sent.extend_from_slice(body);
            let keep = (2 * n as usize).min(sent.len());
            sent.split_off(sent.len() - keep)
        });
        self.next += 1;
        Ok(reply)
    }

    /// The final speaker labels of the whole stream: the segments of `replies` labelled
    /// again at once (a Redis session's from the session, a token-mode stream's from the
    /// voiceprints its replies carried and its last token). The answer is
    /// `{"labels": "final", "results", "text"}`.
    pub fn relabel(&self, replies: &[ChunkReply]) -> Result<Value, ClientError> {
        let url = &self.options.urls[0];
        let request = match &self.options.session_id {
            Some(session) => self
                .client
                .get(url)
                .query(&[("session_id", session.as_str()), ("relabel", "true")]),
            None => {
                let results: Vec<&Value> = replies
                    .iter()
                    .flat_map(|r| r.body["results"].as_array().into_iter().flatten())
                    .collect();
                // The last token brings the stream's own speakers.
                self.client
                    .post(url)
                    .query(&[("relabel", "true")])
                    .json(&serde_json::json!({ "results": results, "context": self.context }))
            }
        };
        let request = match &self.options.key {
            Some(key) => request
                .header("x-functions-key", key)
                .header("X-Api-Key", key),
            None => request,
        };
        let response = request
            .send()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        if status != 200 {
            return Err(ClientError::Rejected {
                chunk: self.next,
                status,
                body: text,
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Http(e.to_string()))
    }

    /// Chunks sent so far.
    pub fn chunks_sent(&self) -> usize {
        self.next
    }

    /// Chunks skipped because they crashed the engine.
    pub fn chunks_skipped(&self) -> usize {
        self.skipped
    }

    /// One whole recording in one request (no stream): what `handler transcribe` sends.
    pub fn transcribe(
        &mut self,
        body: &[u8],
        content_type: &str,
    ) -> Result<ChunkReply, ClientError> {
        let extras = Extras {
            last: None,
            tail: None,
            keep_audio: false,
        };
        self.post(0, body, content_type, &extras)
    }

    /// One request, retried as the client contract says. Everything travels in a
    /// multipart body (the context token too: headers are limited at every front door).
    fn post(
        &self,
        index: usize,
        body: &[u8],
        content_type: &str,
        extras: &Extras,
    ) -> Result<ChunkReply, ClientError> {
        let options = &self.options;
        let mut last_error = String::new();
        for attempt in 1..=options.attempts {
            // A retry may go to another instance: any of them can continue the stream.
            let url = &options.urls[(index + attempt as usize - 1) % options.urls.len()];
            let audio = reqwest::blocking::multipart::Part::bytes(body.to_vec())
                .file_name("chunk")
                .mime_str(content_type)
                .map_err(|e| ClientError::Http(e.to_string()))?;
            let mut form = reqwest::blocking::multipart::Form::new().part("audio_file", audio);
            if let Some(last) = extras.last {
                form = form.text("final", if last { "true" } else { "false" });
            }
            if let Some(language) = &options.language {
                form = form.text("language", language.clone());
            }
            if !options.speakers {
                form = form.text("diarize", "false");
            }
            if extras.keep_audio {
                form = form.text("keep_audio", "true");
            }
            if let Some(session) = &options.session_id {
                form = form
                    .text("session_id", session.clone())
                    .text("seq", (index - self.skipped + 1).to_string());
            } else if let Some(context) = &self.context {
                form = form.text("context", context.clone());
            }
            if let Some(tail) = extras.tail {
                form = form.part(
                    "tail",
                    reqwest::blocking::multipart::Part::bytes(tail.to_vec()).file_name("tail"),
                );
            }
            let mut request = self.client.post(url).multipart(form);
            if let Some(key) = &options.key {
                // A function key under the Functions host, the API key of a container.
                request = request
                    .header("x-functions-key", key)
                    .header("X-Api-Key", key);
            }
            let sent = Instant::now();
            match request.send() {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    let text = response.text().unwrap_or_default();
                    if status == 200 {
                        let body = serde_json::from_str(&text)
                            .map_err(|e| ClientError::Http(e.to_string()))?;
                        return Ok(ChunkReply {
                            chunk: index,
                            body,
                            latency: sent.elapsed(),
                            attempts: attempt,
                        });
                    }
                    let from_prepis = serde_json::from_str::<Value>(&text)
                        .is_ok_and(|v| v["error"]["code"].is_string());
                    let error = serde_json::from_str::<Value>(&text).unwrap_or_default();
                    if error["error"]["code"] == "engine_crashed" {
                        // Not retried: the same audio would crash the next instance too.
                        return Err(ClientError::Crashed {
                            chunk: index,
                            message: error["error"]["message"].as_str().unwrap_or("").into(),
                        });
                    }
                    if matches!(status, 413 | 414 | 431) && !from_prepis {
                        return Err(ClientError::FrontDoor {
                            chunk: index,
                            status,
                            body: text,
                        });
                    }
                    if status == 429 || status == 503 || status >= 500 {
                        last_error = format!("{status}: {text}");
                        std::thread::sleep(Duration::from_secs_f64(
                            retry_after.unwrap_or(0.5).clamp(0.05, 30.0),
                        ));
                        continue;
                    }
                    return Err(ClientError::Rejected {
                        chunk: index,
                        status,
                        body: text,
                    });
                }
                Err(e) => {
                    last_error = e.to_string();
                    std::thread::sleep(backoff(attempt));
                }
            }
        }
        Err(ClientError::GaveUp {
            chunk: index,
            attempts: options.attempts,
            last: last_error,
        })
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(6)).min(2_000))
}

/// The full transcript of a stream: the texts of every reply's `results`, in order.
pub fn transcript(replies: &[ChunkReply]) -> String {
    replies
        .iter()
        .flat_map(|r| r.body["results"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["text"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join(" ")
}
