#!/usr/bin/env bash
# Installs the Debian packages prepis needs to build, fetch its model and run its tests,
# if any is missing. Safe to run again; needs root (or sudo) only when something is missing.
#
#   scripts/install-deps.sh            build + run (cmake, g++, libopus, python3 with pip)
#   scripts/install-deps.sh --test     also what the tests use (real recorded speech, redis-server,
#                                      nginx, headless chromium and node for the browser tests,
#                                      schemathesis and the OpenAI Python SDK from PyPI in venvs
#                                      under the cache, the OpenAI TypeScript SDK from npm)
#   scripts/install-deps.sh --package  what `make package` needs: Rust's musl target (rustup),
#                                      zig and cargo-zigbuild from PyPI in a venv under the cache
set -euo pipefail

packages=(cmake g++ make pkg-config libopus-dev python3 python3-pip)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(pocketsphinx-testdata asterisk-core-sounds-en asterisk-core-sounds-en-wav asterisk-core-sounds-fr asterisk-core-sounds-fr-wav redis-server nginx-light chromium nodejs npm unzip)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3/pip may come from elsewhere (pyenv); accept working commands instead of packages.
filtered=()
for p in "${missing[@]}"; do
  case "$p" in
    python3) command -v python3 >/dev/null || filtered+=("$p") ;;
    python3-pip) python3 -m pip --version >/dev/null 2>&1 || filtered+=("$p") ;;
    cmake) command -v cmake >/dev/null || filtered+=("$p") ;;
    g++) command -v g++ >/dev/null || filtered+=("$p") ;;
    make) command -v make >/dev/null || filtered+=("$p") ;;
    nodejs) command -v node >/dev/null || filtered+=("$p") ;;
    npm) command -v npm >/dev/null || filtered+=("$p") ;;
    *) filtered+=("$p") ;;
  esac
done
if ((${#filtered[@]})); then
  sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  echo "install-deps: installing ${filtered[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${filtered[@]}" >/dev/null
fi

# The API tests run schemathesis against the OpenAPI document (tests/api/openapi.rs).
if [[ "${1:-}" == "--test" ]]; then
  tools="${PREPIS_CACHE:-$HOME/.cache/prepis}/tools"
  # Hypothesis pinned too: its version decides which cases a seed generates.
  if ! "$tools/schemathesis/bin/schemathesis" --version 2>/dev/null | grep -q 4.32.5 ||
    ! "$tools/schemathesis/bin/python" -c 'import hypothesis, sys; sys.exit(hypothesis.__version__ != "6.170.17")' 2>/dev/null; then
    echo "install-deps: installing schemathesis 4.32.5 (hypothesis 6.170.17) into $tools/schemathesis"
    python3 -m venv "$tools/schemathesis"
    "$tools/schemathesis/bin/pip" install --quiet schemathesis==4.32.5 hypothesis==6.170.17
  fi
  # tests/api/openai.rs runs the official OpenAI SDKs, unmodified: Python's from PyPI in a venv,
  # TypeScript's from npm (tests/openai/package-lock.json; 6.x, the last line for Node 20).
  if ! "$tools/openai/bin/python" -c 'import openai, sys; sys.exit(openai.__version__ != "3.60.0")' 2>/dev/null; then
    echo "install-deps: installing openai 3.60.0 (Python SDK) into $tools/openai"
    python3 -m venv "$tools/openai"
    "$tools/openai/bin/pip" install --quiet openai==3.60.0
  fi
  root="$(cd "$(dirname "$0")/.." && pwd)"
  npm ci --prefix "$root/tests/openai" --no-audit --no-fund --silent
fi

# The release package: a static musl binary, whisper.cpp's C++ compiled by zig (its clang
# with musl and libc++ for the target; Debian's musl-tools has no C++ library).
if [[ "${1:-}" == "--package" ]]; then
  rustup target list --installed | grep -qx x86_64-unknown-linux-musl ||
    rustup target add x86_64-unknown-linux-musl
  tools="${PREPIS_CACHE:-$HOME/.cache/prepis}/tools"
  if ! "$tools/zig/bin/cargo-zigbuild" --version 2>/dev/null | grep -q 0.24.0 ||
     ! "$tools/zig/bin/python3" -m ziglang version 2>/dev/null | grep -q 0.17.0; then
    echo "install-deps: installing zig 0.17.0 and cargo-zigbuild 0.24.0 into $tools/zig"
    python3 -m venv "$tools/zig"
    "$tools/zig/bin/pip" install --quiet ziglang==0.17.0 cargo-zigbuild==0.24.0
  fi
fi
