#!/usr/bin/env bash
# The one place that says where moed's ONNX Runtime comes from.
#
# ONNX Runtime binaries cannot be downloaded from GitHub here, but the `onnxruntime` wheel on PyPI
# ships the full C API as onnxruntime/capi/libonnxruntime.so.<ver>. This script fetches that wheel at
# a pinned version, verifies its SHA-256, and extracts the library, which `ort` loads at run time
# (feature `load-dynamic`). With --gpu it does the same for the `onnxruntime-gpu` wheel, whose
# library comes with the CUDA and TensorRT execution providers, and, with --cuda-libs, for the
# NVIDIA libraries those providers load.
#
# Usage: packaging/onnxruntime/provision.sh [--arch amd64|arm64] [DEST_DIR]
#        packaging/onnxruntime/provision.sh --gpu [--cuda-libs] [--tensorrt] [DEST_DIR]
#   --arch   the Debian architecture the library is for (default: this machine's); arm64 is for
#            cross-built packages (packaging/build.sh --arch arm64).
#   DEST_DIR defaults to <repo>/target/onnxruntime for this machine's architecture and to
#   <repo>/target/onnxruntime-<arch> for another. Prints the library's absolute path on stdout.
#   --gpu    amd64 only: onnxruntime-gpu's libonnxruntime.so.<ver> and, next to it (where ONNX
#            Runtime loads them from), libonnxruntime_providers_{shared,cuda,tensorrt}.so; DEST_DIR
#            defaults to <repo>/target/onnxruntime-gpu. Prints the library's absolute path.
#   --cuda-libs  with --gpu: also the CUDA 12 runtime, cuBLAS, cuRAND, cuFFT and cuDNN 9 libraries
#            from NVIDIA's pinned wheels, flat in DEST_DIR/cuda (the layout of /usr/lib/moed/cuda,
#            which moed searches; elsewhere put it on LD_LIBRARY_PATH). Prints that folder as a
#            second line. Several GB of wheels.
#   --tensorrt   with --gpu: --cuda-libs and TensorRT 10's libraries too, from NVIDIA's index
#            (pypi.nvidia.com; PyPI has only a source stub that downloads it unchecked).
#   MOE_WHEEL_CACHE is where the wheels are kept (default <repo>/target/wheels).
#   Idempotent: an already extracted library with the right checksum is kept.
set -euo pipefail

ORT_VERSION=1.32.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=packaging/arch.sh
source "$repo/packaging/arch.sh"
# shellcheck source=packaging/onnxruntime/wheels.sh
source "$here/wheels.sh"
native="$(arch_native)"
arch="$native"
gpu=0 cuda_libs=0 tensorrt=0
while (($#)); do
  case "$1" in
    --arch) arch="${2:?provision.sh: --arch needs amd64 or arm64}"; shift 2 ;;
    --gpu) gpu=1; shift ;;
    --cuda-libs) cuda_libs=1; shift ;;
    --tensorrt) tensorrt=1; cuda_libs=1; shift ;;
    -*) echo "provision.sh: unknown option '$1' (see the header of $0)" >&2; exit 2 ;;
    *) break ;;
  esac
done
if ((cuda_libs && !gpu)); then
  echo "provision.sh: --cuda-libs and --tensorrt go with --gpu" >&2
  exit 2
fi
cache="${MOE_WHEEL_CACHE:-$repo/target/wheels}"

