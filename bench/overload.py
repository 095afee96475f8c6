"""Capacity and overload: live 2 s-chunk streams against one real handler, beyond capacity.

    bench/overload.py [--model base] [--seconds 45]

1. Unloaded: one live stream (a chunk every 2 s, token mode): latency p50/p99.
2. Capacity: closed-loop streams (each sends its next chunk as soon as the last is answered)
   at 1, 2 and 4 at once; the best sustained chunks/s is the capacity (per core: / cores).
3. The curve: live streams at 0.5x, 1x, 2x and 3x capacity (a stream is 0.5 chunk/s). A live
   client whose chunk is refused (429/503) keeps that audio and sends it with its next chunk,
   as the page does, so nothing is lost and nobody hammers. Per level: accepted p50/p99,
   refused share and how fast refusals come back, the handler's peak RSS.
4. Right after the burst: one chunk, its latency, and `/api/status`.

Writes `bench/results/overload.md`. The handler runs with its defaults (workers = cores / 1
thread, queue = workers): what a deployment gets.
"""

import argparse
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).parent))
from compare import Handler, pct, rss_mb, sphinx_speech  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CHUNK = 2.0
STEP = int(CHUNK * 16000) * 2




class Stream:
    """One client stream; `offset` picks where in the speech it starts."""

    def __init__(self, handler, audio, offset):
        self.handler, self.audio = handler, audio
        self.pos = (offset * STEP) % len(audio)
        self.context, self.pending = None, b""

    def next_audio(self):
        body = self.audio[self.pos:self.pos + STEP]
        if len(body) < STEP:  # loop the speech; a new stream each time round
            body, self.pos, self.context = self.audio[:STEP], STEP, None
        else:
            self.pos += STEP
        return body

    def send(self, body):
        headers = {"Content-Type": "audio/pcm;rate=16000;encoding=s16le"}
        if self.context:
            headers["X-Prepis-Context"] = self.context
        request = urllib.request.Request(self.handler.url("/api/transcribe?language=en"),
                                         data=body, headers=headers)
        start = time.perf_counter()
        try:
            reply = json.load(urllib.request.urlopen(request, timeout=120))
            self.context = reply.get("context")
            return 200, time.perf_counter() - start
        except urllib.error.HTTPError as e:
            e.read()
            return e.code, time.perf_counter() - start


def closed_loop(handler, audio, streams, seconds):
    done, stop = [], time.monotonic() + seconds

    def run(k):
        s = Stream(handler, audio, k * 7)
        while time.monotonic() < stop:
            status, latency = s.send(s.next_audio())
            if status == 200:
                done.append(latency)
            else:
                time.sleep(0.05)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(streams)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(done) / (time.monotonic() - start)


