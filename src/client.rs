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
    mut on_reply: impl FnMut(&ChunkReply),
) -> Result<Vec<ChunkReply>, ClientError> {
    let mut stream = Stream::new(options.clone())?;
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
        let reply = stream.send(&pcm_s16le(chunk), PCM_16K, last)?;
        on_reply(&reply);
        replies.push(reply);
    }
    Ok(replies)
}

/// The media type of 16 kHz mono s16le, what [`pcm_s16le`] makes.
const PCM_16K: &str = "audio/pcm;rate=16000;encoding=s16le";

/// Samples in [-1, 1] as 16-bit little-endian PCM.
fn pcm_s16le(samples: &[f32]) -> Vec<u8> {
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
    next: usize,
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
            next: 0,
        })
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
        let reply = self.post(index, body, content_type, Some(last))?;
        self.context = reply.body["context"].as_str().map(str::to_string);
        self.next += 1;
        Ok(reply)
    }

    /// Chunks sent so far.
    pub fn chunks_sent(&self) -> usize {
        self.next
    }

    /// One whole recording in one request (no stream): what `handler transcribe` sends.
    pub fn transcribe(
        &mut self,
        body: &[u8],
        content_type: &str,
    ) -> Result<ChunkReply, ClientError> {
        self.post(0, body, content_type, None)
    }

    fn post(
        &self,
        index: usize,
        body: &[u8],
        content_type: &str,
        last: Option<bool>,
    ) -> Result<ChunkReply, ClientError> {
        let options = &self.options;
        let mut last_error = String::new();
        for attempt in 1..=options.attempts {
            // A retry may go to another instance: any of them can continue the stream.
            let url = &options.urls[(index + attempt as usize - 1) % options.urls.len()];
            let mut request = self
                .client
                .post(url)
                .header("Content-Type", content_type)
                .body(body.to_vec());
            if let Some(last) = last {
                request = request.query(&[("final", if last { "true" } else { "false" })]);
            }
            if let Some(language) = &options.language {
                request = request.query(&[("language", language)]);
            }
            if !options.speakers {
                request = request.query(&[("diarize", "false")]);
            }
            if let Some(session) = &options.session_id {
                let seq = (index + 1).to_string();
                request = request.query(&[("session_id", session.as_str()), ("seq", seq.as_str())]);
            } else if let Some(context) = &self.context {
                request = request.header("X-Prepis-Context", context);
            }
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
