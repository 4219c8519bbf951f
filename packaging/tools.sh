#!/usr/bin/env bash
# Installs the pinned packaging tools (cargo-deb, cargo-generate-rpm) into a cache root shared by
# consecutive CI runs, and prints that root's bin directory. Idempotent: a tool already installed at
# its pinned version is kept (the first build takes ~6 and ~11 minutes on 2 cores).
#
#   packaging/tools.sh        -> prints e.g. /var/cache/moed-ci/tools/bin
# MOE_TOOL_CACHE overrides the root (default /var/cache/moed-ci/tools).
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

root="${MOE_TOOL_CACHE:-/var/cache/moed-ci/tools}"
mkdir -p "$root"

install_pinned() {
  local crate="$1" version="$2" bin="$3"
  if [[ -x "$root/bin/$bin" && "$("$root/bin/$bin" --version 2>/dev/null)" == "$bin $version" ]]; then
    return 0
  fi
  echo "tools.sh: building $crate $version into $root (first time: several minutes)" >&2
  # Without CARGO_TARGET_DIR cargo install builds in a temporary directory it removes afterwards,
  # away from the workspace's target directory and its lock.
  env -u CARGO_TARGET_DIR nice -n 10 cargo install --quiet --locked --force \
    --root "$root" --version "=$version" "$crate" >&2
}

install_pinned cargo-deb "$CARGO_DEB_VERSION" cargo-deb
install_pinned cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION" cargo-generate-rpm
echo "$root/bin"
