// The live-captions page end to end: Debian's headless Chromium (playwright-core) with real
// recorded speech as its fake microphone, against the real handler and Whisper base.
//
//   HANDLER=target/release/handler node --test tests/browser/     (make test runs it)
//
// Screenshots land in $PREPIS_ARTIFACTS (default target/browser-artifacts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const HANDLER = path.resolve(ROOT, process.env.HANDLER || 'target/release/handler');
const CACHE = process.env.PREPIS_CACHE || path.join(os.homedir(), '.cache/prepis');
const MODEL_DIR = process.env.PREPIS_MODEL_DIR || path.join(CACHE, 'models');
const ARTIFACTS = path.resolve(ROOT, process.env.PREPIS_ARTIFACTS || 'target/browser-artifacts');
const SPEECH = '/usr/share/pocketsphinx/test/data';
const KEY = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prepis-browser-'));
fs.mkdirSync(ARTIFACTS, { recursive: true });

// --- real speech ----------------------------------------------------------------------------

function utterances(set, transcripts) {
  return fs.readFileSync(path.join(SPEECH, set, transcripts), 'utf8').trim().split('\n').map((line) => {
    const [, words, id] = line.match(/<s>(.*)<\/s>\s*\((.*)\)/);
    const wav = fs.readFileSync(path.join(SPEECH, set, `${id}.wav`));
    return { text: words.trim(), pcm: wav.subarray(44) }; // 16 kHz mono s16 with a 44-byte header
  });
}

