#!/usr/bin/env bash
# The .deb's whole life on a real systemd: a Debian bookworm root from debootstrap, booted with
# systemd-nspawn; a oneshot unit inside (packaging/lifecycle-checks.sh) installs, uses, upgrades,
# removes and purges the package, writes its results and powers the container off.
#
#   packaging/lifecycle.sh [DEB [UPGRADE_DEB [IMPORT_DEB]]]
#
# DEB defaults to the revision-1 .deb of this version in $TARGET/debian (packaging/build.sh makes
# it); UPGRADE_DEB to the same binaries packaged as revision 2, built here with
# `packaging/build.sh --no-build --deb-only --fast --revision 2`; IMPORT_DEB to the companion
# moed-import next to DEB (packaging/build.sh makes both): inside the container, with Debian's own
# python3-numpy, python3-onnx and python3-tqdm and no virtualenv, `moectl models import` converts a
# fixture checkpoint, which moed then loads and answers with.
#
# Before booting, the package is also installed and purged in the plain chroot (no systemd running,
# /run/systemd/system absent): the maintainer scripts must cope with that.
#
# Needs root, debootstrap and systemd-nspawn (tests/setup.sh installs them). The debootstrapped base
# comes from packaging/debian-base.sh, cached as a tarball in $MOE_CI_CACHE/lifecycle (default
# /var/cache/moed-ci/lifecycle); the first run fetches it from deb.debian.org (about 1.5 min),
# later runs unpack it (seconds).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)"
deb="${1:-$target/debian/moed_${version}-1_amd64.deb}"
upgrade="${2:-}"
# What the base holds besides minbase: systemd as PID 1, the system bus, polkit (so the daemon's
# real polkit path is exercised; it needs a logind, libpam-systemd), and everything the package
# Depends on, so that installing it needs no network (dpkg refuses it if a dependency is missing);
# moed-import's Python dependencies too, from the archive.
base_packages="systemd,systemd-sysv,libpam-systemd,dbus,polkitd,libstdc++6,libgcc-s1,passwd,procps,python3,python3-numpy,python3-onnx,python3-tqdm"
started=$SECONDS

[[ $(id -u) -eq 0 ]] || { echo "lifecycle.sh: needs root (debootstrap, chroot, systemd-nspawn)" >&2; exit 1; }
for tool in debootstrap systemd-nspawn; do
  command -v "$tool" >/dev/null || { echo "lifecycle.sh: $tool is missing; run tests/setup.sh" >&2; exit 1; }
done
[[ -f "$deb" ]] || { echo "lifecycle.sh: $deb does not exist; run packaging/build.sh" >&2; exit 1; }
import_deb="${3:-$(dirname "$deb")/moed-import_${version}-$(dpkg-deb -f "$deb" Version | sed 's/.*-//')_amd64.deb}"
[[ -f "$import_deb" ]] || { echo "lifecycle.sh: $import_deb does not exist; packaging/build.sh builds it beside moed's" >&2; exit 1; }

work="$(mktemp -d /var/tmp/moed-lifecycle.XXXXXX)"
root="$work/root"
cleanup() {
  # The chroot phase mounts /proc; never leave it behind before deleting the tree.
  umount "$root/proc" 2>/dev/null || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
step() { echo "== lifecycle [$((SECONDS - started))s]: $*"; }

if [[ -z "$upgrade" ]]; then
  step "upgrade package: the same binaries as revision 2"
  upgrade="$("$repo/packaging/build.sh" --no-build --deb-only --fast --revision 2 --out "$work/upgrade")"
fi
v1="$(dpkg-deb -f "$deb" Version)" v2="$(dpkg-deb -f "$upgrade" Version)"
dpkg --compare-versions "$v2" gt "$v1" || { echo "lifecycle.sh: $upgrade ($v2) is not newer than $deb ($v1)" >&2; exit 1; }

step "the Debian base (packaging/debian-base.sh)"
base="$("$repo/packaging/debian-base.sh" amd64 "$base_packages")"
step "unpacking the base $(basename "$base")"
mkdir -p "$root"
tar -C "$root" -xf "$base"

step "chroot install and purge, systemd not running"
cp "$deb" "$root/root/moed-1.deb"
cp "$upgrade" "$root/root/moed-2.deb"
mount -t proc proc "$root/proc"
chroot_out="$(chroot "$root" /bin/sh -ec '
  test ! -d /run/systemd/system
  dpkg -i /root/moed-1.deb
  getent passwd moed
  test -L /etc/systemd/system/multi-user.target.wants/moed.service
  test -L /etc/systemd/system/dbus-org.moed.Moed1.service
  dpkg --purge moed
  if getent passwd moed; then echo "the moed user survived the purge"; exit 1; fi
  test ! -e /etc/systemd/system/multi-user.target.wants/moed.service
' 2>&1)" || { echo "$chroot_out" >&2; echo "FAIL: chroot install/purge" >&2; exit 1; }
umount "$root/proc"
echo "ok: chroot install (user created, unit and bus alias enabled, nothing started) and purge (user gone)"

step "booting the container"
install -m 0755 "$repo/packaging/lifecycle-checks.sh" "$root/root/lifecycle-checks.sh"
cp "$import_deb" "$root/root/moed-import.deb"
mkdir -p "$root/root/hf"
cp -r "$repo/models/fixtures/qwen3_moe" "$root/root/hf/"
cat >"$root/etc/systemd/system/moed-lifecycle.service" <<'EOF'
[Unit]
Description=moed package lifecycle checks
After=multi-user.target dbus.service polkit.service
[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/root/lifecycle-checks.sh /root/moed-1.deb /root/moed-2.deb /root/lifecycle-results /root/moed-import.deb /root/hf/qwen3_moe
ExecStopPost=/bin/systemctl poweroff --no-block
TimeoutStartSec=600
[Install]
WantedBy=multi-user.target
EOF
ln -s /etc/systemd/system/moed-lifecycle.service "$root/etc/systemd/system/multi-user.target.wants/moed-lifecycle.service"
boot_started=$SECONDS
rc=0
# On a host with the hybrid cgroup layout (cgroup v1 plus a v2 "unified" tree, as on this project's
# build machines) the container gets the legacy layout; a pure cgroup v2 host needs nothing.
legacy=()
[[ "$(stat -fc %T /sys/fs/cgroup)" == cgroup2fs ]] || legacy=(env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=0)
"${legacy[@]}" timeout 900 systemd-nspawn -q -D "$root" --register=no --keep-unit \
  --private-network --boot >"$work/console.log" 2>&1 || rc=$?
step "container powered off after $((SECONDS - boot_started))s (systemd-nspawn exit status $rc)"

if [[ ! -f "$root/root/lifecycle-results" ]]; then
  tail -n 60 "$work/console.log" >&2
  echo "lifecycle.sh: the checks wrote no results (console above)" >&2
  exit 1
fi
cat "$root/root/lifecycle-results"
if ! tail -n 1 "$root/root/lifecycle-results" | grep -qx 'RESULT: pass'; then
  echo "--- journal of the container (moed.service and the checks) ---" >&2
  journalctl -D "$root/var/log/journal" --no-pager -u moed.service -u moed-lifecycle.service 2>/dev/null | tail -n 80 >&2 || true
  echo "lifecycle.sh: FAILED" >&2
  exit 1
fi
step "passed"
