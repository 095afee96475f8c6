#!/usr/bin/env bash
# Fetches the speaker encoder: the GE2E weights shipped in PyPI resemblyzer==0.1.4, checked by
# sha256 and extracted without torch to $PREPIS_MODEL_DIR/ge2e.safetensors (the file the
# handler loads for speaker labels; default ~/.cache/prepis/models).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${PREPIS_CACHE:-$HOME/.cache/prepis}"
model_dir="${PREPIS_MODEL_DIR:-$cache/models}"
wheel_file=Resemblyzer-0.1.4-py3-none-any.whl
wheel_sha=8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f
out="$model_dir/ge2e.safetensors"
if [[ -f "$out" && "$(cat "$out.source" 2>/dev/null)" == "$wheel_sha" ]]; then
  echo "fetch-speaker: $out is up to date"
  exit 0
fi
mkdir -p "$cache/wheels" "$model_dir"
if [[ ! -f "$cache/wheels/$wheel_file" ]] || ! echo "$wheel_sha  $cache/wheels/$wheel_file" | sha256sum -c --status; then
  echo "fetch-speaker: downloading resemblyzer==0.1.4"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$cache/wheels" resemblyzer==0.1.4
fi
echo "$wheel_sha  $cache/wheels/$wheel_file" | sha256sum -c --quiet
python3 scripts/speaker-weights.py "$cache/wheels/$wheel_file" "$out"
echo "$wheel_sha" > "$out.source"
