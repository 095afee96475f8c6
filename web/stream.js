// The streaming client: an ordered queue of chunks, sent one at a time with the stream's
// context token, in a multipart body (headers are limited at every front door). A chunk is
// retried (same body, same context: the reply is the same) until it is answered: network
// errors and 5xx with backoff, 429/503 after the server's Retry-After. Recording goes on
// meanwhile; chunks wait in the queue.
//
// Once the stream is over, `finalLabels()` asks for the speakers found again over the whole
// stream (the live ones were decided chunk by chunk, from the past only).
//
// For 16 kHz PCM chunks the page keeps the stream's unconfirmed audio itself (keep_audio)
// and sends it back as field `tail` with the next chunk, as much as the last reply's
// `stream.tail_samples` says: the token then carries no audio and stays small.

import { PCM_TYPE } from './capture.js';

const MAX_BACKOFF_MS = 4000;
/** A PCM chunk refused by a front door is split down to this many bytes (0.25 s). */
const MIN_SPLIT_BYTES = 8000;

export class StreamClient {
  /**
   * @param {object} o
   * @param {string} o.api           base URL of the service ('' = this origin)
   * @param {string} [o.language]    'auto' or a language code
   * @param {string} [o.apiKey]      the service's API key, when it needs one
   * @param {(reply: object, chunk: object) => void} o.onReply
   * @param {(message: string|null) => void} o.onProblem  a plain-words problem, null when over
   * @param {(done: number, total: number) => void} [o.onProgress]
   */
  constructor(o) {
    Object.assign(this, o);
    this.language = o.language || 'auto';
    this.onProgress = o.onProgress || (() => {});
    this.queue = [];
    this.context = null;
    /** The unconfirmed audio the service asked back (16-bit PCM bytes), when kept here. */
    this.tail = null;
    this.running = false;
    this.sent = 0;
    this.queued = 0;
    this.closed = false;
    this.idle = Promise.resolve();
    /** Seconds of audio before the current service stream (after a restarted stream). */
    this.offset = 0;
    this.heard = 0;
    /** Every final segment's times and voiceprint, for the final speaker labels. */
    this.voiceprints = [];
  }

  /** Queues a chunk: `body` (Blob/ArrayBuffer), its media type, and when its audio ended. */
  push(body, type, { last = false, capturedAt = performance.now() } = {}) {
    if (this.closed) throw new Error('the stream has ended');
    this.closed = last;
    this.queue.push({ body, type, last, capturedAt });
    this.queued += 1;
    this.onProgress(this.sent, this.queued);
    if (!this.running) this.idle = this.drain();
    return this.idle;
  }

  /** Resolves once every queued chunk is answered. */
  finished() {
    return this.idle;
  }

  async drain() {
    this.running = true;
    try {
      while (this.queue.length) {
        const chunk = this.queue[0];
        let reply = null;
        try {
          reply = await this.send(chunk);
        } catch (e) {
          if (e instanceof ChunkTooLarge) {
            // Sent again as two halves, in its place in the queue.
            this.queue.splice(0, 1, ...halves(chunk));
            this.queued += 1;
            continue;
          }
          if (!(e instanceof ChunkRefused)) throw e;
          // A refused chunk (damaged audio, say, or audio that crashed the engine) is
          // skipped: the stream goes on from the context it had, and nothing already
          // transcribed is lost. A skipped last chunk is followed by an empty one, which
          // commits the words still pending.
          this.problem(e.message, true);
          // What follows keeps its place in the recording (and the heard counter goes on).
          if (e instanceof ChunkSkipped) this.offset += seconds(chunk);
          if (chunk.last && this.context) {
            this.queue.splice(1, 0, { ...chunk, body: new ArrayBuffer(0) });
            this.queued += 1;
          }
        }
        this.queue.shift();
        this.sent += 1;
        this.onProgress(this.sent, this.queued);
        if (reply) {
          this.context = reply.context ?? this.context;
          this.tail = keptTail(this.tail, chunk, reply.stream?.tail_samples);
          shift(reply, this.offset);
          this.heard = this.offset + (reply.stream?.received_until ?? 0);
          for (const { start, end, voiceprint, voice_ms } of reply.results || []) {
            this.voiceprints.push({ start, end, voiceprint, voice_ms });
          }
          this.onReply(reply, chunk);
        }
      }
    } finally {
      this.running = false;
    }
  }

  /**
   * The final speaker labels, once the stream is over: the service labels every segment
   * again from their voiceprints at once (`POST /api/transcribe?relabel=true` with the last
   * token, which brings the stream's speakers). Resolves to one speaker number (or null) per
   * segment received, in order; to null when there is nothing to relabel or the service
   * could not (the live labels then stand).
   */
  async finalLabels() {
    if (!this.voiceprints.some((s) => s.voiceprint)) return null;
    const headers = { 'Content-Type': 'application/json' };
    if (this.apiKey) headers['X-Api-Key'] = this.apiKey;
    const body = JSON.stringify({ results: this.voiceprints, context: this.context ?? undefined });
    for (let attempt = 1; attempt <= 3; attempt += 1) {
      try {
        const response = await fetch(`${this.api}/api/transcribe?relabel=true`, { method: 'POST', headers, body });
        const reply = await response.json().catch(() => ({}));
        if (response.ok && reply.results?.length === this.voiceprints.length) {
          return reply.results.map((s) => s.speaker ?? null);
        }
        if (response.status < 500 && response.status !== 429) {
          console.warn('prepis: no final speaker labels:', reply.error?.message || response.status);
          return null;
        }
      } catch {
        // The service can't be reached: tried again below.
      }
      await sleep(500 * attempt);
    }
    return null;
  }

