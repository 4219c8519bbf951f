# Sourced by the offline checks (packaging/check.sh, packaging/check-cuda.sh,
# packaging/onnxruntime/check-gpu.sh): `fail` counts and names a failed check, `ok` a passed one,
# `checks_done NAME` exits 1 when any failed; $work is a scratch folder removed at exit.
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
checks_done() {
  if ((failures)); then
    echo "$1: $failures check(s) failed" >&2
    exit 1
  fi
}

# verify_unit_installed WORK UNIT DEB...
#   Unpacks each DEB into WORK/pkg (left there for further checks) and prints what
#   `systemd-analyze verify UNIT` prints on this machine with those files laid over it: an overlay in
#   a private mount namespace, so nothing is installed here and the unit's ExecStart= binary,
#   Documentation= man pages and drop-ins are checked as installed.
verify_unit_installed() {
  local work="$1" unit="$2" deb
  shift 2
  mkdir -p "$work/pkg"
  for deb in "$@"; do dpkg-deb -x "$deb" "$work/pkg"; done
  # A tmpfs of its own, so the layers do not overlap the host root they are laid on. Mounting needs
  # root (sudo otherwise, as tests/setup.sh does); nothing outside the private namespace changes.
  local as_root=()
  [[ $(id -u) -eq 0 ]] || as_root=(sudo)
  "${as_root[@]}" unshare --mount --propagation private bash -euc '
    ov="$1"; pkg="$2"; unit="$3"
    mkdir -p "$ov"; mount -t tmpfs moed-verify "$ov"; mkdir -p "$ov"/{host,pkg,up,work,root}
    cp -a "$pkg"/. "$ov/pkg/"
    mount --bind / "$ov/host"
    mount -t overlay moed-verify -o "lowerdir=$ov/pkg:$ov/host,upperdir=$ov/up,workdir=$ov/work" "$ov/root"
    mount -t proc proc "$ov/root/proc"
    mount --rbind /dev "$ov/root/dev"
    chroot "$ov/root" systemd-analyze verify "$unit"
  ' verify "$work/ov" "$work/pkg" "$unit" 2>&1 || true
  rmdir "$work/ov" 2>/dev/null || true
}
