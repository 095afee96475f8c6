// The official, unmodified OpenAI TypeScript SDK (npm `openai`, pinned in package.json)
// against prepis's /v1 API. tests/api/openai.rs starts the handler behind the test front door
// and runs `node --test tests/openai/sdk.test.mjs` with the environment described in
// sdk_test.py.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import test from 'node:test';

import OpenAI, { toFile } from 'openai';

const BASE_URL = process.env.PREPIS_OPENAI_BASE_URL;
const BUSY_URL = process.env.PREPIS_OPENAI_BUSY_URL;
const KEY = process.env.PREPIS_OPENAI_KEY;
const CASES = JSON.parse(fs.readFileSync(process.env.PREPIS_OPENAI_CASES, 'utf8'));

const SPELLED = { mr: 'mister', mrs: 'missus' };
function words(text) {
  return text.toLowerCase().replace(/-/g, ' ').split(/\s+/)
    .map((w) => w.replace(/[^\p{L}\p{N}']/gu, '')).filter(Boolean).map((w) => SPELLED[w] || w);
}
function wer(reference, hypothesis) {
  const [ref, hyp] = [words(reference), words(hypothesis)];
  let row = [...Array(hyp.length + 1).keys()];
  ref.forEach((r, i) => {
    const next = [i + 1];
    hyp.forEach((h, j) => next.push(Math.min(row[j + 1] + 1, next[j] + 1, row[j] + (r === h ? 0 : 1))));
    row = next;
  });
  return row[hyp.length] / Math.max(ref.length, 1);
}

const client = (options = {}) => new OpenAI({ baseURL: BASE_URL, apiKey: KEY, timeout: 120_000, ...options });
const file = (name) => fs.createReadStream(CASES[name].file);

test('json, text, srt and vtt', async () => {
  const c = client();
  const json = await c.audio.transcriptions.create({ model: 'whisper-1', file: file('short') });
  assert.ok(wer(CASES.short.text, json.text) <= 0.15, json.text);
  const text = await c.audio.transcriptions.create({ model: 'whisper-1', file: file('short'), response_format: 'text' });
  assert.equal(typeof text, 'string');
  assert.equal(text.trim(), json.text);
  const srt = await c.audio.transcriptions.create({ model: 'whisper-1', file: file('short'), response_format: 'srt' });
  assert.match(srt, /^1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n\S/);
  const vtt = await c.audio.transcriptions.create({ model: 'whisper-1', file: file('short'), response_format: 'vtt' });
  assert.match(vtt, /^WEBVTT\n\n\d\d:\d\d:\d\d\.\d{3} --> /);
});

test('verbose_json: word and segment times, speaker labels as an extension', async () => {
  const result = await client().audio.transcriptions.create({
    model: 'whisper-1', file: file('long'), response_format: 'verbose_json', timestamp_granularities: ['word', 'segment'],
  });
  assert.equal(result.language, 'english');
  assert.ok(wer(CASES.long.text, result.text) <= 0.15, result.text);
  assert.ok(result.segments.length >= 3);
  result.segments.forEach((s, i) => {
    assert.equal(s.id, i);
    assert.ok(s.start < s.end && s.tokens.length > 0 && s.avg_logprob <= 0, JSON.stringify(s));
  });
  // A reader, then Asterisk's prompt voice: two speakers, the reader first.
  const speakers = new Set(result.segments.map((s) => s.speaker).filter(Boolean));
  assert.ok(speakers.has(1) && speakers.size >= 2, [...speakers].join());
  assert.equal(result.words.map((w) => w.word).join(' '), result.text);
  assert.ok(result.words.every((w, i) => w.start <= w.end && (i === 0 || result.words[i - 1].start <= w.start)));
});

test('stream=true: deltas as passes are decoded, then the whole text', async () => {
  const stream = await client().audio.transcriptions.create({ model: 'whisper-1', file: file('long'), stream: true });
  const events = [];
  for await (const event of stream) events.push(event);
  const deltas = events.filter((e) => e.type === 'transcript.text.delta');
  assert.ok(deltas.length >= 2, events.map((e) => e.type).join());
  const done = events.at(-1);
  assert.equal(done.type, 'transcript.text.done');
  assert.equal(deltas.map((e) => e.delta).join(''), done.text);
});

test('translation to English', async () => {
  const result = await client().audio.translations.create({ model: 'whisper-1', file: file('french') });
  const said = new Set(words(result.text));
  assert.ok(said.has('letter') || said.has('press'), result.text);
  assert.ok(!said.has('lettre') && !said.has('appuyez'), result.text);
});

test('a garbage file is a BadRequestError, a wrong key an AuthenticationError', async () => {
  await assert.rejects(
    client().audio.transcriptions.create({ model: 'whisper-1', file: await toFile(Buffer.from('not audio '.repeat(300)), 'notes.wav') }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'file' && /^(not|undecodable)_audio$/.test(e.code),
  );
  await assert.rejects(
    client({ apiKey: 'wrong-key', maxRetries: 0 }).audio.transcriptions.create({ model: 'whisper-1', file: file('short') }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
  );
  await assert.rejects(client({ apiKey: 'wrong-key' }).models.list(), OpenAI.AuthenticationError);
});

test('an overloaded instance answers 429 and the SDK retries', async () => {
  const statuses = [];
  // The SDK's own fetch, watched: every response it gets, retries included.
  const watched = async (url, init) => {
    const response = await fetch(url, init);
    statuses.push(`${response.status} ${response.headers.get('retry-after') ?? ''}`.trim());
    return response;
  };
  const busy = new OpenAI({ baseURL: BUSY_URL, apiKey: KEY, maxRetries: 60, timeout: 120_000, fetch: watched });
  // The SDK resends only a body it holds (a stream is sent once): the file as a buffer.
  const buffered = () => toFile(fs.readFileSync(CASES.short.file), 'short.wav');
  const texts = await Promise.all([0, 1, 2].map(async () => busy.audio.transcriptions.create({ model: 'whisper-1', file: await buffered() })));
  texts.forEach((t) => assert.ok(wer(CASES.short.text, t.text) <= 0.15, t.text));
  assert.ok(statuses.includes('429 1'), statuses.join());
  assert.ok(statuses.filter((s) => s === '200').length >= 3, statuses.join());
});
