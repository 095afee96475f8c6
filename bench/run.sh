#!/usr/bin/env bash
# Runs the benchmarks: prepis against faster-whisper on the same audio, in one run.
#   bench/run.sh [latency|live|stream|window|speakers|accuracy|start|wholefile]...   (default: latency live stream window speakers)
# Installs the baseline (PyPI faster-whisper 1.2.1) and the speech fixtures (Debian) if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${PREPIS_CACHE:-$HOME/.cache/prepis}"
venv="$cache/bench-venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import faster_whisper, whisper_normalizer" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet faster-whisper==1.2.1 whisper-normalizer==0.1.15
fi
missing=()
for p in pocketsphinx-testdata asterisk-core-sounds-{en,fr,it,ru} asterisk-core-sounds-{en,fr,it,ru}-wav \
         asterisk-prompt-it-menardi-wav asterisk-prompt-fr-armelle sox; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export HANDLER="${HANDLER:-target/release/handler}"
export FW_PYTHON="$venv/bin/python"
for what in "${@:-latency live stream window speakers}"; do
  for w in $what; do
    case "$w" in
      speakers) "$venv/bin/python" bench/speakers.py run test ;;
      accuracy) "$venv/bin/python" bench/accuracy.py run test tune ;;
      start) "$venv/bin/python" bench/start.py ;;
      wholefile) "$venv/bin/python" bench/wholefile.py test tune ;;
      *) "$venv/bin/python" bench/compare.py "$w" ;;
    esac
  done
done
