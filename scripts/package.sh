#!/usr/bin/env bash
# `make package`: the release package for Azure Functions (zip deploy or
# `func azure functionapp publish`), in dist/:
#
#   dist/prepis-functions/         the app folder: host.json, transcribe/ status/ openapi/
#                                  function.json, handler (static, executable), models/
#   dist/prepis-functions.zip      the same folder zipped, modes kept (handler 0755)
#   dist/handler                   the static binary alone (what the Dockerfiles copy)
#
# The handler is a static x86_64-unknown-linux-musl binary (no glibc, libstdc++ or libopus
# needed on the host), built with cargo-zigbuild (zig's clang and libc++ for whisper.cpp's
# C++), for the x86-64-v3 baseline (AVX2, FMA, F16C: every Azure x86 host since Haswell)
# instead of the build machine's own CPU. MODEL=base (default) or tiny.en is put in
# models/ beside the handler, where it looks first; MODEL=none leaves it out (then set the
# app setting PREPIS_MODEL to a path on a mounted share).
set -euo pipefail
cd "$(dirname "$0")/.."

model="${MODEL:-base}"
cache="${PREPIS_CACHE:-$HOME/.cache/prepis}"
target=x86_64-unknown-linux-musl
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
export WHISPER_DONT_GENERATE_BINDINGS=1

scripts/install-deps.sh --package
export PATH="$cache/tools/zig/bin:$PATH"

# whisper.cpp for a CPU baseline, not -march=native (a binary built on one machine runs on
# another); llamafile's kernels stay on (.cargo/config.toml).
export GGML_NATIVE=OFF GGML_AVX=ON GGML_AVX2=ON GGML_FMA=ON GGML_F16C=ON GGML_BMI2=ON
# libopus built from audiopus_sys's bundled source for the target and linked in statically.
export LIBOPUS_STATIC=1 LIBOPUS_NO_PKG=1
cargo zigbuild --release --locked --target "$target" --bin handler
binary="$CARGO_TARGET_DIR/$target/release/handler"

rm -rf dist/prepis-functions dist/prepis-functions.zip
app=dist/prepis-functions
mkdir -p "$app"
cp host.json "$app/"
for function in transcribe status openapi v1; do
  mkdir -p "$app/$function"
  cp "$function/function.json" "$app/$function/"
done
install -m 0755 "$binary" dist/handler
install -m 0755 "$binary" "$app/handler"
if [[ "$model" != none ]]; then
  HANDLER="$binary" scripts/fetch-model.sh "$model"
  scripts/fetch-speaker.sh
  models="${PREPIS_MODEL_DIR:-$cache/models}"
  mkdir -p "$app/models"
  cp "$models/ggml-$model.bin" "$models/ge2e.safetensors" "$app/models/"
  if [[ "$model" != base ]]; then
    # host.json passes no variables: the model's name goes in an app setting.
    echo "package: set the app setting PREPIS_MODEL=$model (the handler defaults to base)"
  fi
fi
# Zip with the Unix modes recorded (unzip and the Functions zip deploy restore them):
# the host starts `handler` as a program and a lost executable bit is a 'permission
# denied' at every cold start.
python3 - "$app" dist/prepis-functions.zip <<'PY'
import os, sys, zipfile
root, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            info = zipfile.ZipInfo.from_file(path, os.path.relpath(path, root))
            info.external_attr = (os.stat(path).st_mode & 0xFFFF) << 16
            info.create_system = 3  # Unix: the modes above are read
            with open(path, "rb") as f:
                z.writestr(info, f.read(), zipfile.ZIP_DEFLATED)
PY
ls -l dist/handler dist/prepis-functions.zip
