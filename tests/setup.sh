#!/usr/bin/env bash
# Installs what building and testing moed needs on a fresh Debian machine. Idempotent; run as root or
# with sudo available. Called by tests/run.sh (and so by .ci/run); safe to run by hand.
#
# What it provides:
#   - Debian packages: build tools; python3-numpy, python3-onnx, python3-tqdm (and python3-venv), the system Python
#     that `moectl models import` and its test (ctl/tests/import.rs) run the exporter with, no
#     virtualenv; for the service tests dbus (dbus-daemon), systemd (busctl;
#     systemd-socket-activate starts moed-http in its tests), curl (moed-http's tests),
#     libglib2.0-bin (gdbus), util-linux (setpriv); for the knowledge tests postgresql (a throwaway
#     cluster is started by the tests themselves; Debian's own cluster is not used) and sqlite3
#   - rustfmt/clippy components and the wasm32-wasip2 target (for plugins)
#   - a Python virtualenv at $MOE_VENV (default <repo>/.venv) with the exporter and its test deps,
#     and the `openai` client the moed-http tests drive the bridge with
#   - the pinned ONNX Runtime library (packaging/onnxruntime/provision.sh)
#   - for the packages (packaging/): lintian, rpm, debootstrap, systemd-container
#     (systemd-nspawn), and the pinned cargo-deb and cargo-generate-rpm (packaging/tools.sh,
#     cached in $MOE_TOOL_CACHE, default /var/cache/moed-ci/tools)
#   - for the arm64 packages: Debian's aarch64 cross toolchain (gcc-aarch64-linux-gnu,
#     libc6-dev-arm64-cross), the aarch64-unknown-linux-gnu Rust target, and qemu-user-static with
#     binfmt-support for running arm64 binaries here (packaging/build.sh --arch arm64,
#     packaging/emulated.sh)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MOE_VENV:-$repo/.venv}"

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
for pkg in pkg-config build-essential dbus systemd curl libglib2.0-bin util-linux postgresql sqlite3 \
  lintian rpm debootstrap systemd-container file time python3-numpy python3-onnx python3-tqdm python3-venv \
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static binfmt-support; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$pkg")
done
if ((${#need_pkgs[@]})); then
  echo "setup: installing Debian packages: ${need_pkgs[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found. Install Rust >= 1.92 with rustup (https://rustup.rs), then re-run." >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-wasip2 aarch64-unknown-linux-gnu >/dev/null

if [[ ! -x "$venv/bin/python3" ]]; then
  echo "setup: creating Python virtualenv $venv" >&2
  python3 -m venv "$venv"
fi
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
  -r "$repo/models/export/requirements-test.txt" -e "$repo/models/export" \
  -r "$repo/daemon/http/tests/requirements.txt" >&2

"$repo/packaging/onnxruntime/provision.sh" >/dev/null

# The first build of the two takes about 9 minutes on 2 cores; later runs find them in the cache.
"$repo/packaging/tools.sh" >/dev/null
