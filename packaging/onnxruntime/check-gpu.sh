#!/usr/bin/env bash
# Checks of provision.sh's GPU variant that need no GPU; each fails with the reason named:
#   1. its command line refuses what it cannot do (--cuda-libs without --gpu, --gpu for arm64);
#   2. a cached wheel whose SHA-256 is not the pinned one is refused and deleted, and nothing is
#      extracted from it (onnxruntime-gpu, an NVIDIA wheel, and the CPU wheel);
#   3. `provision.sh --gpu DEST` lays out DEST as documented: libonnxruntime.so.<ver> (which loads
#      and reports that version, one `ort` accepts), the bare link, the three provider libraries,
#      the licences; a second run keeps what is there;
#   4. every NVIDIA library the provider libraries link is one daemon/engine/src/gpu_libs.rs looks
#      for, so a pin of another CUDA major is caught here;
#   5. an NVIDIA wheel (the CUDA runtime's, 3.5 MB) is extracted flat into DEST/cuda as gpu_libs.rs
#      and /usr/lib/moed/cuda expect.
# The onnxruntime-gpu wheel (277 MB) and the CUDA runtime wheel are downloaded once into
# MOE_WHEEL_CACHE (default <repo>/target/wheels); the other NVIDIA wheels (cuBLAS, cuFFT, cuRAND,
# cuDNN, TensorRT: several GB) are not fetched here.
#
#   packaging/onnxruntime/check-gpu.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
provision="$here/provision.sh"
cache="${MOE_WHEEL_CACHE:-$repo/target/wheels}"

# shellcheck source=packaging/checks.sh
source "$repo/packaging/checks.sh"

# pin NAME: the pinned line of provision.sh for the wheel of project NAME (its quotes removed).
pin() { sed -n "s/^ *\(GPU_ORT_WHEEL=\)\{0,1\}\"\($1 .*\)\"\$/\2/p" "$provision" | head -n 1; }
gpu_version="$(sed -n 's/^GPU_ORT_VERSION=//p' "$provision")"
read -r _ _ gpu_wheel _ <<<"$(pin onnxruntime-gpu)"
gpu_wheel="${gpu_wheel//\$\{GPU_ORT_VERSION\}/$gpu_version}"
[[ -n "$gpu_version" && "$gpu_wheel" == *.whl ]] || { echo "check-gpu.sh: no GPU_ORT_VERSION or onnxruntime-gpu pin in $provision" >&2; exit 1; }

echo "== command line"
# expect_refusal CODE MESSAGE ARGS...: provision.sh ARGS exits with CODE and says MESSAGE.
expect_refusal() {
  local code="$1" message="$2" rc=0
  shift 2
  MOE_WHEEL_CACHE="$work/none" "$provision" "$@" >"$work/out" 2>"$work/err" || rc=$?
  if [[ "$rc" == "$code" ]] && grep -qF -- "$message" "$work/err"; then
    ok "provision.sh $* exits $code: $(cat "$work/err")"
  else
    fail "provision.sh $* exited $rc (expected $code with '$message'): $(cat "$work/err")"
  fi
}
expect_refusal 2 "--cuda-libs and --tensorrt go with --gpu" --cuda-libs
expect_refusal 2 "--cuda-libs and --tensorrt go with --gpu" --tensorrt "$work/dest"
expect_refusal 1 "--gpu is for amd64 only" --gpu --arch arm64 "$work/dest"
expect_refusal 2 "unknown option '--cuda'" --gpu --cuda

echo "== a wheel with another checksum is refused"
# A wrong file under the pinned name in a cache of its own: the network is never asked.
bad_cache="$work/bad-cache"
mkdir -p "$bad_cache"
cpu_wheel="$(sed -n 's/^ *WHEEL="\(onnxruntime-.*x86_64\.whl\)"$/\1/p' "$provision")"
cpu_wheel="${cpu_wheel//\$\{ORT_VERSION\}/$(sed -n 's/^ORT_VERSION=//p' "$provision")}"
# refused WHEEL ARGS...: with a wrong WHEEL in the cache, provision.sh ARGS fails, naming the
# mismatch, deletes the file and leaves its destination without a library.
refused() {
  local wheel="$1" rc=0
  shift
  echo "not the pinned wheel" >"$bad_cache/$wheel"
  rm -rf "$work/dest"
  MOE_WHEEL_CACHE="$bad_cache" "$provision" "$@" "$work/dest" >"$work/out" 2>"$work/err" || rc=$?
  if ((rc == 0)); then
    fail "provision.sh $* accepted a wrong $wheel"
  elif ! grep -q "checksum mismatch for $wheel: expected [0-9a-f]\{64\}, got [0-9a-f]\{64\}" "$work/err"; then
    fail "provision.sh $* failed without naming the checksum mismatch: $(cat "$work/err")"
  elif [[ -e "$bad_cache/$wheel" ]]; then
    fail "provision.sh $* left the wrong $wheel in the cache"
  elif compgen -G "$work/dest/libonnxruntime.so*" >/dev/null; then
    fail "provision.sh $* extracted a library from the wrong $wheel"
  else
    ok "provision.sh $* refuses a wrong $wheel and deletes it: $(cat "$work/err")"
  fi
}
refused "$gpu_wheel" --gpu
refused "$cpu_wheel" --arch amd64
# An NVIDIA wheel goes through the same fetch (provision.sh's helpers, as --cuda-libs calls them).
# shellcheck source=packaging/onnxruntime/wheels.sh
source "$here/wheels.sh"
# shellcheck source=packaging/onnxruntime/gpu.sh
source "$here/gpu.sh"
cudart="$(pin nvidia-cuda-runtime-cu12)"
read -r _ _ cudart_wheel _ <<<"$cudart"
echo "not the pinned wheel" >"$bad_cache/$cudart_wheel"
if (cache="$bad_cache" fetch_and_extract "$work/cuda-bad" "" "$cudart") 2>"$work/err"; then
  fail "a wrong $cudart_wheel was accepted"
