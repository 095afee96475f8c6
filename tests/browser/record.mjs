// Records real MediaRecorder timeslice blobs in Debian's headless Chromium.
//
//   node tests/browser/record.mjs <speech.wav> <out-dir> [timeslice-ms]
//
// Chromium's fake capture device plays <speech.wav> once as the microphone; the page records
// it with MediaRecorder.start(timeslice) for every audio type Chromium can record, and the blobs
// land in <out-dir>/<type>/NNN.<ext> exactly as the browser gave them (only the first carries
// the container header). Used by tests/fixtures/browser/make.sh.
import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const [wav, outDir, slice = '2000'] = process.argv.slice(2);
if (!wav || !outDir) {
  console.error('usage: record.mjs <speech.wav> <out-dir> [timeslice-ms]');
  process.exit(2);
}
const seconds = wavSeconds(fs.readFileSync(wav));

// getUserMedia needs a secure context: serve an empty page on loopback.
const server = http.createServer((_, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><title>record</title>');
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const url = `http://127.0.0.1:${server.address().port}/`;

const types = [
  ['audio/webm;codecs=opus', 'webm-opus', 'webm'],
  ['audio/ogg;codecs=opus', 'ogg-opus', 'ogg'],
  ['audio/mp4;codecs=opus', 'mp4-opus', 'mp4'],
  ['audio/mp4;codecs=mp4a.40.2', 'mp4-aac', 'mp4'],
];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${path.resolve(wav)}%noloop`,
    '--autoplay-policy=no-user-gesture-required',
  ],
});
try {
  for (const [mime, name, ext] of types) {
    const page = await browser.newPage();
    await page.goto(url);
    const blobs = await page.evaluate(recordInPage, { mime, slice: Number(slice), seconds });
    await page.close();
    if (blobs === null) {
      console.log(`${name}: not supported by this Chromium`);
      continue;
    }
    const dir = path.join(outDir, name);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    blobs.forEach((b64, i) => {
      fs.writeFileSync(path.join(dir, `${String(i).padStart(3, '0')}.${ext}`), Buffer.from(b64, 'base64'));
    });
    console.log(`${name}: ${blobs.length} blobs`);
  }
} finally {
  await browser.close();
  server.close();
}

// Runs in the page: records the fake microphone for `seconds` (+0.5 s) with the given
// timeslice and returns each blob as base64, or null when the type can't be recorded.
async function recordInPage({ mime, slice, seconds }) {
  if (!MediaRecorder.isTypeSupported(mime)) return null;
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const recorder = new MediaRecorder(stream, { mimeType: mime });
  const parts = [];
  recorder.ondataavailable = (e) => parts.push(e.data);
  const stopped = new Promise((ok) => { recorder.onstop = ok; });
  recorder.start(slice);
  await new Promise((ok) => setTimeout(ok, seconds * 1000 + 500));
  recorder.stop();
  await stopped;
  stream.getTracks().forEach((t) => t.stop());
  const out = [];
  for (const blob of parts) {
    const bytes = new Uint8Array(await blob.arrayBuffer());
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    out.push(btoa(s));
  }
  return out;
}

// Duration of a canonical PCM WAV file, from its fmt and data chunks.
function wavSeconds(buf) {
  let off = 12;
  let byteRate = 0;
  while (off + 8 <= buf.length) {
    const id = buf.toString('ascii', off, off + 4);
    const size = buf.readUInt32LE(off + 4);
    if (id === 'fmt ') byteRate = buf.readUInt32LE(off + 16);
    if (id === 'data') return size / byteRate;
    off += 8 + size + (size & 1);
  }
  throw new Error(`${wav}: no data chunk`);
}