function writeWav(file, parts) {
  const gap = Buffer.alloc(16000); // 0.5 s of silence
  const data = Buffer.concat(parts.flatMap((p) => [p, gap]));
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVEfmt ', 8);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22);
  header.writeUInt32LE(16000, 24);
  header.writeUInt32LE(32000, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  fs.writeFileSync(file, Buffer.concat([header, data]));
  return data.length / 32000;
}

const librivox = utterances('librivox', 'transcription');
const cards = utterances('cards', 'cards.transcription');
const READER = { file: path.join(tmp, 'reader.wav'), text: librivox.map((u) => u.text).join(' ') };
READER.seconds = writeWav(READER.file, librivox.map((u) => u.pcm));
const SHORT = { file: path.join(tmp, 'short.wav'), text: librivox.slice(0, 2).map((u) => u.text).join(' ') };
SHORT.seconds = writeWav(SHORT.file, librivox.slice(0, 2).map((u) => u.pcm));
// The second voice's turn is the cards set twice (~20 s): a new voice gets its label once about
// 2 s of its speech is committed, and a fake microphone in real time on a loaded machine may
// commit a single pass of short card names too late for that.
const TWO = { file: path.join(tmp, 'two-voices.wav'), parts: [...librivox.slice(0, 2), ...cards, ...cards, ...librivox.slice(2, 4)] };
TWO.text = TWO.parts.map((u) => u.text).join(' ');
TWO.seconds = writeWav(TWO.file, TWO.parts.map((u) => u.pcm));

// The reader with the crash marker (a steady 2600 Hz tone, 1.2 s: some chunk holds at least
// 0.6 s of it wherever the page cuts its chunks) over the middle of the second utterance.
const MARKED = { file: path.join(tmp, 'marked.wav'), text: READER.text };
{
  const parts = librivox.map((u) => Buffer.from(u.pcm));
  const second = parts[1];
  for (let i = 0; i < 19200; i += 1) {
    const at = 2 * (8000 + i);
    if (at + 2 > second.length) break;
    const mixed = second.readInt16LE(at) + Math.round(9830 * Math.sin((2 * Math.PI * 2600 * i) / 16000));
    second.writeInt16LE(Math.max(-32768, Math.min(32767, mixed)), at);
  }
  MARKED.seconds = writeWav(MARKED.file, parts);
}

// --- scoring --------------------------------------------------------------------------------

const SPELLED = { mr: 'mister', mrs: 'missus', 10: 'ten', 4: 'four', 5: 'five', 7: 'seven', 8: 'eight' };
function words(text) {
  return text.toLowerCase().replace(/-/g, ' ').split(/\s+/)
    .map((w) => w.replace(/[^\p{L}\p{N}']/gu, '')).filter(Boolean).map((w) => SPELLED[w] || w);
}

function wer(reference, hypothesis) {
  const r = words(reference);
  const h = words(hypothesis);
  let prev = Array.from({ length: h.length + 1 }, (_, j) => j);
  for (let i = 1; i <= r.length; i += 1) {
    const cur = [i];
    for (let j = 1; j <= h.length; j += 1) {
      cur[j] = Math.min(prev[j - 1] + (r[i - 1] === h[j - 1] ? 0 : 1), prev[j] + 1, cur[j - 1] + 1);
    }
    prev = cur;
  }
  return prev[h.length] / r.length;
}

// --- the handler ----------------------------------------------------------------------------

class Handler {
  static async start(port = 0, env = {}, binary = HANDLER) {
    const h = new Handler();
    h.proc = spawn(binary, [], {
      env: {
        ...process.env, PORT: String(port), PREPIS_CONTEXT_KEY: KEY, PREPIS_MODEL_DIR: MODEL_DIR,
        PREPIS_MODEL: 'base', PREPIS_THREADS: '2', FUNCTIONS_CUSTOMHANDLER_PORT: '', ...env,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    // Its events go to a log beside the screenshots; an exit nobody asked for is said at once.
    const log = fs.createWriteStream(path.join(ARTIFACTS, `handler-${h.proc.pid}.log`));
    h.proc.on('exit', (code, signal) => {
      if (!h.killed) console.error(`handler ${h.proc.pid} exited on its own: code ${code}, signal ${signal}`);
    });
    const lines = readline.createInterface({ input: h.proc.stdout });
    h.port = await new Promise((ok, fail) => {
      h.proc.once('exit', (code) => fail(new Error(`handler exited (${code}) before listening`)));
      lines.on('line', (line) => {
        log.write(`${line}\n`);
        if (line.includes('"event":"listening"')) ok(JSON.parse(line).port);
      });
    });
    h.upstreamPort = h.port;
    // The page reaches it through the Functions host's front door (Kestrel's limits).
    h.port = await FrontDoor.start(h.upstreamPort);
    // Wait for the model: the readiness the page itself shows.
    for (;;) {
      const status = await (await fetch(h.url('/api/status'))).json();
      if (status.ready) break;
      assert.equal(status.model.error, null, 'the model failed to load');
      await new Promise((ok) => setTimeout(ok, 50));
    }
    return h;
  }

  /** A URL of the service, through its front door. */
  url(p) {
    return `http://127.0.0.1:${this.port}${p}`;
  }

  kill() {
    this.killed = true;
    const exited = new Promise((ok) => this.proc.once('exit', ok));
    this.proc.kill('SIGKILL');
    return exited;
  }
}

/** tests/front-door.mjs in front of a handler; every refusal it makes is counted. */
const FrontDoor = {
  doors: [],
  refusals: [],
  async start(upstreamPort) {
    const door = spawn(process.execPath, [path.join(ROOT, 'tests/front-door.mjs'), String(upstreamPort)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.doors.push(door);
    readline.createInterface({ input: door.stderr }).on('line', (line) => {
      console.error(line);
      this.refusals.push(line);
    });
    return new Promise((ok, fail) => {
      door.once('exit', (code) => fail(new Error(`the front door exited (${code})`)));
      readline.createInterface({ input: door.stdout }).once('line', (line) => ok(Number(line.split(' ')[1])));
    });
  },
  stop() {
    this.doors.forEach((d) => d.kill());
  },
};

// --- the browser ----------------------------------------------------------------------------

/** A fresh Chromium profile whose microphone plays `wav` once. */
async function browserWith(wav) {
  return chromium.launchPersistentContext(fs.mkdtempSync(path.join(tmp, 'profile-')), {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 860 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${wav}%noloop`,
    ],
  });
}

async function openPage(browser, handler) {
  const page = browser.pages()[0] || await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.errors = errors;
  await page.goto(handler.url('/'));
  await page.waitForSelector('#health[data-state="ready"]');
  return page;
}

/** Records the fake microphone until the service has heard `seconds`, then stops. */
async function record(page, seconds, { mode = 'pcm', keyboard = false } = {}) {
  await page.selectOption('#mode', mode);
  if (keyboard) {
    // Keyboard only: Tab to the record button, Enter.
    for (let i = 0; i < 10; i += 1) {
      await page.keyboard.press('Tab');
      if (await page.evaluate(() => document.activeElement?.id === 'record')) break;
    }
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'record');
    await page.keyboard.press('Enter');
  } else {
    await page.click('#record');
  }
  try {
    await page.waitForFunction((s) => Number(document.body.dataset.heard || 0) >= s, seconds - 2.5,
      { timeout: (seconds + 300) * 1000, polling: 200 });
  } catch (e) {
    const seen = await page.evaluate(() => ({ ...document.body.dataset, problem: document.querySelector('#problem')?.textContent }));
    e.message += ` (the page: ${JSON.stringify(seen)})`;
    throw e;
  }
  await page.click('#record');
  await page.waitForSelector('body[data-state="done"]', { timeout: 120_000 });
}

const shown = (page) => page.$$eval('#transcript .segment .text', (els) => els.map((e) => e.textContent).join(' '));

let handler;
before(async () => {
  handler = await Handler.start();
});
after(async () => {
  await handler?.kill();
  FrontDoor.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('PCM capture: the page shows what was said, exports parse', async () => {
  const browser = await browserWith(READER.file);
  try {
    const page = await openPage(browser, handler);
    await record(page, READER.seconds, { keyboard: true });
    const text = await shown(page);
    const error = wer(READER.text, text);
    console.log(`pcm: WER ${(error * 100).toFixed(1)} % over ${READER.seconds.toFixed(0)} s — ${text}`);
    assert.ok(error <= 0.15, `WER ${error}: ${text}`);
    assert.deepEqual(FrontDoor.refusals, [], 'the front door refused nothing');
    assert.equal(await page.isHidden('#problem'), true, await page.textContent('#problem'));
    assert.deepEqual(page.errors, []);
    assert.equal(await page.getAttribute('#transcript', 'aria-live'), 'polite');

    // Exports: WebVTT and SRT parse, and hold the transcript shown.
    const vtt = await downloaded(page, '#export-vtt');
    const srt = await downloaded(page, '#export-srt');
    const txt = await downloaded(page, '#export-txt');
    assert.equal(cueText(parseCues(vtt, 'vtt')), words(text).join(' '));
    assert.equal(cueText(parseCues(srt, 'srt')), words(text).join(' '));
    // Text: one `[m:ss] Speaker: text` line per segment.
    const lines = txt.trim().split('\n');
    assert.ok(lines.every((l) => /^\[\d+:\d{2}\] /.test(l)), txt);
    const spoken = lines.map((l) => l.replace(/^\[\d+:\d{2}\] (Speaker \d+: )?/, '')).join(' ');
    assert.equal(words(spoken).join(' '), words(text).join(' '));
  } finally {
    await browser.close();
  }
});

test('MediaRecorder capture: compressed timeslice blobs transcribe the same', async () => {
  const browser = await browserWith(READER.file);
  try {
    const page = await openPage(browser, handler);
    await record(page, READER.seconds, { mode: 'recorder' });
    const text = await shown(page);
    const error = wer(READER.text, text);
    console.log(`recorder: WER ${(error * 100).toFixed(1)} % — ${text}`);
    assert.ok(error <= 0.15, `WER ${error}: ${text}`);
    assert.deepEqual(FrontDoor.refusals, [], 'the front door refused nothing');
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
  }
});

test('two voices get two colours and can be renamed; screenshots', async () => {
  const browser = await browserWith(TWO.file);
  try {
    const page = await openPage(browser, handler);
    await record(page, TWO.seconds);
    // At Stop the live labels give way to the final ones, found over the whole recording:
    // the reader, the other voice, the reader again.
    assert.equal(await page.getAttribute('body', 'data-labels'), 'final');
    assert.equal(await page.isVisible('#labels-note'), true, 'the page says the labels were revised');
    const labels = await page.$$eval('#transcript .segment', (els) => els.map((e) => e.dataset.speaker).filter(Boolean));
    const turns = labels.filter((s, i) => s !== labels[i - 1]);
    console.log(`two voices: final labels ${labels}`);
    assert.deepEqual(turns, ['1', '2', '1'], `final labels: ${labels}`);
    assert.equal(await page.evaluate(() => window.prepis.transcript.segments.length), labels.length);
    const speakers = await page.$$eval('#transcript .segment', (els) => [...new Set(els.map((e) => e.dataset.speaker))]);
    const colours = await page.$$eval('#transcript .segment', (els) => [...new Set(els.map((e) => getComputedStyle(e).borderLeftColor))]);
    console.log(`two voices: speakers ${speakers}, colours ${colours}`);
    assert.ok(speakers.filter(Boolean).length >= 2, `speakers: ${speakers}`);
    assert.ok(colours.length >= 2, `colours: ${colours}`);
    // Rename speaker 1: every line of theirs follows.
    await page.fill('#speakers input[aria-label="Name of speaker 1"]', 'Reader');
    await page.press('#speakers input[aria-label="Name of speaker 1"]', 'Enter');
    const names = await page.$$eval('.who[data-speaker="1"]', (els) => els.map((e) => e.textContent));
    assert.ok(names.length > 0 && names.every((n) => n === 'Reader:'), names.join());
    assert.match(await downloaded(page, '#export-vtt'), /<v Reader>/);

    await page.screenshot({ path: path.join(ARTIFACTS, 'desktop.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: path.join(ARTIFACTS, 'phone.png'), fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than a phone`);
  } finally {
    await browser.close();
  }
});

test('the handler killed and restarted mid-stream: nothing final is lost', async () => {
  const own = await Handler.start();
  const port = own.upstreamPort;
  let again;
  const browser = await browserWith(READER.file);
  try {
    const page = await openPage(browser, own);
    await page.click('#record');
    await page.waitForFunction(() => Number(document.body.dataset.heard || 0) >= 6, null, { timeout: 120_000, polling: 100 });
    await own.kill();
    // The page says so in plain words and keeps recording.
    await page.waitForSelector('#problem:not([hidden])', { timeout: 30_000 });
    assert.match(await page.textContent('#problem'), /can't be reached/);
    again = await Handler.start(port);
    await page.waitForFunction((s) => Number(document.body.dataset.heard || 0) >= s, READER.seconds - 2.5, { timeout: 180_000, polling: 200 });
    await page.click('#record');
    await page.waitForSelector('body[data-state="done"]', { timeout: 120_000 });
    assert.equal(await page.isHidden('#problem'), true, 'the problem clears once the service is back');
    const text = await shown(page);
    const error = wer(READER.text, text);
    console.log(`restart: WER ${(error * 100).toFixed(1)} % — ${text}`);
    assert.ok(error <= 0.15, `WER ${error}: ${text}`);
  } finally {
    await browser.close();
    await again?.kill();
  }
});

test('a chunk that crashes the engine: the page warns, skips it, and captions go on', async () => {
  const binary = process.env.PREPIS_CRASH_HANDLER;
  assert.ok(binary && fs.existsSync(binary), 'PREPIS_CRASH_HANDLER: the crash-marker build (make crash-handler)');
  const own = await Handler.start(0, {}, binary);
  const browser = await browserWith(MARKED.file);
  try {
    const page = await openPage(browser, own);
    await record(page, MARKED.seconds);
    assert.match(await page.textContent('#problem'), /speech engine crashed on it\) and were skipped; captions go on/);
    const text = await shown(page);
    const status = await (await fetch(own.url('/api/status'))).json();
    console.log(`crash: ${status.inference.crashes} chunk(s) skipped, WER ${(wer(MARKED.text, text) * 100).toFixed(1)} % — ${text}`);
    assert.ok(status.inference.crashes >= 1, JSON.stringify(status.inference));
    assert.equal(status.inference.restarts, status.inference.crashes);
    assert.equal(status.ready, true);
    // Captions went on: the utterances after the marked one are all there.
    const after = librivox.slice(2).map((u) => u.text).join(' ');
    const tail = words(text).slice(-words(after).length).join(' ');
    assert.ok(wer(after, tail) <= 0.15, `after the skipped chunk: ${tail}`);
    // The browser itself logs the 500 it received; nothing else went wrong on the page.
    assert.deepEqual(page.errors.filter((e) => !/status of 500/.test(e)), []);
  } finally {
    await browser.close();
    await own.kill();
  }
});

test('file upload streams through the same path with progress', async () => {
  const browser = await browserWith(READER.file);
  try {
    const page = await openPage(browser, handler);
    // The network misbehaves: the first chunk is answered 503 (Retry-After: 1), the second
    // 429, the third's connection drops; the page must wait as told and retry each.
    const faults = { 1: 503, 2: 429, 3: 'abort' };
    const seen = [];
    let posts = 0;
    await page.route('**/api/transcribe', async (route) => {
      posts += 1;
      const fault = faults[posts];
      const body = route.request().postDataBuffer() || Buffer.alloc(0);
      const context = body.includes('name="context"') ? 'sent' : null;
      seen.push({ at: Date.now(), fault, context });
      if (fault === 'abort') return route.abort('connectionreset');
      if (fault) {
        return route.fulfill({
          status: fault, headers: { 'Retry-After': '1', 'Content-Type': 'application/json' },
          body: JSON.stringify({ error: { code: fault === 429 ? 'overloaded' : 'model_loading', message: 'busy' } }),
        });
      }
      return route.continue();
    });
    await page.setInputFiles('#file', TWO.file);
    await page.click('#upload');
    await page.waitForSelector('#problem:not([hidden])');
    assert.match(await page.textContent('#problem'), /busy \(503\); retrying in 1 s/);
    await page.waitForSelector('body[data-state="done"]', { timeout: 180_000 });
    assert.equal(await page.$eval('#progress', (p) => p.value), 1);
    const text = await shown(page);
    const error = wer(TWO.text, text);
    console.log(`file: WER ${(error * 100).toFixed(1)} % — ${text}`);
    assert.ok(error <= 0.2, `WER ${error}: ${text}`);
    // Retry-After was honoured, and every retry carried the same (absent: first) context.
    assert.ok(seen[1].at - seen[0].at >= 950 && seen[2].at - seen[1].at >= 950, JSON.stringify(seen.slice(0, 4)));
    assert.ok(seen.slice(0, 4).every((r) => r.context === null), 'the first chunk is retried as the first chunk');
    assert.ok(await page.isHidden('#problem'), 'the problem clears once a chunk gets through');
  } finally {
    await browser.close();
  }
});

test('the page as a static site on another origin, allowed by PREPIS_CORS_ORIGINS', async () => {
  // A plain static server for web/, as a CDN or Static Web Apps would serve it.
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
  const site = http.createServer((req, res) => {
    const name = new URL(req.url, 'http://x').pathname.replace(/^\/$/, '/index.html');
    const file = path.join(ROOT, 'web', path.basename(name));
    if (!fs.existsSync(file)) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream' });
    res.end(fs.readFileSync(file));
  });
  await new Promise((ok) => site.listen(0, '127.0.0.1', ok));
  // `localhost` and `127.0.0.1` are different origins.
  const origin = `http://localhost:${site.address().port}`;
  const api = await Handler.start(0, { PREPIS_CORS_ORIGINS: origin });
  const browser = await browserWith(SHORT.file);
  try {
    const page = browser.pages()[0];
    page.errors = [];
    await page.goto(`${origin}/?api=${encodeURIComponent(api.url(''))}`);
    await page.waitForSelector('#health[data-state="ready"]');
    await page.setInputFiles('#file', SHORT.file);
    await page.click('#upload');
    await page.waitForSelector('body[data-state="done"]', { timeout: 120_000 });
    const error = wer(SHORT.text, await shown(page));
    assert.ok(error <= 0.15, `WER ${error}`);
    // The final speaker labels came too (a JSON POST: a preflighted request).
    assert.equal(await page.getAttribute('body', 'data-labels'), 'final');
    assert.deepEqual(page.errors, []);

    // The same page from an origin the service does not allow gets nothing.
    const other = `http://127.0.0.1:${site.address().port}`;
    await page.goto(`${other}/?api=${encodeURIComponent(`http://localhost:${api.port}`)}`);
    await page.waitForSelector('#health[data-state="down"]');
  } finally {
    await browser.close();
    await api.kill();
    site.close();
  }
});

// --- exports --------------------------------------------------------------------------------

async function downloaded(page, button) {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
  return fs.readFileSync(await download.path(), 'utf8');
}

/** Parses WebVTT or SRT strictly enough to catch a malformed file; returns the cues. */
function parseCues(text, kind) {
  const blocks = text.replace(/\r/g, '').trim().split(/\n\n+/);
  if (kind === 'vtt') assert.equal(blocks.shift(), 'WEBVTT');
  const sep = kind === 'vtt' ? '\\.' : ',';
  const timing = new RegExp(`^(\\d{2}):(\\d{2}):(\\d{2})${sep}(\\d{3}) --> (\\d{2}):(\\d{2}):(\\d{2})${sep}(\\d{3})$`);
  let previous = -1;
  return blocks.map((block, i) => {
    const lines = block.split('\n');
    if (kind === 'srt') assert.equal(lines.shift(), String(i + 1), `SRT cue ${i + 1} number`);
    else if (!lines[0].includes('-->')) lines.shift(); // optional VTT cue id
    const m = lines.shift().match(timing);
    assert.ok(m, `cue ${i + 1} timing: ${block}`);
    const t = (h, mi, s, ms) => Number(h) * 3600 + Number(mi) * 60 + Number(s) + Number(ms) / 1000;
    const start = t(...m.slice(1, 5));
    const end = t(...m.slice(5, 9));
    assert.ok(end > start && start >= previous, `cue ${i + 1} times ${start}..${end}`);
    previous = start;
    assert.ok(lines.length > 0, `cue ${i + 1} has text`);
    return lines.join(' ').replace(/^<v [^>]*>/, '').replace(/^Speaker \d+: /, '')
      .replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
  });
}

function cueText(cues) {
  return words(cues.join(' ')).join(' ');
}
