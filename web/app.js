// The page: wires capture, the streaming client and the transcript to the DOM.
import { fileChunks, PcmCapture, PCM_TYPE, RecorderCapture, recorderType } from './capture.js';
import { ChunkRefused, StreamClient } from './stream.js';
import { clock, Transcript } from './transcript.js';

const $ = (id) => document.getElementById(id);
const api = (new URLSearchParams(location.search).get('api')
  || document.querySelector('meta[name="prepis-api"]').content || '').replace(/\/$/, '');

// A service that needs an API key gets it in the page's fragment (`#key=…`: never sent to a
// server, kept for this tab only).
const fragmentKey = new URLSearchParams(location.hash.slice(1)).get('key');
if (fragmentKey) {
  sessionStorage.setItem('prepis-api-key', fragmentKey);
  history.replaceState(null, '', location.pathname + location.search);
}
const apiKey = sessionStorage.getItem('prepis-api-key') || '';

let transcript = new Transcript();
let capture = null;
let client = null;
let busy = false; // recording or transcribing a file

if (!recorderType()) $('mode').querySelector('[value="recorder"]').disabled = true;

// --- service health -------------------------------------------------------------------------

async function checkHealth() {
  const health = $('health');
  try {
    const status = await (await fetch(`${api}/api/status`, { cache: 'no-store' })).json();
    const ready = status.ready === true;
    health.dataset.state = ready ? 'ready' : 'loading';
    health.textContent = ready ? `Service: ready (${status.model?.name ?? 'model'})` : 'Service: loading the model…';
  } catch {
    health.dataset.state = 'down';
    health.textContent = 'Service: unreachable';
  }
}
checkHealth();
setInterval(checkHealth, 5000);

// --- transcript rendering -------------------------------------------------------------------

function speakerClass(n) {
  return n === null ? 'speaker-none' : `speaker-${((n - 1) % 8) + 1}`;
}

