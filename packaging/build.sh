#!/usr/bin/env bash
# Builds moed's .deb and .rpm from one place: release build of moed and moectl, the shipped WASM
# plugins (plugins/build.sh), man pages and completions (the hidden `moectl generate-assets` and
# `moed generate-assets`, from the clap definitions), ONNX Runtime
# (packaging/onnxruntime/provision.sh); all staged, stripped, under $TARGET/release/package-root,
# then cargo-deb and cargo-generate-rpm package it with the sections [package.metadata.deb] and
# [package.metadata.generate-rpm] of daemon/Cargo.toml.
#
#   packaging/build.sh [--arch amd64|arm64] [--revision N] [--deb-only] [--out DIR] [--no-build] [--fast]
#   packaging/build.sh --gpu [--cuda-libs] [--tensorrt] [--revision N] [--deb-only] [--out DIR] [--fast]
#
# --arch A       the packages' architecture (default: this machine's). Another architecture is
#                cross-built: arm64 with Debian's aarch64-linux-gnu toolchain into
#                $TARGET/aarch64-unknown-linux-gnu/release, the generated man pages and completions
#                made by running the arm64 binaries under qemu-aarch64-static (tests/setup.sh
#                installs all of it); the packages are moed_<ver>-N_arm64.deb, moed-<ver>-N.aarch64.rpm
# --revision N   Debian revision and RPM release (default 1): a second build with a higher N is an
#                upgrade of the first (packaging/lifecycle.sh uses that).
# --deb-only     skip the .rpm
# --out DIR      write the packages into DIR instead of $TARGET/debian and $TARGET/generate-rpm
# --no-build     package the moed and moectl already in $TARGET/release (no cargo build)
# --fast         lighter compression (cargo-deb --fast, gzip rpm payload): same contents, for
#                throwaway packages such as the lifecycle test's upgrade
# --gpu          instead of moed, its optional GPU companion moed-cuda (amd64 only; nothing is
#                compiled): the onnxruntime-gpu library and its CUDA and TensorRT providers in
#                /usr/lib/moed/gpu/, and systemd/moed-cuda.conf as the drop-in
#                /usr/lib/systemd/system/moed.service.d/cuda.conf (the package variant "cuda" of
#                daemon/Cargo.toml); moed-cuda_<ver>-N_amd64.deb, moed-cuda-<ver>-N.x86_64.rpm
# --cuda-libs    with --gpu: NVIDIA's CUDA 12, cuBLAS, cuRAND, cuFFT and cuDNN 9 libraries too, in
#                /usr/lib/moed/cuda/ (provision.sh --cuda-libs); mind NVIDIA's licences before
#                passing such a package on
# --tensorrt     with --gpu: --cuda-libs and TensorRT 10's libraries
#
# Beside moed's packages it always writes the companion moed-import (the variant "import" of
# daemon/Cargo.toml: the exporter in /usr/lib/moed/export for `moectl models import`):
# moed-import_<ver>-N_<arch>.deb and moed-import-<ver>-N.noarch.rpm, named on stderr only;
# packaging/check.sh finds them next to moed's.
#
# TARGET is $CARGO_TARGET_DIR, else <repo>/target. Prints moed's package paths on stdout, one a line.
# Idempotent; on a warm cache it only restages and repackages.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
revision=1
rpm=1
build=1
fast=0
gpu=0
gpu_flags=()
out=""
# shellcheck source=packaging/arch.sh
source "$repo/packaging/arch.sh"
native="$(arch_native)"
arch="$native"
while (($#)); do
  case "$1" in
    --arch) arch="${2:?--arch needs amd64 or arm64}"; shift 2 ;;
    --revision) revision="${2:?--revision needs a number}"; shift 2 ;;
    --deb-only) rpm=0; shift ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --no-build) build=0; shift ;;
    --fast) fast=1; shift ;;
    --gpu) gpu=1; shift ;;
    --cuda-libs) gpu_flags+=(--cuda-libs); shift ;;
    --tensorrt) gpu_flags+=(--tensorrt); shift ;;
    *) echo "build.sh: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