elif grep -q "checksum mismatch for $cudart_wheel" "$work/err" && [[ ! -e "$bad_cache/$cudart_wheel" && ! -e "$work/cuda-bad" ]]; then
  ok "a wrong $cudart_wheel is refused, deleted, nothing extracted"
else
  fail "a wrong $cudart_wheel: $(cat "$work/err")"
fi

echo "== provision.sh --gpu: the layout"
dest="$work/onnxruntime-gpu"
out="$(MOE_WHEEL_CACHE="$cache" "$provision" --gpu "$dest")"
lib="$dest/libonnxruntime.so.$gpu_version"
[[ "$out" == "$lib" ]] && ok "prints $lib" || fail "printed '$out', not $lib"
for f in "$lib" "$dest"/libonnxruntime_providers_{shared,cuda,tensorrt}.so "$dest/licenses/onnxruntime_gpu-LICENSE" "$dest/licenses/onnxruntime_gpu-ThirdPartyNotices.txt"; do
  [[ -f "$f" ]] || fail "provision.sh --gpu left no ${f#"$dest"/}"
done
[[ "$(readlink "$dest/libonnxruntime.so")" == "libonnxruntime.so.$gpu_version" ]] || fail "libonnxruntime.so is not a link to libonnxruntime.so.$gpu_version"
ok "$(cd "$dest" && find . -type f -o -type l | sort | tr '\n' ' ')"
# The library loads here (its providers need a GPU, the library itself does not) and is the
# pinned version; `ort` (api-24 in Cargo.toml) needs 1.24 or newer.
reported="$(python3 - "$lib" <<'PY'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.OrtGetApiBase.restype = ctypes.POINTER(ctypes.c_void_p * 2)
get_version = ctypes.CFUNCTYPE(ctypes.c_char_p)(lib.OrtGetApiBase().contents[1])
print(get_version().decode())
PY
)" || reported="(did not load)"
api="$(grep -o '"api-[0-9]*"' "$repo/Cargo.toml" | tr -dc 0-9)"
minor="$(cut -d. -f2 <<<"$reported")"
if [[ "$reported" == "$gpu_version" && "$minor" =~ ^[0-9]+$ && "$api" =~ ^[0-9]+$ ]] && ((minor >= api)); then
  ok "libonnxruntime.so.$gpu_version loads and reports $reported (ort needs 1.$api or newer)"
else
  fail "libonnxruntime.so.$gpu_version reports '$reported' (expected $gpu_version, at least 1.$api)"
fi
before="$(stat -c %Y "$lib")"
sleep 1
again="$(MOE_WHEEL_CACHE="$cache" "$provision" --gpu "$dest")"
[[ "$again" == "$lib" && "$(stat -c %Y "$lib")" == "$before" ]] && ok "a second run keeps the extracted library" || fail "a second run printed '$again' or extracted again"

echo "== the providers link only libraries gpu_libs.rs looks for"
gpu_libs="$repo/daemon/engine/src/gpu_libs.rs"
known="$(sed -n '/^const \(CUDA\|TENSORRT\)_LIBS/,/^];/p' "$gpu_libs" | grep -o '"lib[^"]*"' | tr -d '"' | sort -u)"
[[ -n "$known" ]] || fail "no CUDA_LIBS/TENSORRT_LIBS in $gpu_libs"
for provider in cuda tensorrt; do
  needed="$(readelf -d "$dest/libonnxruntime_providers_$provider.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
  unknown=""
  for n in $needed; do
    case "$n" in
      libc.so.*|libm.so.*|libdl.so.*|librt.so.*|libpthread.so.*|libstdc++.so.*|libgcc_s.so.*|ld-linux*|libcuda.so.1) ;;
      *) grep -qxF "$n" <<<"$known" || unknown+="$n " ;;
    esac
  done
  if [[ -n "$unknown" ]]; then
    fail "libonnxruntime_providers_$provider.so links $unknown which gpu_libs.rs does not check (another CUDA major?)"
  else
    ok "libonnxruntime_providers_$provider.so links $(tr '\n' ' ' <<<"$needed" | grep -o 'lib\(cu\|nv\)[^ ]*' | tr '\n' ' ')all known to gpu_libs.rs"
  fi
done

echo "== an NVIDIA wheel, flat in DEST/cuda"
(cache="$cache" fetch_and_extract "$dest/cuda" "" "$cudart")
if [[ -f "$dest/cuda/libcudart.so.12" ]] && grep -qxF libcudart.so.12 <<<"$known" && compgen -G "$dest/cuda/licenses/nvidia_cuda_runtime_cu12-*" >/dev/null; then
  ok "$cudart_wheel gives $(cd "$dest/cuda" && find . -type f | sort | tr '\n' ' ')"
else
  fail "$cudart_wheel did not give cuda/libcudart.so.12 (a name gpu_libs.rs checks) and its licence: $(cd "$dest/cuda" && find . | tr '\n' ' ')"
fi

checks_done check-gpu.sh
echo "check-gpu.sh: all GPU provisioning checks passed"