function renderSegment(segment) {
  const box = $('transcript');
  box.querySelector('.empty')?.remove();
  const row = document.createElement('p');
  row.className = `segment ${speakerClass(segment.speaker)}`;
  row.dataset.speaker = segment.speaker ?? '';
  const time = document.createElement('time');
  time.textContent = clock(segment.start);
  time.dateTime = `PT${segment.start.toFixed(2)}S`;
  const body = document.createElement('span');
  if (segment.speaker !== null) {
    const who = document.createElement('span');
    who.className = 'who';
    who.dataset.speaker = segment.speaker;
    who.textContent = `${transcript.speakerName(segment.speaker)}:`;
    body.append(who);
  }
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = segment.text;
  body.append(text);
  row.append(time, body);
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.append(row);
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function renderSpeakers() {
  const list = $('speakers');
  for (const n of transcript.speakers()) {
    if (list.querySelector(`[data-speaker="${n}"]`)) continue;
    const item = document.createElement('li');
    item.className = speakerClass(n);
    item.dataset.speaker = n;
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.setAttribute('aria-hidden', 'true');
    const name = document.createElement('input');
    name.value = transcript.speakerName(n);
    name.setAttribute('aria-label', `Name of speaker ${n}`);
    name.addEventListener('change', () => {
      transcript.names.set(n, name.value.trim() || `Speaker ${n}`);
      document.querySelectorAll(`.who[data-speaker="${n}"]`).forEach((w) => {
        w.textContent = `${transcript.speakerName(n)}:`;
      });
    });
    item.append(swatch, name);
    list.append(item);
  }
}

/** Shows the transcript again from the model (after the final speaker labels). */
function renderAll() {
  $('transcript').replaceChildren();
  $('speakers').replaceChildren();
  transcript.segments.forEach(renderSegment);
  renderSpeakers();
}

/** Once a stream is over: the final speaker labels replace the live ones. */
async function finalLabels() {
  if (transcript.relabel(await client.finalLabels())) {
    renderAll();
    document.body.dataset.labels = 'final';
    $('labels-note').hidden = false;
  }
}

function onReply(reply, chunk) {
  document.body.dataset.heard = String(client.heard);
  transcript.add(reply).forEach(renderSegment);
  renderSpeakers();
  $('partial').textContent = transcript.partial?.text ?? '';
  if (!reply.duration) return; // an empty closing chunk says nothing of latency
  const latency = performance.now() - chunk.capturedAt;
  $('latency').textContent = `Latency: ${(latency / 1000).toFixed(1)} s (processing ${reply.processing_ms} ms)`;
  (reply.warnings || []).forEach((w) => console.warn('prepis:', w));
}

function showProblem(message) {
  const box = $('problem');
  box.hidden = !message;
  box.textContent = message || '';
}

function newClient(onProgress) {
  return new StreamClient({
    api,
    apiKey,
    language: $('language').value,
    onReply,
    onProblem: (m) => {
      showProblem(m);
      if (m) checkHealth();
    },
    onProgress,
  });
}

function failed(e) {
  showProblem(e instanceof ChunkRefused ? e.message : `Something went wrong: ${e.message}`);
}

function setBusy(on) {
  busy = on;
  for (const id of ['mode', 'chunk', 'language', 'upload', 'file']) $(id).disabled = on;
}

// --- recording ------------------------------------------------------------------------------

async function startRecording() {
  setBusy(true);
  client = newClient();
  const seconds = Number($('chunk').value);
  const push = (body, type, o) => client.push(body, type, o).catch(failed);
  capture = $('mode').value === 'recorder' ? new RecorderCapture(seconds, push) : new PcmCapture(seconds, push);
  try {
    await capture.start();
  } catch (e) {
    capture = null;
    setBusy(false);
    showProblem(e.name === 'NotAllowedError'
      ? 'The microphone is blocked: allow it in the browser to record.'
      : `The microphone could not be started: ${e.message}`);
    return;
  }
  delete document.body.dataset.labels;
  $('labels-note').hidden = true;
  $('record').textContent = 'Stop recording';
  $('record').setAttribute('aria-pressed', 'true');
  document.body.dataset.state = 'recording';
}

async function stopRecording() {
  $('record').disabled = true;
  $('record').textContent = 'Finishing…';
  try {
    await capture.stop();
    await client.finished();
    await finalLabels();
  } catch (e) {
    failed(e);
  }
  capture = null;
  $('partial').textContent = '';
  $('record').disabled = false;
  $('record').textContent = 'Start recording';
  $('record').setAttribute('aria-pressed', 'false');
  setBusy(false);
  document.body.dataset.state = 'done';
}

$('record').addEventListener('click', () => (capture ? stopRecording() : startRecording()));

// --- file upload ----------------------------------------------------------------------------

$('upload').addEventListener('click', async () => {
  const file = $('file').files[0];
  if (!file) {
    showProblem('Choose an audio file first.');
    return;
  }
  setBusy(true);
  $('record').disabled = true;
  delete document.body.dataset.labels;
  $('labels-note').hidden = true;
  const progress = $('progress');
  progress.hidden = false;
  progress.value = 0;
  document.body.dataset.state = 'uploading';
  try {
    const { chunks } = await fileChunks(file, Number($('chunk').value));
    client = newClient((done, total) => { progress.value = total ? done / total : 0; });
    chunks.forEach((pcm, i) => client.push(pcm, PCM_TYPE, { last: i === chunks.length - 1 }).catch(() => {}));
    await client.finished();
    await finalLabels();
    progress.value = 1;
    showProblem(null);
  } catch (e) {
    failed(e.name === 'EncodingError' ? new Error('the browser cannot decode this file') : e);
  }
  $('partial').textContent = '';
  $('record').disabled = false;
  setBusy(false);
  document.body.dataset.state = 'done';
});

// --- export ---------------------------------------------------------------------------------

function download(name, type, text) {
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

$('export-txt').addEventListener('click', () => download('transcript.txt', 'text/plain', transcript.toText()));
$('export-vtt').addEventListener('click', () => download('transcript.vtt', 'text/vtt', transcript.toVtt()));
$('export-srt').addEventListener('click', () => download('transcript.srt', 'application/x-subrip', transcript.toSrt()));
$('copy').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(transcript.toText());
    $('copy').textContent = 'Copied';
    setTimeout(() => { $('copy').textContent = 'Copy'; }, 1500);
  } catch {
    showProblem('The browser did not allow copying; use an export instead.');
  }
});
$('clear').addEventListener('click', () => {
  if (busy) return;
  transcript = new Transcript();
  $('transcript').replaceChildren();
  $('speakers').replaceChildren();
  $('partial').textContent = '';
  delete document.body.dataset.labels;
  $('labels-note').hidden = true;
});

// For tests and the console: the transcript model.
window.prepis = { get transcript() { return transcript; } };