def live(handler, audio, streams, seconds):
    """`streams` live clients for `seconds`; returns per-request (status, latency) and RSS."""
    records, stop = [], time.monotonic() + seconds
    peak = [rss_mb(handler.proc.pid)]

    def run(k):
        s = Stream(handler, audio, k * 5)
        t0 = time.monotonic() + (k * CHUNK / max(streams, 1))  # spread the streams' phases
        tick = 0
        while True:
            due = t0 + tick * CHUNK
            now = time.monotonic()
            if due > stop:
                return
            if due > now:
                time.sleep(due - now)
            # Everything captured since the last accepted chunk goes in this one.
            captured = max(1, int((time.monotonic() - due) // CHUNK) + 1)
            tick += captured
            for _ in range(captured):
                s.pending += s.next_audio()
            status, latency = s.send(s.pending)
            records.append((status, latency, len(s.pending) / 32000))
            if status == 200:
                s.pending = b""
            elif len(s.pending) > 8 * STEP:  # a live client gives up on very old audio
                s.pending = s.pending[-8 * STEP:]

    def sample():
        while time.monotonic() < stop:
            peak[0] = max(peak[0], rss_mb(handler.proc.pid))
            time.sleep(0.2)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(streams)]
    threads.append(threading.Thread(target=sample))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records, peak[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="base")
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--queue", help="PREPIS_QUEUE for the handler (default: its own)")
    args = parser.parse_args()
    audio = sphinx_speech()
    cores = os.cpu_count()
    env = {"PREPIS_MODEL": args.model}
    if args.queue is not None:
        env["PREPIS_QUEUE"] = args.queue
    handler = Handler(env)
    status = json.load(urllib.request.urlopen(handler.url("/api/status")))
    inference = status["inference"]

    base, _ = live(handler, audio, 1, args.seconds)
    base_ok = [r[1] * 1000 for r in base if r[0] == 200]
    base_p99 = pct(base_ok, 0.99)
    capacity = max(closed_loop(handler, audio, n, args.seconds) for n in (1, 2, 4))
    lines = [
        "# Capacity and overload",
        "",
        f"One handler, Whisper {args.model}, defaults ({inference['workers']} workers x"
        f" {inference['threads_per_worker']} thread, admission {inference['capacity']}), {cores} cores;"
        f" live streams of 2 s chunks of real speech (token mode, language en), {args.seconds:g} s"
        f" per level. Command: `bench/overload.py --model {args.model}`.",
        "",
        f"- Unloaded (one live stream): p50 {pct(base_ok, 0.5):.0f} ms, p99 {base_p99:.0f} ms.",
        f"- Capacity (closed loop, best of 1/2/4 streams): **{capacity:.2f} chunks/s**,"
        f" {capacity / cores:.2f} chunks/s per core = {capacity * CHUNK:.1f} live 2 s streams.",
        "",
        "A refused chunk's audio goes with the stream's next chunk (as the page does), so accepted"
        " requests after a refusal carry 4-16 s of audio and take longer; the one-chunk column"
        " is the latency of requests carrying a single 2 s chunk, i.e. the queueing alone.",
        "",
        "| load | live streams | offered chunks/s | accepted | accepted p50 / p99 ms | p99 / unloaded p99 | one-chunk requests: p99 ms (/ unloaded) | refused (429/503) | refusal p99 ms | other | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for factor in (0.5, 1, 2, 3):
        streams = max(1, round(factor * capacity * CHUNK))
        records, peak = live(handler, audio, streams, args.seconds)
        ok = [r[1] * 1000 for r in records if r[0] == 200]
        # Requests carrying one 2 s chunk (not a catch-up of refused audio): the queueing effect.
        single = [r[1] * 1000 for r in records if r[0] == 200 and r[2] <= CHUNK + 0.01]
        refused = [r[1] * 1000 for r in records if r[0] in (429, 503)]
        other = [r[0] for r in records if r[0] not in (200, 429, 503)]
        p99 = pct(ok, 0.99) if ok else float("nan")
        single_p99 = pct(single, 0.99) if single else float("nan")
        lines.append(
            f"| {factor:g}x | {streams} | {streams / CHUNK:.1f} | {len(ok)} | {pct(ok, 0.5):.0f} / {p99:.0f}"
            f" | {p99 / base_p99:.2f} | {single_p99:.0f} ({single_p99 / base_p99:.2f})"
            f" | {len(refused)} ({100 * len(refused) / max(len(records), 1):.0f} %)"
            f" | {pct(refused, 0.99) if refused else 0:.0f} | {len(other)} | {peak:.0f} |")
    # Right after the burst.
    s = Stream(handler, audio, 0)
    status_code, latency = s.send(s.next_audio())
    after = json.load(urllib.request.urlopen(handler.url("/api/status")))
    lines += ["", f"Right after the 3x burst: a chunk answered {status_code} in {latency * 1000:.0f} ms;"
              f" status ready={after['ready']}, in_flight={after['inference']['in_flight']}."]
    handler.stop()
    RESULTS.mkdir(exist_ok=True)
    text = "\n".join(lines) + "\n"
    name = "overload.md" if args.queue is None else f"overload-queue{args.queue}.md"
    (RESULTS / name).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
