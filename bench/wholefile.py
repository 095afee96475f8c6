#!/usr/bin/env python3
"""Whole files: one request per recording, against faster-whisper on the same audio and machine.

    bench/run.sh wholefile              (= python bench/wholefile.py test)
    python bench/wholefile.py [test] [tune]

The recordings are the accuracy benchmark's streams (`bench/eval/`, 0.8-4.7 min of real
speech each), sent whole to one handler in its default setup for this machine (PREPIS_WORKERS
and PREPIS_THREADS unset: one single-threaded worker per core), speaker labels on (the
default) and off; faster-whisper 1.2.1 int8 on the same CTranslate2 weights, greedy,
conditioned on previous text, `cpu_threads` = the machine's cores, as a user runs it. Per
recording: wall time of the request (prepis) or of the consumed `transcribe` generator
(faster-whisper, model already loaded), WER against the reference, and loops (zero-length or
repeated segments). Peak memory: the handler's process tree (PSS, engine host and workers
included) sampled every 200 ms during the requests.
"""

import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import EVAL, build, faster_whisper, loops, scores  # noqa: E402
from compare import Handler, report, scored, wav_bytes  # noqa: E402

CORES = os.cpu_count() or 1


def tree_pss_mb(pid):
    """PSS of a process and its descendants, in MB."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            pass
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Peak:
    """Peak PSS of a handler's process tree while it lives."""

    def __init__(self, pid):
        self.mb, self.done = 0.0, False

        def watch():
            while not self.done:
                self.mb = max(self.mb, tree_pss_mb(pid))
                # One sample reads smaps of every process and thread list: ~7 ms of CPU. Every
                # 50 ms that took 13 % of a core from the handler being timed (2-core machine);
                # every 200 ms, 3.5 %, still several samples per window of a whole file.
                time.sleep(0.2)
        threading.Thread(target=watch, daemon=True).start()


def whole(handler, rate, pcm, diarize):
    url = handler.url(f"/api/transcribe?language=en&diarize={'true' if diarize else 'false'}")
    request = urllib.request.Request(url, data=wav_bytes(rate, pcm),
                                     headers={"Content-Type": "audio/wav"})
    started = time.perf_counter()
    reply = json.load(urllib.request.urlopen(request, timeout=600))
    return reply, time.perf_counter() - started


def main(halves):
    streams = [s for s in json.loads((EVAL / "streams.json").read_text()) if s["split"] in halves]
    built = build(streams)
    fw = faster_whisper([path for _, path, _, _, _ in built], threads=CORES)
    handler = Handler({"PREPIS_MAX_AUDIO_SECONDS": "600"})
    peak = Peak(handler.proc.pid)
    rows = []
    for (name, _, rate, pcm, reference), (fw_text, fw_s) in zip(built, fw):
        on, on_s = whole(handler, rate, pcm, True)
        off, off_s = whole(handler, rate, pcm, False)
        seconds = len(pcm) / 2 / rate
        if not scored(on["text"]) or not scored(off["text"]):
            raise SystemExit(f"{name}: the whole file came back with no words")
        rows.append({
            "name": name, "seconds": seconds, "words": len(scored(reference)),
            "on_s": on_s, "off_s": off_s, "fw_s": fw_s,
            "wer": scores(reference, on["text"])["wer"], "fw_wer": scores(reference, fw_text)["wer"],
            "loops": loops(on["results"], reference), "speakers": len({s.get("speaker") for s in on["results"]})})
        print(f"{name}: prepis {on_s:.1f} s ({off_s:.1f} s without labels), faster-whisper "
              f"{fw_s:.1f} s; WER {rows[-1]['wer'] * 100:.1f} % / {rows[-1]['fw_wer'] * 100:.1f} %",
              flush=True)
    peak.done = True
    status = json.load(urllib.request.urlopen(handler.url("/api/status")))
    handler.stop()
    slots = len(status.get("inference", {}).get("slots", [])) or "?"
    lines = [
        f"Whole files, one request each, this machine ({CORES} cores), Whisper base, language en: "
        f"prepis in its default setup ({slots} workers), speaker labels on (default) and off; "
        f"faster-whisper 1.2.1 int8 greedy, previous-text conditioning, cpu_threads={CORES}, "
        "model loaded. Time: the request's wall time (prepis), the consumed generator "
        "(faster-whisper). `python bench/wholefile.py " + " ".join(halves) + "`.", "",
        "| recording | min | prepis s | without labels s | faster-whisper s | prepis / fw | "
        "prepis WER | fw WER | loops | speakers |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['seconds'] / 60:.1f} | {r['on_s']:.1f} | {r['off_s']:.1f} | "
            f"{r['fw_s']:.1f} | {r['on_s'] / r['fw_s']:.2f}x | {r['wer'] * 100:.1f} % | "
            f"{r['fw_wer'] * 100:.1f} % | {r['loops']} | {r['speakers']} |")
    words = sum(r["words"] for r in rows) or 1
    total = lambda k: sum(r[k] for r in rows)  # noqa: E731
    lines += [
        f"| **all** | {total('seconds') / 60:.1f} | {total('on_s'):.1f} | {total('off_s'):.1f} | "
        f"{total('fw_s'):.1f} | {total('on_s') / total('fw_s'):.2f}x | "
        f"{sum(r['wer'] * r['words'] for r in rows) / words * 100:.1f} % | "
        f"{sum(r['fw_wer'] * r['words'] for r in rows) / words * 100:.1f} % | "
        f"{total('loops')} | |", "",
        f"Peak PSS of the handler (engine host and workers included): {peak.mb:.0f} MB."]
    report(os.environ.get("BENCH_REPORT", "wholefile"), lines)


if __name__ == "__main__":
    main(sys.argv[1:] or ["test"])
