#!/usr/bin/env python3
"""Where the lost words went: streams eval streams through one handler with the policy's
debug log on, and for every word of prepis's own whole-file transcript that the streamed
final text lacks, tells what each pass over its time heard and did.

    python bench/lost.py tune            every tune stream (never diagnose on test: see
    BENCH_ONLY=ivr-long python bench/lost.py tune          docs/accuracy.md)
    BENCH_SAVE=DIR python bench/lost.py tune   also writes each streamed text to DIR

A word can be lost in three ways, and each line says which:
- *never heard*: no pass's raw words hold it (the window was cut before it, or Whisper
  dropped it at a window's start or end);
- *dropped*: a pass heard it, but it never reached a hypothesis (an echo of committed text
  removed, the hallucination guard, a loop cut out);
- *pending*: it was a hypothesis word and still never became final (a policy bug).
Streams run in token mode on one instance: the policy is stateless, so three instances
round-robin give the same text.
"""

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import EVAL, align, build, scores  # noqa: E402
from compare import HANDLER, Handler, normalise, pct, scored, wav_bytes  # noqa: E402

TIMED = re.compile(r"(\S+)@(\d+)-(\d+)")


def timed(text):
    return [(normalise(w)[0] if normalise(w) else "", int(s), int(e)) for w, s, e in TIMED.findall(text or "")]


def diagnose(handler, name, path, rate, pcm, reference):
    handler.passes = []
    out = subprocess.run([HANDLER, "stream", str(path), "--chunk", "2", "--language", "en",
                          "--format", "json", "--url", handler.url("")],
                         capture_output=True, text=True, check=True)
    replies = [json.loads(line) for line in out.stdout.splitlines()]
    streamed = [w for r in replies for s in r["results"] for w in s["words"]]
    passes = list(handler.passes)
    request = urllib.request.Request(handler.url("/api/transcribe"), data=wav_bytes(rate, pcm),
                                     headers={"Content-Type": "audio/wav"})
    whole = json.load(urllib.request.urlopen(request, timeout=600))
    offline = [w for s in whole["results"] for w in s["words"]]
    off_words = [" ".join(normalise(w["word"])) for w in offline]
    str_words = [" ".join(normalise(w["word"])) for w in streamed]
    ops = align(off_words, str_words)
    counts = {"never heard": 0, "dropped": 0, "pending": 0}
    i = 0
    lines = []
    for op, ref, _ in ops:
        if op in "=S":
            i += 1
            continue
        if op != "D":
            continue
        word = offline[i]
        i += 1
        t0, t1 = int(word["start"] * 1000), int(word["end"] * 1000)
        near = lambda ws: [w for w in ws if w[1] < t1 + 700 and w[2] > t0 - 700]  # noqa: E731
        over = [p for p in passes if p["start_ms"] <= t1 and p["end_ms"] >= t0]
        heard = any(w[0] == ref for p in over for w in near(timed(p.get("heard"))))
        pending = any(w[0] == ref for p in over for w in near(timed(p.get("hypothesis"))))
        kind = "pending" if pending else "dropped" if heard else "never heard"
        counts[kind] += 1
        lines.append(f"  {ref!r} {t0}-{t1} ms: {kind}")
        for p in over:
            lines.append(
                f"    seq {p['seq']} [{p['start_ms']}-{p['end_ms']}] cut {p['cut_ms']} n {p['committed']}"
                f"{' endpoint' if p['endpoint'] else ''}{' failed' if p['failed_pass'] else ''}\n"
                f"      heard: {' '.join(f'{w}@{s}' for w, s, _ in near(timed(p.get('heard'))))}\n"
                f"      hyp:   {' '.join(f'{w}@{s}' for w, s, _ in near(timed(p.get('hypothesis'))))}")
    total = max(len(off_words), 1)
    text = " ".join(r["text"] for r in replies if r["text"])
    vs_ref = scores(reference, text)
    if os.environ.get("BENCH_SAVE"):
        saved = Path(os.environ["BENCH_SAVE"]) / (name.replace("/", "-") + ".txt")
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(text + "\n")
    seconds = len(pcm) / 2 / rate
    lags = [max(0.0, min((i + 1) * 2.0, seconds) - w["end"])
            for i, r in enumerate(replies) for s in r["results"] for w in s["words"]]
    summary = {"words": len(scored(reference)), "wer": vs_ref["wer"], "lost": vs_ref["lost"],
               "lags": lags}
    print(f"{name}: against the reference WER {100 * vs_ref['wer']:.1f} %, lost "
          f"{100 * vs_ref['lost']:.2f} %, dup {100 * vs_ref['dup']:.2f} %, lag p50 "
          f"{pct(lags or [0.0], .5):.2f} s p95 {pct(lags or [0.0], .95):.2f} s; "
          f"{sum(counts.values())} of {total} offline words lost "
          f"({100 * sum(counts.values()) / total:.2f} %): {counts}")
    print("\n".join(lines), flush=True)
    return counts, total, summary


def main(halves):
    only = os.environ.get("BENCH_ONLY", "")
    streams = [s for s in json.loads((EVAL / "streams.json").read_text())
               if s["split"] in halves and only in s["name"]]
    handler = Handler({"PREPIS_THREADS": os.environ.get("BENCH_THREADS", "2"),
                       "PREPIS_WORKERS": "1", "PREPIS_LANGUAGE": "en",
                       "PREPIS_MAX_AUDIO_SECONDS": "600", "PREPIS_LOG": "info,prepis=debug"})
    totals = {"never heard": 0, "dropped": 0, "pending": 0}
    words = 0
    summaries = []
    for name, path, rate, pcm, reference in build(streams):
        counts, total, summary = diagnose(handler, name, path, rate, pcm, reference)
        summaries.append(summary)
        words += total
        for k, v in counts.items():
            totals[k] += v
    handler.stop()
    ref_words = sum(s["words"] for s in summaries) or 1
    lags = [lag for s in summaries for lag in s["lags"]] or [0.0]
    print(f"all: against the reference WER "
          f"{100 * sum(s['wer'] * s['words'] for s in summaries) / ref_words:.1f} %, lost "
          f"{100 * sum(s['lost'] * s['words'] for s in summaries) / ref_words:.2f} %, lag p50 "
          f"{pct(lags, .5):.2f} s p95 {pct(lags, .95):.2f} s; "
          f"{sum(totals.values())} of {words} offline words lost "
          f"({100 * sum(totals.values()) / words:.2f} %): {totals}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["tune"])
