#!/usr/bin/env python3
"""prepis benchmarks, always against a baseline measured in the same run.

  compare.py latency   prepis (HTTP, the real handler) vs faster-whisper (int8) on a
                       2 s chunk, a 7 s utterance and a ~30 s file: p50/p95 latency,
                       real-time factor, peak RSS, WER.
  compare.py stream    streaming at 2 s chunks through the real handler with `handler stream`:
                       streamed vs offline WER, finalization lag, per-request time, token size.
  compare.py window    encoder-window floor sweep for prepis (PREPIS_MIN_WINDOW_SECONDS):
                       WER and latency on short real utterances.

Environment: HANDLER (handler binary), PREPIS_MODEL_DIR (models, with ct2-base/ for
faster-whisper), BENCH_THREADS (default 2), BENCH_ROUNDS (default 10).
Speech: Debian pocketsphinx-testdata and asterisk-core-sounds-en-wav.
"""

import concurrent.futures
import functools
import io
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave
from pathlib import Path

SPHINX = Path("/usr/share/pocketsphinx/test/data")
ASTERISK = Path("/usr/share/asterisk/sounds/en")
ASTERISK_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
MODEL_DIR = Path(os.environ.get("PREPIS_MODEL_DIR", Path.home() / ".cache/prepis/models"))
HANDLER = os.environ.get("HANDLER", "target/release/handler")
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))

