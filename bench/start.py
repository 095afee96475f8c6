#!/usr/bin/env python3
"""Stream starts: how long the first chunks of a stream take when the client names no language.

    bench/run.sh start        (= python bench/start.py)

Until a stream's language is locked, every pass has to find it. Starts are cut from the test
half of the evaluation set (`bench/eval/`, every 40 s of each test stream, 12 s = six 2 s
chunks each) and from Asterisk's French prompts (a language other than the guess). Each start
is streamed twice through one handler (`handler stream`, token mode): with no language, and
with `--language` given (what a start costs once the language is known). Per request: the
server's processing time. Reported: chunks 1 and 2 against the steady chunks 3-6 of the same
starts, and the language each start locked. Baseline in the same run: faster-whisper 1.2.1
(int8, same threads, greedy) on each start's first 2 s chunk alone, with and without the
language (its detection reuses the encoder output of the 30 s window it decodes).
"""

import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import EVAL, build, resample  # noqa: E402
from compare import HANDLER, MODEL_DIR, Handler, pct, read_wav, report, wav_bytes  # noqa: E402

RATE = 16000
START_EVERY_S = 40
START_LENGTH_S = 12
FRENCH = Path("/usr/share/asterisk/sounds/fr")
FRENCH_TEXT = Path("/usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz")


def english_starts():
    """(name, 16 kHz s16le PCM) starts from the test half's streams."""
    streams = [s for s in json.loads((EVAL / "streams.json").read_text()) if s["split"] == "test"]
    starts = []
    for name, _, rate, pcm, _ in build(streams):
        x = np.frombuffer(pcm, "<i2").astype(np.float32)
        x = resample(x, rate, RATE)
        for at in range(0, int(len(x) / RATE) - START_LENGTH_S, START_EVERY_S):
            piece = x[at * RATE:(at + START_LENGTH_S) * RATE]
            starts.append((f"{name}@{at}s", np.round(piece).astype("<i2").tobytes()))
    return starts


def french_starts(count=6):
    """Asterisk's French prompts (8 kHz, read at 16 kHz), joined with 0.5 s pauses."""
    names = []
    for line in gzip.open(FRENCH_TEXT, "rt", errors="replace"):
        m = re.match(r"^([\w-]+): (.+)$", line.strip())
        if m and (FRENCH / f"{m.group(1)}.wav").exists():
            names.append(m.group(1))
    pieces = []
    for n in sorted(names)[:200]:
        rate, data = read_wav(FRENCH / f"{n}.wav")
        x = resample(np.frombuffer(data, "<i2").astype(np.float32), rate, RATE)
        pieces += [x, np.zeros(RATE // 2, np.float32)]
    x = np.concatenate(pieces)
    step = START_LENGTH_S * RATE
    return [(f"asterisk-fr@{i * START_LENGTH_S}s",
             np.round(x[i * step:(i + 1) * step]).astype("<i2").tobytes()) for i in range(count)]


def stream(url, pcm, language):
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        f.write(wav_bytes(RATE, pcm))
        f.flush()
        args = [HANDLER, "stream", f.name, "--chunk", "2", "--format", "json", "--url", url]
        if language:
            args += ["--language", language]
        out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return [json.loads(line) for line in out.stdout.splitlines()]


def faster_whisper(starts, language):
    """faster-whisper's time (ms) on each start's first 2 s chunk alone, after a warm-up."""
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, (_, pcm) in enumerate(starts):
            path = Path(folder) / f"{i}.wav"
            path.write_bytes(wav_bytes(RATE, pcm[:2 * RATE * 2]))
            paths.append(str(path))
        code = (
            "import json, sys, time\nfrom faster_whisper import WhisperModel\n"
            f"m = WhisperModel({str(MODEL_DIR / 'ct2-base')!r}, device='cpu', compute_type='int8', "
            f"cpu_threads={int(os.environ.get('BENCH_THREADS', '2'))})\n"
            f"language = {language!r}\n"
            "list(m.transcribe(sys.argv[1], language='en', beam_size=1)[0])\n"
            "for p in sys.argv[1:]:\n"
            "    t = time.perf_counter()\n"
            "    list(m.transcribe(p, language=language, beam_size=1, vad_filter=False)[0])\n"
            "    print((time.perf_counter() - t) * 1000, flush=True)\n")
        python = os.environ.get("FW_PYTHON", sys.executable)
        out = subprocess.run([python, "-c", code] + paths, check=True, capture_output=True,
                             text=True)
    return [float(line) for line in out.stdout.split()]


def row(label, runs):
    first = [r[0]["processing_ms"] for r in runs]
    second = [r[1]["processing_ms"] for r in runs]
    steady = [x["processing_ms"] for r in runs for x in r[2:6]]
    base = pct(steady, 0.5)
    return (f"| {label} | {len(runs)} | {pct(first, 0.5):.0f} / {max(first):.0f} | "
            f"{pct(second, 0.5):.0f} / {max(second):.0f} | {base:.0f} | "
            f"{pct(first, 0.5) / base:.2f}x / {max(pct(first, 0.5), pct(second, 0.5)) / base:.2f}x |")


def main():
    threads = os.environ.get("BENCH_THREADS", "2")
    handler = Handler({"PREPIS_THREADS": threads, "PREPIS_WORKERS": "1",
                       "PREPIS_CONTEXT_KEY": "cHJlcGlzLXN0YXJ0LWJlbmNobWFyay1rZXktMzJieXQ="})
    url = handler.url("")
    lines = [
        f"Whisper base, {threads} threads, one worker, 2 s chunks, token mode (`bench/run.sh start`). "
        f"Starts every {START_EVERY_S} s of the test half's streams and Asterisk's French prompts, "
        f"{START_LENGTH_S} s each; server processing time per request in ms; *steady* = chunks 3-6 "
        "of the same starts; ratio = chunk 1 p50 and the slower of chunks 1-2 p50 over steady p50.",
        "",
        "| starts | n | chunk 1 p50 / max | chunk 2 p50 / max | steady p50 | ratio |",
        "|---|---|---|---|---|---|",
    ]
    locked = {}
    english, french = english_starts(), french_starts()
    baseline = []
    for label, starts, language in [("English, no language given", english, None),
                                     ("English, `--language en`", english, "en"),
                                     ("French, no language given", french, None),
                                     ("French, `--language fr`", french, "fr")]:
        runs = [stream(url, pcm, language) for _, pcm in starts]
        lines.append(row(label, runs))
        fw = faster_whisper(starts, language)
        baseline.append(f"| {label} | {len(fw)} | {pct(fw, 0.5):.0f} / {max(fw):.0f} |")
        if language is None:
            for (name, _), r in zip(starts, runs):
                heard = next((x["language"] for x in r if x.get("language")), None)
                locked.setdefault(label, {}).setdefault(heard, []).append(name)
    lines += ["", "faster-whisper 1.2.1 (int8, greedy) on each start's first 2 s chunk alone, ms:",
              "", "| starts | n | p50 / max |", "|---|---|---|"] + baseline
    lines.append("")
    for label, languages in locked.items():
        lines.append(f"Languages locked ({label}): " + ", ".join(
            f"{lang}: {len(names)}" for lang, names in sorted(languages.items(), key=str)))
    handler.stop()
    report("start", lines)


if __name__ == "__main__":
    main()
