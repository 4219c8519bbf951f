#!/usr/bin/env bash
# The Debian bookworm roots the package tests install into (packaging/lifecycle.sh on amd64,
# packaging/emulated.sh on arm64): debootstrapped once per architecture and package list, cached as
# a tarball, its path printed on stdout.
#
#   packaging/debian-base.sh ARCH PACKAGES
#
# ARCH is a Debian architecture (amd64, arm64); PACKAGES the comma-separated list debootstrap adds
# to minbase. A foreign architecture's second stage runs under qemu-user (binfmt_misc must hand its
# binaries to qemu, as packaging/emulated.sh arranges). The cache is $MOE_CI_CACHE/lifecycle
# (default /var/cache/moed-ci/lifecycle); bookworm-ARCH-KEY.tar, KEY from the package list and the
# mirror ($MOE_DEBIAN_MIRROR, default deb.debian.org). Needs root and debootstrap.
set -euo pipefail

arch="${1:?usage: packaging/debian-base.sh ARCH PACKAGES}"
packages="${2:?usage: packaging/debian-base.sh ARCH PACKAGES}"
cache="${MOE_CI_CACHE:-/var/cache/moed-ci}/lifecycle"
mirror="${MOE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
[[ "$arch" =~ ^[a-z0-9]+$ ]] || { echo "debian-base.sh: '$arch' is not a Debian architecture name" >&2; exit 2; }

key="$(printf '%s %s %s' "$arch" "$packages" "$mirror" | sha256sum | cut -c1-12)"
base="$cache/bookworm-$arch-$key.tar"
if [[ ! -f "$base" ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "debian-base.sh: needs root (debootstrap)" >&2; exit 1; }
  command -v debootstrap >/dev/null || { echo "debian-base.sh: debootstrap is missing; run tests/setup.sh" >&2; exit 1; }
  echo "debian-base.sh: debootstrap --arch=$arch bookworm ($packages) from $mirror" >&2
  mkdir -p "$cache"
  work="$(mktemp -d /var/tmp/moed-debian-base.XXXXXX)"
  trap 'rm -rf --one-file-system "$work"' EXIT
  debootstrap --arch="$arch" --variant=minbase --include="$packages" bookworm "$work/base" "$mirror" \
    >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; echo "debian-base.sh: debootstrap failed (log above)" >&2; exit 1; }
  rm -rf "$work/base/var/cache/apt/archives/"*.deb
  tar -C "$work/base" -cf "$base.tmp" . && mv "$base.tmp" "$base"
  # This architecture's bases of other package lists are stale now.
  find "$cache" -maxdepth 1 -name "bookworm-$arch-*.tar" ! -name "$(basename "$base")" -delete
fi
echo "$base"