NUMBERS = {str(i): w for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
SPELLED = {"mr": "mister", "mrs": "missus", "ok": "okay"}


def normalise(text):
    words = re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split()
    return [NUMBERS.get(w, SPELLED.get(w, w)) for w in words]


@functools.cache
def english():
    """Whisper's English normaliser (the bench venv has `whisper-normalizer`)."""
    from whisper_normalizer.english import EnglishTextNormalizer
    return EnglishTextNormalizer()


def scored(text):
    """The words a WER counts: Whisper's English normaliser first (numbers as digits, "fifty"
    and "50" alike, American spellings, fillers dropped, as Whisper's own evaluation and the
    Open ASR leaderboard count words), then `normalise` (so "5" and "five" meet too)."""
    return normalise(english()(text))


def wer(refs, hyps):
    errors = total = 0
    for ref, hyp in zip(refs, hyps):
        r, h = normalise(ref), normalise(hyp)
        prev = list(range(len(h) + 1))
        for i in range(1, len(r) + 1):
            cur = [i] + [0] * len(h)
            for j in range(1, len(h) + 1):
                cur[j] = min(prev[j - 1] + (r[i - 1] != h[j - 1]), prev[j] + 1, cur[j - 1] + 1)
            prev = cur
        errors += prev[len(h)]
        total += len(r)
    return errors / max(total, 1)


def read_wav(path):
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        return w.getframerate(), w.readframes(w.getnframes())


def wav_bytes(rate, pcm):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def sphinx_set(folder, transcripts):
    items = []
    for line in (SPHINX / folder / transcripts).read_text().splitlines():
        m = re.match(r"(.*)\((.*)\)\s*$", line)
        if m:
            text = m.group(1).replace("<s>", "").replace("</s>", "").strip()
            items.append((SPHINX / folder / f"{m.group(2).strip()}.wav", text))
    return items


def sphinx_speech():
    """LibriVox + cards (59 s of real speech) as one 16 kHz s16le buffer."""
    pcm = b""
    for path, _ in sphinx_set("librivox", "transcription") + sphinx_set("cards", "cards.transcription"):
        rate, data = read_wav(path)
        assert rate == 16000
        pcm += data
    return pcm


def rss_mb(pid):
    """Resident memory of a process now, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latency_workload():
    """(name, wav bytes, reference text or None) for the three sizes."""
    librivox = sphinx_set("librivox", "transcription")
    cards = sphinx_set("cards", "cards.transcription")
    rate, first = read_wav(librivox[0][0])
    chunk = first[: 2 * rate * 2]
    pcm, refs = b"", []
    for path, text in librivox + cards:
        r, data = read_wav(path)
        assert r == 16000
        if len(pcm) + len(data) > 30 * 16000 * 2:
            break
        pcm += data
        refs.append(text)
    return [
        ("2 s chunk", wav_bytes(rate, chunk), None),
        ("7 s utterance", wav_bytes(rate, first), librivox[0][1]),
        (f"{len(pcm) / 32000:.1f} s file", wav_bytes(16000, pcm), " ".join(refs)),
    ]


def short_utterances(limit=60):
    """Real short utterances with transcripts: Asterisk prompts (8 kHz) and cards."""
    import gzip
    items = []
    for line in gzip.open(ASTERISK_TEXT, "rt", errors="replace"):
        m = re.match(r"^([\w-]+): (.+)$", line.strip())
        if not m or "[" in m.group(2):
            continue
        path = ASTERISK / f"{m.group(1)}.wav"
        if path.exists() and 3 <= len(normalise(m.group(2))) <= 20:
            items.append((path, m.group(2)))
    items = sorted(items)[:limit]
    return items + sphinx_set("cards", "cards.transcription")


class Handler:
    """The real handler binary on a free port."""

    def __init__(self, env):
        full_env = dict(os.environ, PORT="0", **env)
        full_env.pop("FUNCTIONS_CUSTOMHANDLER_PORT", None)
        self.started = time.monotonic()
        self.proc = subprocess.Popen([HANDLER], env=full_env, stdout=subprocess.PIPE, text=True)
        for line in self.proc.stdout:
            event = json.loads(line)
            if event.get("event") == "listening":
                self.port = event["port"]
                break
        # Keep draining the log so that the handler never blocks on a full pipe; the
        # benchmark reads the `window` events (debug) from it.
        # bench/lost.py reads the policy's `pass` events (debug) the same way.
        self.windows, self.passes = [], []

        # BENCH_LOG=FILE keeps the whole log (with PREPIS_LOG for the events wanted).
        log = open(os.environ["BENCH_LOG"], "a") if os.environ.get("BENCH_LOG") else None

        def drain():
            for line in self.proc.stdout:
                if log:
                    log.write(line)
                    log.flush()
                if '"window"' in line or '"pass"' in line:
                    event = json.loads(line)
                    if event.get("event") == "window":
                        self.windows.append(event)
                    elif event.get("event") == "pass":
                        self.passes.append(event)
        threading.Thread(target=drain, daemon=True).start()
        while True:
            status = json.load(urllib.request.urlopen(self.url("/api/status")))
            if status["ready"]:
                break
            if status["model"]["error"]:
                raise SystemExit(status["model"]["error"])
            time.sleep(0.01)
        self.ready_after = time.monotonic() - self.started

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def transcribe(self, body):
        request = urllib.request.Request(self.url("/api/transcribe"), data=body,
                                         headers={"Content-Type": "audio/wav"})
        start = time.perf_counter()
        reply = json.load(urllib.request.urlopen(request))
        return time.perf_counter() - start, reply["text"]

    def peak_rss_mb(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def run_prepis(workload, env):
    handler = Handler(dict(env, PREPIS_THREADS=str(THREADS), PREPIS_WORKERS="1", PREPIS_LANGUAGE="en"))
    cold = handler.ready_after
    first, _ = handler.transcribe(workload[0][1])
    results = {}
    for name, body, _ in workload:
        handler.transcribe(body)  # warm-up
        times, text = [], ""
        for _ in range(ROUNDS):
            t, text = handler.transcribe(body)
            times.append(t)
        results[name] = (times, text)
    rss = handler.peak_rss_mb()
    handler.stop()
    return results, rss, cold + first


def fw_worker():
    """Runs in its own process so that its peak RSS is its own."""
    import numpy as np
    from faster_whisper import WhisperModel
    start = time.monotonic()
    model = WhisperModel(str(MODEL_DIR / "ct2-base"), device="cpu", compute_type="int8",
                         cpu_threads=THREADS, num_workers=1)
    load = time.monotonic() - start
    workload = latency_workload()
    results = {}
    for name, body, _ in workload:
        _, pcm = read_wav_bytes(body)
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0

        def once():
            t = time.perf_counter()
            segments, _ = model.transcribe(audio, language="en", beam_size=1, word_timestamps=True,
                                           vad_filter=False, condition_on_previous_text=False)
            text = " ".join(s.text.strip() for s in segments)
            return time.perf_counter() - t, text

        once()
        times, text = [], ""
        for _ in range(ROUNDS):
            t, text = once()
            times.append(t)
        results[name] = (times, text)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"results": results, "rss": rss, "load": load}))


def read_wav_bytes(body):
    with wave.open(io.BytesIO(body)) as w:
        return w.getframerate(), w.readframes(w.getnframes())


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def latency():
    workload = latency_workload()
    prepis, prepis_rss, prepis_cold = run_prepis(workload, {})
    fw_python = os.environ.get("FW_PYTHON", sys.executable)
    out = subprocess.run([fw_python, __file__, "fw-worker"], check=True, capture_output=True, text=True,
                         env=dict(os.environ, PREPIS_MODEL_DIR=str(MODEL_DIR)))
    fw = json.loads(out.stdout.strip().splitlines()[-1])
    lines = [
        f"Whisper base, {THREADS} threads, {ROUNDS} rounds after a warm-up, {os.cpu_count()} cores; "
        f"prepis over HTTP (decode included), faster-whisper 1.2.1 int8 in-process, greedy, word timestamps.",
        "",
        "| audio | engine | p50 s | p95 s | RTF (p50) | WER | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, body, ref in workload:
        seconds = (len(body) - 44) / 32000
        for engine, (times, text), rss in [("prepis", prepis[name], prepis_rss),
                                            ("faster-whisper", fw["results"][name], fw["rss"])]:
            score = f"{wer([ref], [text]) * 100:.1f} %" if ref else "–"
            lines.append(f"| {name} | {engine} | {pct(times, .5):.3f} | {pct(times, .95):.3f} | "
                         f"{pct(times, .5) / seconds:.3f} | {score} | {rss:.0f} |")
    lines += ["", f"prepis cold start to first 2 s chunk served: {prepis_cold:.2f} s; "
                  f"faster-whisper model load: {fw['load']:.2f} s."]
    report("latency", lines)


def window():
    items = short_utterances()
    floors = [float(f) for f in os.environ.get("BENCH_FLOORS", "3 5 7.5 10 15 30").split()]
    lines = [f"{len(items)} short real utterances (Asterisk prompts at 8 kHz + cards), Whisper base, "
             f"{THREADS} threads; WER and per-request latency by encoder-window floor.", "",
             "| floor s | WER | p50 s | p95 s |", "|---|---|---|---|"]
    bodies = [(wav_bytes(*read_wav(p)), ref) for p, ref in items]
    for floor in floors:
        handler = Handler({"PREPIS_MIN_WINDOW_SECONDS": str(floor), "PREPIS_THREADS": str(THREADS),
                           "PREPIS_WORKERS": "1", "PREPIS_LANGUAGE": "en"})
        times, hyps = [], []
        for body, _ in bodies:
            t, text = handler.transcribe(body)
            times.append(t)
            hyps.append(text)
        handler.stop()
        lines.append(f"| {floor:g} | {wer([r for _, r in bodies], hyps) * 100:.1f} % | "
                     f"{pct(times, .5):.3f} | {pct(times, .95):.3f} |")
    report("window", lines)


def stream_workloads():
    """(name, 16 kHz PCM, reference) streams of real speech."""
    import gzip
    librivox = sphinx_set("librivox", "transcription")
    cards = sphinx_set("cards", "cards.transcription")
    parts = librivox + cards + list(reversed(librivox))
    pcm = b"".join(read_wav(p)[1] for p, _ in parts)
    streams = [("LibriVox + cards, 59 s", pcm, " ".join(t for _, t in parts))]
    # Asterisk prompts (8 kHz, another speaker), upsampled by repeating samples is not fair:
    # they go to the handler as 8 kHz WAV and are resampled there.
    prompts = short_utterances(limit=45)[:-5]
    gap = b"\0\0" * 4000
    pcm8 = b"".join(read_wav(p)[1] + gap for p, _ in prompts)
    streams.append(("Asterisk prompts, 8 kHz", (8000, pcm8), " ".join(t for _, t in prompts)))
    return streams


def stream_bench():
    handler = Handler({"PREPIS_THREADS": str(THREADS), "PREPIS_WORKERS": "1", "PREPIS_LANGUAGE": "en"})
    lines = [f"Streaming at 2 s chunks with `handler stream` (context token mode), Whisper base, "
             f"{THREADS} threads, one worker. Lag = end of the chunk whose response first returns a "
             "word as final minus the word's end (algorithmic; add the processing time for wall-clock).", "",
             "| stream | streamed WER | offline WER | lag p50 s | lag p95 s | proc p50 ms | proc p95 ms | token p50 KB | token p99 KB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, pcm, reference in stream_workloads():
        rate, data = pcm if isinstance(pcm, tuple) else (16000, pcm)
        seconds = len(data) / 2 / rate
        replies = stream_file(handler, rate, data)
        streamed = " ".join(r["text"] for r in replies if r["text"])
        lags, procs, tokens = [], [], []
        for i, r in enumerate(replies):
            chunk_end = min((i + 1) * 2.0, seconds)
            procs.append(r["processing_ms"])
            if r["context"]:
                tokens.append(len(r["context"]) / 1024)
            for seg in r["results"]:
                for w in seg["words"]:
                    lags.append(max(0.0, chunk_end - w["end"]))
        _, offline_text = handler.transcribe(wav_bytes(rate, data))
        lines.append(f"| {name} ({seconds:.0f} s) | {wer([reference], [streamed]) * 100:.1f} % | "
                     f"{wer([reference], [offline_text]) * 100:.1f} % | {pct(lags, .5):.2f} | {pct(lags, .95):.2f} | "
                     f"{pct(procs, .5):.0f} | {pct(procs, .95):.0f} | {pct(tokens, .5):.1f} | {pct(tokens, .99):.1f} |")
    handler.stop()
    report("stream", lines)


def stream_file(handler, rate, data, realtime=False):
    """Streams PCM through `handler stream` (token mode, 2 s chunks); the JSON replies."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        f.write(wav_bytes(rate, data))
        f.flush()
        args = [HANDLER, "stream", f.name, "--url", handler.url(""), "--chunk", "2", "--language", "en",
                "--format", "json"] + (["--realtime"] if realtime else [])
        out = subprocess.run(args, check=True, capture_output=True, text=True)
    return [json.loads(l) for l in out.stdout.splitlines()]


def live():
    """The live workload: every window Whisper heard in a 2 s-chunk stream (tail + new audio),
    timed in prepis, then the same windows through faster-whisper; throughput of both with two
    single-threaded workers; concurrent real-time streams."""
    name, pcm, reference = stream_workloads()[0]
    env = {"PREPIS_THREADS": str(THREADS), "PREPIS_WORKERS": "1", "PREPIS_LANGUAGE": "en",
           "PREPIS_LOG": "info,whisper_rs=warn,prepis::stream=debug"}
    handler = Handler(env)
    replies = stream_file(handler, 16000, pcm)
    handler.stop()
    windows = [(w["start_ms"], w["end_ms"]) for w in handler.windows]
    whisper_ms = [w["whisper_ms"] for w in handler.windows]
    proc_ms = [r["processing_ms"] for r in replies if r.get("processing_ms") is not None]
    streamed = " ".join(r["text"] for r in replies if r["text"])
    lengths = [(b - a) / 1000 for a, b in windows]

    # Throughput: two streams at once, as fast as answers come, two workers of one thread.
    handler = Handler(dict(env, PREPIS_THREADS="1", PREPIS_WORKERS="2"))
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: stream_file(handler, 16000, pcm), range(2)))
    prepis_rate = len(handler.windows) / (time.perf_counter() - start)
    rss = handler.peak_rss_mb()
    handler.stop()

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pcm").write_bytes(pcm)
        (Path(tmp) / "windows.json").write_text(json.dumps(windows))
        fw_python = os.environ.get("FW_PYTHON", sys.executable)
        out = subprocess.run([fw_python, __file__, "fw-windows", tmp], check=True, capture_output=True,
                             text=True, env=dict(os.environ, PREPIS_MODEL_DIR=str(MODEL_DIR)))
    fw = json.loads(out.stdout.strip().splitlines()[-1])

    # Concurrent real-time streams: how many one instance carries with p95 <= 1 s.
    concurrency = []
    for n in [int(v) for v in os.environ.get("BENCH_STREAMS", "1 2 3").split()]:
        handler = Handler({"PREPIS_LANGUAGE": "en"})
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            runs = list(pool.map(lambda _: stream_file(handler, 16000, pcm, realtime=True), range(n)))
        handler.stop()
        times = [r["processing_ms"] for run in runs for r in run if r.get("processing_ms") is not None]
        concurrency.append((n, pct(times, .5), pct(times, .95)))

    ratio = pct(proc_ms, .5) / (pct(fw["times"], .5) * 1000)
    lines = [
        f"{name}: the {len(windows)} windows Whisper heard while streaming it at 2 s chunks "
        f"(token mode; window = unconfirmed tail + new audio, {min(lengths):.1f}-{max(lengths):.1f} s, "
        f"p50 {pct(lengths, .5):.1f} s), Whisper base, {THREADS} threads, {os.cpu_count()} cores; "
        "faster-whisper 1.2.1 int8 (same CTranslate2 weights, greedy, word timestamps, no VAD, no prompt) "
        "on exactly the same windows, in the same run.",
        "",
        "| per request | p50 ms | p95 ms |",
        "|---|---|---|",
        f"| prepis, server processing (decode, Whisper, speakers, token) | {pct(proc_ms, .5):.0f} | {pct(proc_ms, .95):.0f} |",
        f"| prepis, Whisper only | {pct(whisper_ms, .5):.0f} | {pct(whisper_ms, .95):.0f} |",
        f"| faster-whisper, same windows | {pct(fw['times'], .5) * 1000:.0f} | {pct(fw['times'], .95) * 1000:.0f} |",
        "",
        f"prepis / faster-whisper (p50): **{ratio:.2f}**; streamed WER {wer([reference], [streamed]) * 100:.1f} %.",
        "",
        "Throughput, two workers of one thread each, back to back (2 streams for prepis):",
        "",
        "| engine | windows/s | per core | peak RSS MB |",
        "|---|---|---|---|",
        f"| prepis | {prepis_rate:.2f} | {prepis_rate / os.cpu_count():.2f} | {rss:.0f} |",
        f"| faster-whisper | {fw['rate']:.2f} | {fw['rate'] / os.cpu_count():.2f} | {fw['rss']:.0f} |",
        "",
        f"prepis / faster-whisper throughput: **{prepis_rate / fw['rate']:.2f}x**.",
        "",
        "Concurrent real-time streams on one instance (defaults: one thread per request, one worker per core):",
        "",
        "| streams | p50 ms | p95 ms |",
        "|---|---|---|",
    ] + [f"| {n} | {p50:.0f} | {p95:.0f} |" for n, p50, p95 in concurrency]
    report("live", lines)


