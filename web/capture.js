// Audio sources, each calling `onChunk(body, type, {last, capturedAt})` every `seconds`:
// the microphone as 16 kHz PCM (AudioWorklet, the default: compact and gap-free), the
// microphone through MediaRecorder (WebM/Opus or MP4, whatever the browser records), and a
// recorded file decoded in the page and cut into PCM chunks.

export const PCM_TYPE = 'audio/pcm;rate=16000';
const RATE = 16000;
const MIC = { audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: true } };

/** Microphone -> AudioWorklet -> 16-bit PCM chunks. */
export class PcmCapture {
  constructor(seconds, onChunk) {
    this.samples = Math.round(seconds * RATE);
    this.onChunk = onChunk;
    this.pending = [];
    this.length = 0;
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia(MIC);
    try {
      this.context = new AudioContext({ sampleRate: RATE });
    } catch {
      this.context = new AudioContext(); // the worklet resamples
    }
    await this.context.audioWorklet.addModule(new URL('./pcm-worklet.js', import.meta.url));
    this.source = this.context.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.context, 'pcm-capture');
    this.node.port.onmessage = (e) => this.take(e.data);
    this.source.connect(this.node);
  }

  take(block) {
    this.pending.push(block);
    this.length += block.length;
    if (this.flushWaiter && block.length < 1600) {
      this.flushWaiter();
      return;
    }
    while (this.length >= this.samples) this.emit(this.samples, false);
  }

  emit(count, last) {
    const pcm = new Int16Array(count);
    let filled = 0;
    while (filled < count && this.pending.length) {
      const block = this.pending[0];
      const n = Math.min(block.length, count - filled);
      for (let i = 0; i < n; i += 1) {
        const s = Math.max(-1, Math.min(1, block[i]));
        pcm[filled + i] = s < 0 ? s * 32768 : s * 32767;
      }
      filled += n;
      if (n === block.length) this.pending.shift();
      else this.pending[0] = block.subarray(n);
    }
    this.length -= filled;
    this.onChunk(pcm.buffer, PCM_TYPE, { last, capturedAt: performance.now() });
  }

  /** Stops the microphone and sends what is left as the stream's last chunk. */
  async stop() {
    const flushed = new Promise((ok) => { this.flushWaiter = ok; });
    this.node.port.postMessage('flush');
    await Promise.race([flushed, new Promise((ok) => setTimeout(ok, 500))]);
    this.source.disconnect();
    this.stream.getTracks().forEach((t) => t.stop());
    await this.context.close();
    while (this.length > this.samples) this.emit(this.samples, false);
    this.emit(this.length, true);
  }
}

/** The types MediaRecorder is asked for, best first. */
const RECORDER_TYPES = ['audio/webm;codecs=opus', 'audio/mp4;codecs=mp4a.40.2', 'audio/mp4', 'audio/ogg;codecs=opus'];

export function recorderType() {
  if (typeof MediaRecorder === 'undefined') return null;
  return RECORDER_TYPES.find((t) => MediaRecorder.isTypeSupported(t)) || null;
}

/** Microphone -> MediaRecorder timeslice blobs (the service joins them). */
export class RecorderCapture {
  constructor(seconds, onChunk) {
    this.slice = Math.round(seconds * 1000);
    this.onChunk = onChunk;
  }

  async start() {
    this.type = recorderType();
    if (!this.type) throw new Error('this browser cannot record compressed audio; use PCM capture');
    this.stream = await navigator.mediaDevices.getUserMedia(MIC);
    this.recorder = new MediaRecorder(this.stream, { mimeType: this.type });
    this.stopping = false;
    this.stopped = new Promise((ok) => { this.recorder.onstop = ok; });
    this.recorder.ondataavailable = (e) => {
      // The last blob arrives after stop(): it ends the stream.
      const last = this.recorder.state === 'inactive';
      this.onChunk(e.data, this.recorder.mimeType || this.type, { last, capturedAt: performance.now() });
    };
    this.recorder.start(this.slice);
  }

  async stop() {
    this.recorder.stop();
    await this.stopped;
    this.stream.getTracks().forEach((t) => t.stop());
  }
}

/** A recorded file, decoded by the browser, resampled to 16 kHz mono, cut into PCM chunks. */
export async function fileChunks(file, seconds) {
  const bytes = await file.arrayBuffer();
  const decoder = new AudioContext();
  let decoded;
  try {
    decoded = await decoder.decodeAudioData(bytes);
  } finally {
    decoder.close();
  }
  const frames = Math.ceil(decoded.duration * RATE);
  const offline = new OfflineAudioContext(1, Math.max(frames, 1), RATE);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const mono = (await offline.startRendering()).getChannelData(0);
  const step = Math.round(seconds * RATE);
  const chunks = [];
  for (let at = 0; at < mono.length || at === 0; at += step) {
    const part = mono.subarray(at, Math.min(at + step, mono.length));
    const pcm = new Int16Array(part.length);
    part.forEach((s, i) => {
      const c = Math.max(-1, Math.min(1, s));
      pcm[i] = c < 0 ? c * 32768 : c * 32767;
    });
    chunks.push(pcm.buffer);
  }
  return { chunks, duration: decoded.duration };
}
