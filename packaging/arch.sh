# The architectures moed is packaged for, in one place; sourced by packaging/build.sh, check.sh and
# onnxruntime/provision.sh. Debian names (amd64, arm64) are the scripts' vocabulary; the Rust triple
# gives cargo's target, rpm's architecture and the wheel's machine (its first part).

# This machine's architecture, as Debian names it.
arch_native() {
  case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    *) uname -m ;;
  esac
}

# arch_triple ARCH: the Rust target triple; fails (status 1) for an architecture moed is not built for.
arch_triple() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    *) return 1 ;;
  esac
}

# arch_cross_prefix ARCH: the prefix of Debian's cross toolchain for ARCH (aarch64-linux-gnu-gcc,
# -strip; its libc in /usr/PREFIX), empty for amd64, which is only built natively.
arch_cross_prefix() {
  case "$1" in
    arm64) echo aarch64-linux-gnu ;;
    *) echo "" ;;
  esac
}

# arch_wrap ARCH BIN OUT: writes OUT, a script that runs BIN with its arguments: directly for this
# machine's architecture, under qemu-user with the cross libc for another (qemu-user-static and
# libc6-<arch>-cross, which tests/setup.sh installs).
arch_wrap() {
  local arch="$1" bin="$2" out="$3" run=""
  if [[ "$arch" != "$(arch_native)" ]]; then
    local prefix qemu
    prefix="$(arch_cross_prefix "$arch")"
    qemu="qemu-${prefix%%-*}-static"
    [[ -n "$prefix" ]] && command -v "$qemu" >/dev/null \
      || { echo "arch.sh: cannot run $arch binaries here ($qemu missing? run tests/setup.sh)" >&2; return 1; }
    run="$qemu -L /usr/$prefix "
  fi
  printf '#!/bin/sh\nexec %s"%s" "$@"\n' "$run" "$bin" >"$out"
  chmod +x "$out"
}
