#!/usr/bin/env python3
"""What worker processes cost: the same stream through the handler with Whisper in its own
threads (PREPIS_ISOLATION=thread, the old pool) and in supervised worker processes
(PREPIS_ISOLATION=process, the default), alternated in one run on one machine.

    bench/isolation.py [ROUNDS]        (HANDLER=target/release/handler; writes bench/results/isolation.md)

Per request: the server's processing_ms of every chunk (decode, Whisper, speakers, token) while
`handler stream` sends 2 s chunks of real speech back to back, plus whole-file requests; memory:
peak PSS summed over the handler and every process under it (the weights' pages that the
workers share with the engine host count once, as in a container's cgroup), and peak RSS sum.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANDLER = os.environ.get("HANDLER", os.path.join(ROOT, "target/release/handler"))
SPEECH = "/usr/share/pocketsphinx/test/data"


def speech_file(directory):
    """The LibriVox and cards utterances joined (about 60 s), as one WAV file."""
    parts = []
    for sub, listing in (("librivox", "fileids"), ("cards", "cards.fileids")):
        for line in open(os.path.join(SPEECH, sub, listing)):
            name = line.strip()
            if name:
                parts.append(os.path.join(SPEECH, sub, name + ".wav"))
    path = os.path.join(directory, "speech.wav")
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        for _ in range(2):
            for p in parts:
                with wave.open(p) as w:
                    out.writeframes(w.readframes(w.getnframes()))
                out.writeframes(b"\0\0" * 4000)
    with wave.open(path) as w:
        return path, w.getnframes() / 16000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid):
    """pid and every process below it."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def memory(pid):
    pss = rss = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return pss / 1024, rss / 1024


def run(isolation, audio, seconds):
    port = free_port()
    env = dict(os.environ, PORT=str(port), PREPIS_ISOLATION=isolation, PREPIS_MODEL="base",
               PREPIS_WORKERS="2", PREPIS_THREADS="1", PREPIS_LANGUAGE="en")
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([HANDLER], env=env, stdout=log, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if json.load(urllib.request.urlopen(url + "/api/status"))["ready"]:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        peak = [0.0, 0.0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                pss, rss = memory(server.pid)
                peak[0], peak[1] = max(peak[0], pss), max(peak[1], rss)
                time.sleep(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        # Two streams at once (both workers busy), then two whole files at once.
        streams = [subprocess.Popen([HANDLER, "stream", audio, "--url", url, "--format", "text"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(2)]
        for s in streams:
            s.wait()
        streaming_peak = list(peak)
        started = time.time()
        files = [subprocess.Popen([HANDLER, "transcribe", audio, "--url", url],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(2)]
        for f in files:
            f.wait()
        whole = time.time() - started
        done.set()
        sampler.join()
    finally:
        server.terminate()
        server.wait()
    log.seek(0)
    events = [json.loads(l) for l in log.read().decode().splitlines() if l.startswith("{")]
    chunks = [e["processing_ms"] for e in events
              if e.get("event") == "transcribed" and e.get("duration_s", 0) < 3]
    return chunks, whole, peak, streaming_peak


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with tempfile.TemporaryDirectory() as d:
        audio, seconds = speech_file(d)
        results = {"thread": [], "process": []}
        for _ in range(rounds):
            for isolation in ("thread", "process"):
                results[isolation].append(run(isolation, audio, seconds))
                print(isolation, "done", file=sys.stderr)
    rows = []
    summary = {}
    for isolation, runs in results.items():
        chunks = sorted(c for r in runs for c in r[0])
        p50 = statistics.median(chunks)
        p95 = chunks[int(0.95 * (len(chunks) - 1))]
        whole = statistics.median(r[1] for r in runs)
        pss = max(r[2][0] for r in runs)
        rss = max(r[2][1] for r in runs)
        live_pss = max(r[3][0] for r in runs)
        live_rss = max(r[3][1] for r in runs)
        summary[isolation] = (p50, p95, whole)
        rows.append(f"| {isolation} | {len(chunks)} | {p50:.0f} | {p95:.0f} | {whole:.2f} | {live_pss:.0f} / {live_rss:.0f} | {pss:.0f} / {rss:.0f} |")
    t, p = summary["thread"], summary["process"]
    text = f"""# Worker processes against the in-process pool

`bench/isolation.py {rounds}`: {seconds:.0f} s of real speech (pocketsphinx LibriVox + cards,
twice), Whisper base, 2 workers of 1 thread, `PREPIS_LANGUAGE=en`; per round, two `handler
stream` clients at once (2 s chunks, back to back), then two `handler transcribe` whole-file
requests at once; the two modes alternated {rounds} times in one run on this machine
({os.cpu_count()} cores).

| PREPIS_ISOLATION | chunks | chunk p50 ms | chunk p95 ms | two whole files s | streaming: peak PSS / RSS sum MB | with whole files: peak PSS / RSS sum MB |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

process / thread: chunk p50 **{p[0] / t[0]:.3f}**, p95 {p[1] / t[1]:.3f}, whole files {p[2] / t[2]:.3f}.
PSS counts the model's pages shared by the engine host and its forked workers once (what a
container's memory limit sees); the RSS sum counts them in every process.
"""
    out = os.path.join(ROOT, "bench/results/isolation.md")
    with open(out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