# The GPU variant, amd64 only. onnxruntime-gpu 1.26.0 is the newest release on PyPI built for
# CUDA 12 (1.27 and later need CUDA 13); `ort` accepts any ONNX Runtime from 1.24 on. Each wheel:
# "project version file sha256 members...", the file names and SHA-256 as PyPI's JSON API lists
# them, the members what is taken out of it (a trailing '*': the shared libraries below it).
GPU_ORT_VERSION=1.26.0
GPU_ORT_WHEEL="onnxruntime-gpu ${GPU_ORT_VERSION} onnxruntime_gpu-${GPU_ORT_VERSION}-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl 4fa231294c2643911d2a7d16469c4808b0bdcdc4b5f4063d3a53744ce25b683a onnxruntime/capi/libonnxruntime.so.${GPU_ORT_VERSION} onnxruntime/capi/libonnxruntime_providers_shared.so onnxruntime/capi/libonnxruntime_providers_cuda.so onnxruntime/capi/libonnxruntime_providers_tensorrt.so"
# CUDA 12.9 update 1 and cuDNN 9: what the CUDA provider loads (daemon/engine/src/gpu_libs.rs).
CUDA_WHEELS=(
  "nvidia-cuda-runtime-cu12 12.9.79 nvidia_cuda_runtime_cu12-12.9.79-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 25bba2dfb01d48a9b59ca474a1ac43c6ebf7011f1b0b8cc44f54eb6ac48a96c3 nvidia/cuda_runtime/lib/*"
  "nvidia-cublas-cu12 12.9.1.4 nvidia_cublas_cu12-12.9.1.4-py3-none-manylinux_2_27_x86_64.whl 453611eb21a7c1f2c2156ed9f3a45b691deda0440ec550860290dc901af5b4c2 nvidia/cublas/lib/*"
  "nvidia-curand-cu12 10.3.10.19 nvidia_curand_cu12-10.3.10.19-py3-none-manylinux_2_27_x86_64.whl 49b274db4780d421bd2ccd362e1415c13887c53c214f0d4b761752b8f9f6aa1e nvidia/curand/lib/*"
  "nvidia-cufft-cu12 11.4.1.4 nvidia_cufft_cu12-11.4.1.4-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl c67884f2a7d276b4b80eb56a79322a95df592ae5e765cf1243693365ccab4e28 nvidia/cufft/lib/*"
  "nvidia-cudnn-cu12 9.28.0.42 nvidia_cudnn_cu12-9.28.0.42-py3-none-manylinux_2_27_x86_64.whl 9ff58b7f36dacd0a93e89f8f2957b52466889217963701daa15e577317cfa375 nvidia/cudnn/lib/*"
)
# TensorRT 10 for CUDA 12 lives on NVIDIA's index only. Its SHA-256 is not from PyPI: it is the one
# a published Nix expression pins for this file (pypi.nvidia.com could not be reached when it was
# pinned); a different file is refused all the same.
TENSORRT_INDEX=https://pypi.nvidia.com
TENSORRT_WHEEL="tensorrt-cu12-libs 10.16.1.11 tensorrt_cu12_libs-10.16.1.11-py3-none-manylinux_2_28_x86_64.whl 8e45036efeb964d323231544442a73619201136ccc84392560254cc8f0d516e4 tensorrt_libs/*"

if ((gpu)); then
  # shellcheck source=packaging/onnxruntime/gpu.sh
  source "$here/gpu.sh"
  provision_gpu "$arch" "${1:-$repo/target/onnxruntime-gpu}" "$cuda_libs" "$tensorrt"
  exit 0
fi

# Wheel file name and SHA-256 per architecture, both as PyPI's simple index lists them for
# onnxruntime 1.32.0 (the checksum is checked on every use, so a changed file is refused).
case "$arch" in
  amd64)
    WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
    WHEEL_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
    ;;
  arm64)
    WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_aarch64.whl"
    WHEEL_SHA256=2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c
    ;;
  *)
    echo "provision.sh: no pinned onnxruntime wheel for architecture '$arch' (amd64 and arm64 are); add its name and SHA-256 here" >&2
    exit 1
    ;;
esac

if [[ "$arch" == "$native" ]]; then
  dest="${1:-$repo/target/onnxruntime}"
else
  dest="${1:-$repo/target/onnxruntime-$arch}"
fi
lib="$dest/libonnxruntime.so.${ORT_VERSION}"
stamp="$dest/.wheel-sha256"

if [[ -f "$lib" && -f "$stamp" && "$(cat "$stamp")" == "$WHEEL_SHA256" ]]; then
  echo "$lib"
  exit 0
fi

wheel_fetch "$cache" onnxruntime "$ORT_VERSION" "$WHEEL" "$WHEEL_SHA256"
wheel_extract "$cache/$WHEEL" "$dest" "onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}"
ln -sf "libonnxruntime.so.${ORT_VERSION}" "$dest/libonnxruntime.so"
echo "$WHEEL_SHA256" > "$stamp"
echo "$lib"