((gpu || ${#gpu_flags[@]} == 0)) || { echo "build.sh: --cuda-libs and --tensorrt go with --gpu" >&2; exit 2; }
[[ "$revision" =~ ^[1-9][0-9]*$ ]] || { echo "build.sh: --revision '$revision' is not a positive integer" >&2; exit 2; }
triple="$(arch_triple "$arch")" || { echo "build.sh: --arch '$arch' is not one of amd64, arm64" >&2; exit 2; }
strip_tool=strip
cargo_target=()
release="$target/release"
if [[ "$arch" != "$native" ]]; then
  cross_prefix="$(arch_cross_prefix "$arch")"
  [[ -n "$cross_prefix" ]] || { echo "build.sh: cannot cross-build $arch on $native" >&2; exit 2; }
  strip_tool="$cross_prefix-strip"
  cargo_target=(--target "$triple")
  # cargo-deb and cargo-generate-rpm read "target/release/" in the manifest as this directory
  # when given --target.
  release="$target/$triple/release"
  # Debian's cross gcc links, and is the C compiler of the cc-built dependencies (SQLite, Oniguruma).
  triple_env="$(tr 'a-z-' 'A-Z_' <<<"$triple")"
  export "CARGO_TARGET_${triple_env}_LINKER=${cross_prefix}-gcc"
  command -v "${cross_prefix}-gcc" >/dev/null || { echo "build.sh: ${cross_prefix}-gcc is missing for --arch $arch; run tests/setup.sh" >&2; exit 1; }
fi
deb_out="${out:-$target/debian}"
rpm_out="${out:-$target/generate-rpm}"

if ((gpu)); then
  # shellcheck source=packaging/cuda-package.sh
  source "$repo/packaging/cuda-package.sh"
  build_cuda_package
  exit 0
fi

# The plugins a package ships: every plugin crate with a manifest directly under plugins/ (the
# reference plugins), never the hostile test fixtures under plugins/hostile/.
shipped_plugins=()
for manifest in "$repo"/plugins/*/plugin.toml; do
  shipped_plugins+=("$(basename "$(dirname "$manifest")")")
done

for tool in "$strip_tool" gzip; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing; run tests/setup.sh" >&2; exit 1; }
done
tools_bin="$("$repo/packaging/tools.sh")"
export PATH="$tools_bin:$PATH"

if ((build)); then
  echo "== packaging: release build of moed, moectl and moed-http ($triple)" >&2
  (cd "$repo" && nice -n 10 cargo build --quiet --release --locked "${cargo_target[@]}" -p moed -p moectl -p moed-http) >&2
fi
echo "== packaging: plugins ${shipped_plugins[*]}" >&2
"$repo/plugins/build.sh" "${shipped_plugins[@]}" >&2

root="$release/package-root"
stage="$root.new"
rm -rf "$stage"
mkdir -p "$stage"/{bin,lib,plugins,man/man1,man/man8,completions,doc}

# Into an empty directory: provision.sh then takes the wheel from its cache (fetching it if
# absent) and checks its SHA-256 on every build, and the wheel is there for the notices below.
ort_lib="$("$repo/packaging/onnxruntime/provision.sh" --arch "$arch" "$stage/ort")"

# As dh_strip does: the release profile keeps line tables for backtraces, packages do not.
for bin in moed moectl moed-http; do
  "$strip_tool" --remove-section=.comment --remove-section=.note -o "$stage/bin/$bin" "$release/$bin"
done
# The pinned upstream library as extracted (already stripped); only the versioned file, which is
# the name the daemon looks for in /usr/lib/moed/ (a bare .so link is a development file).
mv "$ort_lib" "$stage/lib/"
rm -rf "$stage/ort"
for name in "${shipped_plugins[@]}"; do
  for ext in wasm toml; do
    [[ -f "$repo/target/plugins/$name.$ext" ]] || { echo "build.sh: plugins/build.sh left no target/plugins/$name.$ext" >&2; exit 1; }
    cp "$repo/target/plugins/$name.$ext" "$stage/plugins/"
  done
done

# ONNX Runtime's licence and third-party notices, from the wheel provision.sh just verified (in its
# cache, named as provision.sh names it): the library embeds curl, Mbed TLS and more.
ort_version="${ort_lib##*/libonnxruntime.so.}"
machine="${triple%%-*}"
wheels=("${MOE_WHEEL_CACHE:-$repo/target/wheels}/onnxruntime-${ort_version}-"*"_${machine}.whl")
[[ -f "${wheels[0]}" ]] || { echo "build.sh: no onnxruntime-${ort_version} wheel in ${MOE_WHEEL_CACHE:-$repo/target/wheels} (provision.sh's cache)" >&2; exit 1; }
python3 - "${wheels[0]}" "$stage/doc" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name, out in (("onnxruntime/LICENSE", "onnxruntime-LICENSE"),
                      ("onnxruntime/ThirdPartyNotices.txt", "onnxruntime-ThirdPartyNotices.txt")):
        with open(f"{dest}/{out}", "wb") as f:
            f.write(z.read(name))
PY
gzip -9n "$stage/doc/onnxruntime-ThirdPartyNotices.txt"

# The generate-assets commands run the staged binaries; for another architecture under qemu-user.
mkdir -p "$stage/run"
for bin in moed moectl; do arch_wrap "$arch" "$stage/bin/$bin" "$stage/run/$bin"; done
assets="$stage/assets"
"$stage/run/moectl" generate-assets "$assets" >&2
mv "$assets"/*.1 "$stage/man/man1/"
mv "$assets/moectl.bash" "$assets/_moectl" "$assets/moectl.fish" "$stage/completions/"
"$stage/run/moed" generate-assets "$assets" >&2
mv "$assets/moed.8" "$stage/man/man8/"
rmdir "$assets" || { echo "build.sh: generate-assets wrote files this script does not package: $(ls "$assets")" >&2; exit 1; }
rm -rf "$stage/run"
# -n: no time stamp in the gzip header, so equal inputs give equal packages.
gzip -9n "$stage"/man/man1/*.1 "$stage/man/man8/moed.8"

rm -rf "$root"
mv "$stage" "$root"

mkdir -p "$deb_out" "$rpm_out"
echo "== packaging: cargo deb (revision $revision)" >&2
deb_flags=() rpm_flags=()
if ((fast)); then deb_flags=(--fast); rpm_flags=(--payload-compress gzip); fi
# cargo-deb deletes the package's other versions from $TARGET/debian whatever --output says: keep
# them when writing elsewhere (the lifecycle test's upgrade must not delete the package it upgrades).
kept="$(mktemp -d)"
if [[ -n "$out" ]]; then find "$target/debian" -maxdepth 1 \( -name 'moed_*.deb' -o -name 'moed-import_*.deb' \) -exec cp -p {} "$kept/" \; 2>/dev/null || true; fi
deb="$(cd "$repo" && cargo deb --quiet -p moed --no-build --no-strip "${cargo_target[@]}" "${deb_flags[@]}" --deb-revision "$revision" --output "$deb_out")"
# The companion moed-import (variant "import"): the exporter's Python files, nothing compiled.
echo "== packaging: cargo deb --variant import (moed-import, revision $revision)" >&2
import_deb="$(cd "$repo" && cargo deb --quiet -p moed --variant import --no-build --no-strip "${cargo_target[@]}" "${deb_flags[@]}" --deb-revision "$revision" --output "$deb_out")"
echo "== packaging: moed-import: $import_deb" >&2
for f in "$kept"/*.deb; do [[ -e "$f" && ! -e "$target/debian/${f##*/}" ]] && mv "$f" "$target/debian/"; done
rm -rf "$kept"
echo "$deb"
if ((rpm)); then
  echo "== packaging: cargo generate-rpm (release $revision)" >&2
  (cd "$repo" && cargo generate-rpm -p daemon --target-dir "$target" "${cargo_target[@]}" "${rpm_flags[@]}" \
    --set-metadata "release = \"$revision\"" --output "$rpm_out") >&2
  echo "== packaging: cargo generate-rpm --variant import (moed-import, noarch, release $revision)" >&2
  (cd "$repo" && cargo generate-rpm -p daemon --variant import --arch noarch --target-dir "$target" "${rpm_flags[@]}" \
    --set-metadata "release = \"$revision\"" --output "$rpm_out") >&2
  # moed-[0-9]: not the companions moed-cuda-<ver> and moed-import-<ver>, which may lie in the same folder.
  ls -t "$rpm_out"/moed-[0-9]*-"$revision"."$machine".rpm | head -n 1
fi
