#!/usr/bin/env bash
# The peer benchmark: moed against llama.cpp on the same random weights (see tests/peer/README.md).
#
# Usage: tests/peer/run.sh [--quick] [--shapes qwen3,deepseek,small-experts] [--quants int4,int8]
#                          [--threads 1,2] [--pairs 3] [--q4km] [...; see tests/peer/peer.py --help]
#
# Environment (all optional):
#   MOED_PEER_CACHE  llama.cpp sdist, build, cmake venv and the generated models
#                    (default /var/cache/moed-ci/peer)
#   MOE_VENV         Python environment with the exporter's dependencies (default <repo>/.venv)
#   MOED_BIN         a moed binary to use instead of building <repo> with `cargo build --release`
#   CARGO_TARGET_DIR where that build goes (default <repo>/target)
#   ORT_DYLIB_PATH   libonnxruntime.so (default: packaging/onnxruntime/provision.sh's)
#   PEER_JOBS        parallel jobs of the llama.cpp build (default 2)
set -euo pipefail

# llama.cpp comes from the llama-cpp-python sdist on PyPI (it vendors llama.cpp and its gguf-py).
LLAMA_CPP_PYTHON_VERSION=0.3.36
LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CMAKE_VERSION=4.4.5 # the cmake wheel from PyPI, so no system cmake is needed

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${MOED_PEER_CACHE:-/var/cache/moed-ci/peer}"
venv="$cache/venv"
sdist="$cache/sdist/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
src="$cache/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
llama="$src/vendor/llama.cpp"
build="$cache/build"
cmake_flags=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF)
# -march=native compiles ggml's AMX path in where the CPU advertises AMX. On the VMs this was written
# on, the kernel grants AMX (arch_prctl ARCH_REQ_XCOMP_PERM succeeds) yet `tileloadd` in
# ggml_backend_amx_mul_mat dies with SIGILL, so AMX is left out (GCC's explicit -mno-* flags win over
# -march=native in any order). PEER_LLAMA_AMX=1 keeps it where it works.
if [[ "${PEER_LLAMA_AMX:-0}" != 1 ]]; then
  cmake_flags+=("-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
fi
say() { echo "peer: $*" >&2; }

mkdir -p "$cache/sdist" "$cache/src"

# 1. The sdist, checked against the pinned SHA-256. `--no-binary llama-cpp-python` (not `:all:`)
#    takes the sdist of this package only: with `:all:`, pip also builds cmake and ninja from source
#    just to read the metadata.
if [[ ! -f "$sdist" ]]; then
  say "downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION (sdist)"
  tmp="$(mktemp -d "$cache/sdist/dl.XXXXXX")"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
    --dest "$tmp" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2
  mv "$tmp/$(basename "$sdist")" "$sdist"
  rm -rf "$tmp"
fi
echo "$LLAMA_CPP_PYTHON_SHA256  $sdist" | sha256sum --check --quiet - ||
  { say "checksum mismatch for $sdist (expected $LLAMA_CPP_PYTHON_SHA256); delete it to download again"; exit 1; }
if [[ ! -f "$src/.extracted" ]]; then
  rm -rf "$src"
  tar -xzf "$sdist" -C "$cache/src"
  touch "$src/.extracted"
fi

# 2. cmake from PyPI in a venv of its own.
if [[ ! -x "$venv/bin/cmake" ]] || [[ "$("$venv/bin/cmake" --version | head -1)" != "cmake version $CMAKE_VERSION" ]]; then
  say "installing cmake==$CMAKE_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cmake==$CMAKE_VERSION" >&2
fi

# 3. llama-bench and llama-quantize, built once per version and flags (a stamp records both).
stamp="$LLAMA_CPP_PYTHON_VERSION ${cmake_flags[*]}"
if [[ ! -x "$build/bin/llama-bench" || ! -x "$build/bin/llama-quantize" ||
  "$(cat "$build/.peer-stamp" 2>/dev/null)" != "$stamp" ]]; then
  say "building llama.cpp $LLAMA_CPP_PYTHON_VERSION (llama-bench, llama-quantize) in $build; ~10-40 min on 2 cores"
  [[ "$(cat "$build/.peer-stamp" 2>/dev/null)" == "$stamp" ]] || rm -rf "$build/.peer-stamp" "$build/CMakeCache.txt"
  nice "$venv/bin/cmake" -S "$llama" -B "$build" "${cmake_flags[@]}" >"$cache/build-configure.log" 2>&1 ||
    { tail -20 "$cache/build-configure.log" >&2; exit 1; }
  nice "$venv/bin/cmake" --build "$build" -j "${PEER_JOBS:-2}" --target llama-bench llama-quantize \
    >"$cache/build.log" 2>&1 || { tail -30 "$cache/build.log" >&2; exit 1; }
  echo "$stamp" >"$build/.peer-stamp"
fi

# 4. moed, release build of this checkout.
if [[ -z "${MOED_BIN:-}" ]]; then
  say "building moed (cargo build --release -p moed)"
  (cd "$repo" && nice cargo build --release -p moed --quiet >&2)
  MOED_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/moed"
fi
if [[ -z "${ORT_DYLIB_PATH:-}" ]]; then
  ORT_DYLIB_PATH="$("$repo/packaging/onnxruntime/provision.sh")"
  export ORT_DYLIB_PATH
fi

py="${MOE_VENV:-$repo/.venv}/bin/python3"
# The exporter from this checkout; gguf-py from the same sdist as the binaries.
export PYTHONPATH="$repo/models/export:$llama/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$repo/tests/peer/peer.py" --moed "$MOED_BIN" --llama-bin "$build/bin" \
  --work "$cache/models" --llama-version "$LLAMA_CPP_PYTHON_VERSION" "$@"
