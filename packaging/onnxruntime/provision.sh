#!/usr/bin/env bash
# The one place that says where moed's ONNX Runtime comes from.
#
# ONNX Runtime binaries cannot be downloaded from GitHub here, but the `onnxruntime` wheel on PyPI
# ships the full C API as onnxruntime/capi/libonnxruntime.so.<ver>. This script fetches that wheel at
# a pinned version, verifies its SHA-256, and extracts the library, which `ort` loads at run time
# (feature `load-dynamic`).
#
# Usage: packaging/onnxruntime/provision.sh [--arch amd64|arm64] [DEST_DIR]
#   --arch   the Debian architecture the library is for (default: this machine's); arm64 is for
#            cross-built packages (packaging/build.sh --arch arm64).
#   DEST_DIR defaults to <repo>/target/onnxruntime for this machine's architecture and to
#   <repo>/target/onnxruntime-<arch> for another. Prints the library's absolute path on stdout.
#   Idempotent: an already extracted library with the right checksum is kept.
set -euo pipefail

ORT_VERSION=1.32.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=packaging/arch.sh
source "$repo/packaging/arch.sh"
native="$(arch_native)"
arch="$native"
if [[ "${1:-}" == "--arch" ]]; then
  arch="${2:?provision.sh: --arch needs amd64 or arm64}"
  shift 2
fi

# Wheel file name and SHA-256 per architecture, both as PyPI's simple index lists them for
# onnxruntime 1.32.0 (the checksum is checked on every use, so a changed file is refused).
case "$arch" in
  amd64)
    WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
    WHEEL_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
    PLATFORM=manylinux_2_28_x86_64
    ;;
  arm64)
    WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_aarch64.whl"
    WHEEL_SHA256=2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c
    PLATFORM=manylinux_2_28_aarch64
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

mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cache="${MOE_WHEEL_CACHE:-$repo/target/wheels}"
mkdir -p "$cache"
if [[ ! -f "$cache/$WHEEL" ]]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --platform "$PLATFORM" \
    -d "$tmp" "onnxruntime==${ORT_VERSION}" >&2
  mv "$tmp/$WHEEL" "$cache/$WHEEL"
fi

actual="$(sha256sum "$cache/$WHEEL" | cut -d' ' -f1)"
if [[ "$actual" != "$WHEEL_SHA256" ]]; then
  echo "provision.sh: checksum mismatch for $WHEEL: expected $WHEEL_SHA256, got $actual" >&2
  rm -f "$cache/$WHEEL"
  exit 1
fi

python3 - "$cache/$WHEEL" "$dest" "$ORT_VERSION" <<'PY'
import sys, zipfile, os, shutil
wheel, dest, ver = sys.argv[1:]
name = f"onnxruntime/capi/libonnxruntime.so.{ver}"
with zipfile.ZipFile(wheel) as z, z.open(name) as src, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
    shutil.copyfileobj(src, out)
PY
ln -sf "libonnxruntime.so.${ORT_VERSION}" "$dest/libonnxruntime.so"
echo "$WHEEL_SHA256" > "$stamp"
echo "$lib"
