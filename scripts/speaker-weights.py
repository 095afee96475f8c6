#!/usr/bin/env python3
"""Extracts the GE2E speaker encoder of PyPI resemblyzer==0.1.4 into safetensors, without torch.

    scripts/speaker-weights.py <Resemblyzer-0.1.4-py3-none-any.whl> <out.safetensors>

`resemblyzer/pretrained.pt` is a legacy (pre-1.6) torch file: a magic-number pickle, a
protocol pickle, a sys-info pickle, the checkpoint pickle (tensors refer to storages by key),
a pickle of the storage keys, then each storage as a little-endian element count and its raw
little-endian floats. The wheel and the weights are checked against pinned SHA-256 sums.
Only the inference tensors (lstm.*, linear.*) are written, as float32.
"""
import hashlib
import json
import pickle
import struct
import sys
import zipfile

WHEEL_SHA256 = "8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f"
WEIGHTS_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class Storage:
    def __init__(self, key, dtype, size):
        self.key, self.dtype, self.size = key, dtype, size


class Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


def rebuild_tensor(storage, offset, shape, stride, *_):
    return Tensor(storage, offset, tuple(shape), tuple(stride))


class StorageType:
    def __init__(self, name):
        self.name = name


class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected class {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, size = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return Storage(key, storage_type.name, size)


def load_legacy(blob):
    import io

    f = io.BytesIO(blob)
    if pickle.load(f) != LEGACY_MAGIC:
        raise ValueError("not a legacy torch file")
    pickle.load(f)  # protocol version
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", False):
        raise ValueError("big-endian torch file")
    checkpoint = Unpickler(f).load()
    keys = pickle.load(f)
    data = {}
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        data[key] = f.read(count * 4)
    return checkpoint, data


def tensor_bytes(t, data):
    if t.storage.dtype != "FloatStorage":
        raise ValueError(f"{t.storage.dtype} tensors are not expected")
    n = 1
    for d in t.shape:
        n *= d
    expected = []
    acc = 1
    for d in reversed(t.shape):
        expected.insert(0, acc)
        acc *= d
    if tuple(expected) != t.stride:
        raise ValueError(f"non-contiguous tensor {t.shape} {t.stride}")
    raw = data[t.storage.key]
    return raw[t.offset * 4 : (t.offset + n) * 4]


def main():
    wheel, out = sys.argv[1], sys.argv[2]
    wheel_bytes = open(wheel, "rb").read()
    if hashlib.sha256(wheel_bytes).hexdigest() != WHEEL_SHA256:
        sys.exit(f"{wheel}: SHA-256 mismatch (want resemblyzer 0.1.4)")
    blob = zipfile.ZipFile(wheel).read("resemblyzer/pretrained.pt")
    if hashlib.sha256(blob).hexdigest() != WEIGHTS_SHA256:
        sys.exit("pretrained.pt: SHA-256 mismatch")
    checkpoint, data = load_legacy(blob)
    state = checkpoint["model_state"]
    header, chunks, offset = {}, [], 0
    for name, t in state.items():
        if not (name.startswith("lstm.") or name.startswith("linear.")):
            continue
        raw = tensor_bytes(t, data)
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"source": "resemblyzer==0.1.4 pretrained.pt", "sha256": WEIGHTS_SHA256}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(out + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)
    import os

    os.replace(out + ".tmp", out)
    print(f"speaker-weights: {len(chunks)} tensors, {offset} bytes -> {out}")


if __name__ == "__main__":
    main()