  /** Reports a problem; a transient one (retrying) is cleared by the next success. */
  problem(message, lasting = false) {
    this.transient = Boolean(message) && !lasting;
    this.onProblem(message);
  }

  /** Sends one chunk until it is answered, or refused (4xx: retrying can't help). */
  async send(chunk) {
    let backoff = 250;
    for (let attempt = 1; ; attempt += 1) {
      const form = new FormData();
      form.append('audio_file', new Blob([chunk.body], { type: chunk.type }), 'chunk');
      form.append('language', this.language);
      form.append('final', String(chunk.last));
      if (this.context) form.append('context', this.context);
      else if (chunk.type === PCM_TYPE) form.append('keep_audio', 'true');
      if (this.context && this.tail) form.append('tail', new Blob([this.tail]), 'tail');
      const headers = {};
      if (this.apiKey) headers['X-Api-Key'] = this.apiKey;
      let response;
      try {
        response = await fetch(`${this.api}/api/transcribe`, { method: 'POST', headers, body: form });
      } catch {
        this.problem(`The service can't be reached; retrying (attempt ${attempt}). Recording continues.`);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        continue;
      }
      const reply = await response.json().catch(() => ({}));
      if (response.ok) {
        if (this.transient) this.problem(null);
        return reply;
      }
      const status = response.status;
      if (reply.error?.code === 'engine_crashed') {
        // Never sent again: the same audio would crash the next instance too.
        throw new ChunkSkipped(seconds(chunk));
      }
      if (status === 429 || status === 503 || status >= 500) {
        const after = Number(response.headers.get('Retry-After'));
        const wait = Number.isFinite(after) && after > 0 ? after * 1000 : backoff;
        this.problem(`The service is busy (${status}); retrying in ${Math.ceil(wait / 1000)} s.`);
        await sleep(wait);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        continue;
      }
      const message = reply.error?.message || `HTTP ${status}`;
      if (this.context && String(reply.error?.code).startsWith('context_')) {
        // The service can't continue this stream (its key changed, or the token expired):
        // go on as a new stream, placed after what was heard so far.
        this.problem(`The service could not continue the stream (${message}); continuing as a new one.`, true);
        this.context = null;
        this.tail = null;
        this.offset = this.heard;
        continue;
      }
      if ([413, 414, 431].includes(status) && !reply.error?.code) {
        // Something in front of the service (not prepis) refused the request's size.
        if (chunk.type === PCM_TYPE && chunk.body.byteLength >= 2 * MIN_SPLIT_BYTES) {
          this.problem(`Something in front of the service refused a chunk (${status}); sending it as shorter ones. Recording continues.`);
          throw new ChunkTooLarge();
        }
        throw new ChunkRefused(status, `something in front of the service (not prepis) refused the request (${message})`);
      }
      throw new ChunkRefused(status, message);
    }
  }
}

export class ChunkRefused extends Error {
  constructor(status, message) {
    super(`The service refused the audio (${status}): ${message}`);
    this.status = status;
  }
}

/** The chunk's audio crashed the service's speech engine: it is skipped, not retried. */
export class ChunkSkipped extends ChunkRefused {
  constructor(duration) {
    super(500, '');
    this.message = `${duration.toFixed(1)} s of audio could not be transcribed (the speech engine crashed on it) and were skipped; captions go on.`;
  }
}

/** Seconds of audio in a chunk (16-bit PCM at 16 kHz; other formats: the usual 2 s). */
function seconds(chunk) {
  return chunk.type === PCM_TYPE ? chunk.body.byteLength / 32000 : 2;
}

/** A front door refused the chunk's size: it goes again as shorter chunks. */
class ChunkTooLarge extends Error {}

/** A PCM chunk cut in two (on a sample boundary); only the second may be the last. */
function halves(chunk) {
  const bytes = new Uint8Array(chunk.body);
  const middle = Math.floor(bytes.length / 4) * 2;
  return [
    { ...chunk, body: bytes.slice(0, middle).buffer, last: false },
    { ...chunk, body: bytes.slice(middle).buffer },
  ];
}

/** The audio to send back next: the last `samples` 16-bit samples of what was sent. */
function keptTail(tail, chunk, samples) {
  if (!samples || chunk.type !== PCM_TYPE) return null;
  const body = new Uint8Array(chunk.body);
  const sent = new Uint8Array((tail ? tail.length : 0) + body.length);
  if (tail) sent.set(tail);
  sent.set(body, sent.length - body.length);
  return sent.slice(Math.max(0, sent.length - 2 * samples));
}

/** Moves a reply's times by `offset` seconds. */
function shift(reply, offset) {
  if (!offset) return;
  for (const segment of reply.results || []) {
    segment.start += offset;
    segment.end += offset;
    for (const word of segment.words || []) {
      word.start += offset;
      word.end += offset;
    }
  }
  if (reply.partial) {
    reply.partial.start += offset;
    reply.partial.end += offset;
  }
}

function sleep(ms) {
  return new Promise((ok) => setTimeout(ok, ms));
}
