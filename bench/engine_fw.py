#!/usr/bin/env python3
"""faster-whisper on the windows `cargo bench --bench engine` times: the same real speech
(pocketsphinx LibriVox + cards, `compare.sphinx_speech`, in the same order) cut to 2, 10 and
30 s, language en, greedy, no VAD, no previous text; median of 4 calls after the model is
loaded, with and without word timestamps (prepis always computes them: DTW).

    PREPIS_THREADS=1 cargo bench --bench engine
    BENCH_THREADS=1 python bench/engine_fw.py

Run both on the same idle machine; results in bench/results/wholefile.md.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import MODEL_DIR, sphinx_speech  # noqa: E402


def main():
    from faster_whisper import WhisperModel
    threads = int(os.environ.get("BENCH_THREADS", "2"))
    model = WhisperModel(str(Path(MODEL_DIR) / "ct2-base"), device="cpu", compute_type="int8",
                         cpu_threads=threads)
    samples = np.frombuffer(sphinx_speech(), "<i2").astype(np.float32) / 32768
    print(f"faster-whisper 1.2.1 int8, {threads} thread(s)\n")
    print("| window s | word timestamps ms | without ms | words |")
    print("|---|---|---|---|")
    for seconds in (2, 10, 30):
        piece = samples[:seconds * 16000]
        row = []
        for words in (True, False):
            times = []
            for _ in range(4):
                t = time.perf_counter()
                segments, _ = model.transcribe(piece, language="en", beam_size=1, vad_filter=False,
                                               condition_on_previous_text=False,
                                               word_timestamps=words)
                text = " ".join(s.text for s in segments)
                times.append((time.perf_counter() - t) * 1000)
            row.append(sorted(times)[len(times) // 2])
        print(f"| {seconds} | {row[0]:.0f} | {row[1]:.0f} | {len(text.split())} |")


if __name__ == "__main__":
    main()