def fw_windows():
    """faster-whisper on the windows of `live`: each timed, then two workers' throughput."""
    import numpy as np
    from faster_whisper import WhisperModel
    folder = Path(sys.argv[2])
    audio = np.frombuffer((folder / "pcm").read_bytes(), dtype=np.int16).astype(np.float32) / 32768.0
    windows = json.loads((folder / "windows.json").read_text())
    pieces = [audio[a * 16:b * 16] for a, b in windows]

    def run(model, piece):
        segments, _ = model.transcribe(piece, language="en", beam_size=1, word_timestamps=True,
                                       vad_filter=False, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments)

    model = WhisperModel(str(MODEL_DIR / "ct2-base"), device="cpu", compute_type="int8",
                         cpu_threads=THREADS, num_workers=1)
    run(model, pieces[0])
    times = []
    for piece in pieces:
        t = time.perf_counter()
        run(model, piece)
        times.append(time.perf_counter() - t)
    del model
    model = WhisperModel(str(MODEL_DIR / "ct2-base"), device="cpu", compute_type="int8",
                         cpu_threads=1, num_workers=2)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda p: run(model, p), pieces * 2))
    rate = 2 * len(pieces) / (time.perf_counter() - start)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "rate": rate, "rss": rss}))


def report(name, lines):
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.md").write_text(text)


if __name__ == "__main__":
    {"latency": latency, "window": window, "stream": stream_bench, "live": live,
     "fw-worker": fw_worker, "fw-windows": fw_windows}[sys.argv[1] if len(sys.argv) > 1 else "latency"]()
