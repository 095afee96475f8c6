"""Soak: one live stream for hours against one real handler, in real time.

    bench/soak.py [--minutes 120] [--model base] [--chunk 2]

Loops real speech (pocketsphinx LibriVox + cards, 59 s, then 1 s of silence) as one endless
stream in token mode, one chunk every `--chunk` seconds as a microphone would, and records per
request: client latency, server `processing_ms`, context token size, and the handler's RSS.
Writes every sample to `bench/results/soak.csv` and a table per 10-minute window to
`bench/results/soak.md`. Flat RSS, flat latency and a constant token size are the pass marks.
Not part of CI (it runs for hours); see bench/README.md.
"""

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compare import Handler, pct, rss_mb, sphinx_speech  # noqa: E402

RESULTS = Path(__file__).parent / "results"




def post(handler, body, context):
    headers = {"Content-Type": "audio/pcm;rate=16000;encoding=s16le"}
    if context:
        headers["X-Prepis-Context"] = context
    request = urllib.request.Request(handler.url("/api/transcribe?language=en"), data=body,
                                     headers=headers)
    for attempt in range(20):
        start = time.perf_counter()
        try:
            reply = json.load(urllib.request.urlopen(request, timeout=60))
            return time.perf_counter() - start, reply
        except urllib.error.HTTPError as e:
            if e.code not in (429, 503):
                raise
            time.sleep(float(e.headers.get("Retry-After", "0.5")))
    raise SystemExit("gave up after 20 attempts")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=120)
    parser.add_argument("--model", default="base")
    parser.add_argument("--chunk", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=10, help="minutes per table row")
    args = parser.parse_args()

    loop = sphinx_speech() + b"\0\0" * 16000  # 1 s of silence between loops
    step = int(args.chunk * 16000) * 2
    handler = Handler({"PREPIS_MODEL": args.model})
    RESULTS.mkdir(exist_ok=True)
    csv = open(RESULTS / "soak.csv", "w")
    csv.write("t_s,latency_ms,processing_ms,token_bytes,rss_mb,final_words\n")
    started = time.monotonic()
    context, offset, index, rows = None, 0, 0, []
    while time.monotonic() - started < args.minutes * 60:
        due = started + (index + 1) * args.chunk
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        body = loop[offset:offset + step]
        if len(body) < step:
            body += loop[: step - len(body)]
        offset = (offset + step) % len(loop)
        latency, reply = post(handler, body, context)
        context = reply.get("context")
        words = sum(len(r["text"].split()) for r in reply.get("results", []))
        row = (time.monotonic() - started, latency * 1000, reply.get("processing_ms", 0),
               len(context or ""), rss_mb(handler.proc.pid), words)
        rows.append(row)
        csv.write(",".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row) + "\n")
        csv.flush()
        index += 1
    handler.stop()
    report(rows, args)


def report(rows, args):
    window = args.window * 60
    lines = [
        "# Soak",
        "",
        f"One real-time stream, {args.chunk:g} s chunks of looped real speech (LibriVox + cards, 60 s"
        f" loop), token mode, Whisper {args.model}, default threads; {len(rows)} requests over"
        f" {rows[-1][0] / 60:.0f} min. Command: `bench/soak.py --minutes {args.minutes:g}`.",
        "",
        "| minutes | requests | latency p50 / p95 / max ms | processing p50 ms | token bytes p50 / max | RSS min / max MB | final words |",
        "|---|---|---|---|---|---|---|",
    ]
    start = 0.0
    while start < rows[-1][0]:
        part = [r for r in rows if start <= r[0] < start + window]
        start += window
        if not part:
            continue
        lat = [r[1] for r in part]
        lines.append(
            f"| {part[0][0] / 60:.0f}–{part[-1][0] / 60:.0f} | {len(part)} | {pct(lat, 0.5):.0f} / {pct(lat, 0.95):.0f} / {max(lat):.0f}"
            f" | {statistics.median(r[2] for r in part):.0f}"
            f" | {statistics.median(r[3] for r in part):.0f} / {max(r[3] for r in part)}"
            f" | {min(r[4] for r in part):.0f} / {max(r[4] for r in part):.0f} | {sum(r[5] for r in part)} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "soak.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
