#!/usr/bin/env bash
# Offline checks of the GPU companion package moed-cuda (packaging/build.sh --gpu); each fails with
# the reason named:
#   1. moed.service with the package's drop-in: `systemd-analyze security --offline=true` exposure at
#      most 2.0, the drop-in's settings in effect; `systemd-analyze verify` printing nothing with
#      moed's and moed-cuda's .deb laid over this system (when MOED_DEB is given);
#   2. the .deb's and .rpm's contents: the onnxruntime-gpu library the drop-in names and its three
#      provider libraries in /usr/lib/moed/gpu/, the drop-in, the licences; nothing that moed's own
#      package holds (/usr/lib/moed/libonnxruntime.so.*, the unit), no bare libonnxruntime.so;
#   3. name, architecture, the dependency on moed, the maintainer scripts/scriptlets (daemon-reload
#      and try-restart of moed.service; never stop, disable or purge it);
#   4. lintian reports no errors on the .deb.
#
#   packaging/check-cuda.sh DEB RPM [MOED_DEB]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deb="${1:?usage: check-cuda.sh DEB RPM [MOED_DEB]}"
rpm_file="${2:?usage: check-cuda.sh DEB RPM [MOED_DEB]}"
moed_deb="${3:-}"
for f in "$deb" "$rpm_file" ${moed_deb:+"$moed_deb"}; do
  [[ -f "$f" ]] || { echo "check-cuda.sh: $f does not exist; run packaging/build.sh --gpu" >&2; exit 1; }
done

# shellcheck source=packaging/checks.sh
source "$repo/packaging/checks.sh"

gpu_version="$(sed -n 's/^GPU_ORT_VERSION=//p' "$repo/packaging/onnxruntime/provision.sh")"
dropin=/usr/lib/systemd/system/moed.service.d/cuda.conf
gpu_lib="/usr/lib/moed/gpu/libonnxruntime.so.$gpu_version"
expected=(
  "$gpu_lib"
  /usr/lib/moed/gpu/libonnxruntime_providers_shared.so
  /usr/lib/moed/gpu/libonnxruntime_providers_cuda.so
  /usr/lib/moed/gpu/libonnxruntime_providers_tensorrt.so
  "$dropin"
)
# Anything else may only be NVIDIA's libraries (--cuda-libs) or documentation.
allowed='^(/usr/lib/moed/gpu/libonnxruntime(\.so\.[0-9.]+|_providers_(shared|cuda|tensorrt)\.so)|/usr/lib/moed/cuda/lib[A-Za-z0-9_]+\.so\.[0-9.]+|/usr/lib/systemd/system/moed\.service\.d/cuda\.conf|/usr/share/(doc|licenses)/moed-cuda/.+)$'

mkdir -p "$work/pkg"
dpkg-deb -x "$deb" "$work/pkg"

echo "== unit: moed.service with the drop-in, systemd-analyze security --offline=true"
mkdir -p "$work/unit/moed.service.d"
cp "$repo/systemd/moed.service" "$work/unit/"
if [[ -f "$work/pkg$dropin" ]]; then
  cp "$work/pkg$dropin" "$work/unit/moed.service.d/cuda.conf"
  security="$(systemd-analyze security --offline=true "$work/unit/moed.service" 2>&1)"
  exposure="$(sed -n 's/.*Overall exposure level for moed.service: \([0-9.]*\).*/\1/p' <<<"$security")"
  # The drop-in must have been read: its device ACL is in the verdict.
  if ! grep -q 'DeviceAllow=.*char-nvidia\*:rw' <<<"$security"; then
    fail "systemd-analyze security did not apply the drop-in (no char-nvidia* in DeviceAllow=): $(tail -n 3 <<<"$security")"
  elif [[ -z "$exposure" ]]; then
    fail "systemd-analyze security printed no exposure level: $(tail -n 3 <<<"$security")"
  elif awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }'; then
    ok "exposure with the drop-in $exposure (at most 2.0); $(grep -o 'Service has a device ACL.*rw' <<<"$security")"
  else
    fail "exposure with the drop-in $exposure is above 2.0"
  fi
  if [[ "$(sed -n 's/^Environment=ORT_DYLIB_PATH=//p' "$work/pkg$dropin")" == "$gpu_lib" ]]; then
    ok "the drop-in points ORT_DYLIB_PATH at $gpu_lib"
  else
    fail "the drop-in does not set Environment=ORT_DYLIB_PATH=$gpu_lib"
  fi
else
  fail "the .deb has no $dropin"
fi
if [[ -n "$moed_deb" ]]; then
  echo "== unit: systemd-analyze verify, with moed's and moed-cuda's .deb laid over this system"
  verify_out="$(verify_unit_installed "$work/verify" moed.service "$moed_deb" "$deb")"
  if [[ -n "$verify_out" ]]; then fail "systemd-analyze verify printed: $verify_out"; else ok "systemd-analyze verify moed.service (with cuda.conf) printed nothing"; fi
fi

# check_list WHAT LISTFILE: the expected files are there, nothing else is.
check_list() {
  local what="$1" list="$2" p missing=0
  for p in "${expected[@]}"; do
    grep -qxF -- "$p" "$list" || { fail "$what lacks $p"; missing=1; }
  done
  ((missing)) || ok "$what holds the ${#expected[@]} expected files"
  if grep -vE -- "$allowed" "$list" >"$work/extra"; then
    fail "$what holds files outside moed-cuda's folders: $(tr '\n' ' ' <"$work/extra")"
  else
    ok "$what holds only /usr/lib/moed/gpu, /usr/lib/moed/cuda, the drop-in and its documentation ($(wc -l <"$list") files)"
  fi
}

echo "== deb: $(basename "$deb")"
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $6 }' | sed 's#^\./#/#' >"$work/deb.list"
check_list ".deb" "$work/deb.list"
grep -qx /usr/share/doc/moed-cuda/copyright "$work/deb.list" || fail ".deb lacks /usr/share/doc/moed-cuda/copyright"
[[ "$(dpkg-deb -f "$deb" Package)" == moed-cuda ]] || fail "the .deb's package is '$(dpkg-deb -f "$deb" Package)', not moed-cuda"
[[ "$(dpkg-deb -f "$deb" Architecture)" == amd64 ]] || fail "the .deb is for '$(dpkg-deb -f "$deb" Architecture)', not amd64"
depends="$(dpkg-deb -f "$deb" Depends)"
if grep -qE '(^|, )moed( |,|$)' <<<"$depends"; then ok "Depends: $depends"; else fail "Depends does not name moed: $depends"; fi
mkdir -p "$work/control"
dpkg-deb -e "$deb" "$work/control"
[[ ! -s "$work/control/conffiles" ]] || fail "moed-cuda has conffiles: $(cat "$work/control/conffiles")"
for s in postinst postrm; do
  [[ -f "$work/control/$s" ]] || { fail "the .deb has no $s"; continue; }
  sh -n "$work/control/$s" || fail "$s is not valid sh"
  for pattern in "systemctl --system daemon-reload" "deb-systemd-invoke try-restart moed.service" "[ -d /run/systemd/system ]"; do
    grep -qF -- "$pattern" "$work/control/$s" || fail "$s lacks: $pattern"
  done
done
[[ ! -e "$work/control/prerm" ]] || fail "the .deb has a prerm (moed-cuda must not stop moed)"
if grep -lE 'stop moed|disable moed|purge|userdel|#DEBHELPER#' "$work/control"/* >"$work/bad" 2>/dev/null; then
  fail "maintainer scripts stop, disable or purge moed: $(tr '\n' ' ' <"$work/bad")"
else
  ok "maintainer scripts: daemon-reload and try-restart of moed.service on install and removal, nothing else"
fi

echo "== rpm: $(basename "$rpm_file")"
[[ "$(rpm -qp --qf '%{NAME} %{ARCH}' "$rpm_file" 2>/dev/null)" == "moed-cuda x86_64" ]] \
  && ok "the .rpm is moed-cuda for x86_64" || fail "the .rpm is '$(rpm -qp --qf '%{NAME} %{ARCH}' "$rpm_file" 2>/dev/null)'"
rpm -qp --list "$rpm_file" 2>/dev/null >"$work/rpm.list"
check_list ".rpm" "$work/rpm.list"
rpm -qp --requires "$rpm_file" 2>/dev/null >"$work/rpm.requires"
grep -qE '^moed( |$)' "$work/rpm.requires" && ok "Requires: moed" || fail "Requires lacks moed: $(tr '\n' ' ' <"$work/rpm.requires")"
if grep -E '^lib(cuda|cudart|cublas|cudnn|nvinfer)' "$work/rpm.requires" >"$work/bad"; then
  fail "Requires names NVIDIA libraries (moed reports them at run time instead): $(tr '\n' ' ' <"$work/bad")"
fi
rpm -qp --scripts "$rpm_file" 2>/dev/null >"$work/rpm.scripts"
for pattern in "postinstall scriptlet" "postuninstall scriptlet" "systemctl daemon-reload" "systemctl try-restart moed.service"; do
  grep -qF -- "$pattern" "$work/rpm.scripts" || fail "the .rpm's scriptlets lack: $pattern"
done
if grep -E 'stop moed|disable moed' "$work/rpm.scripts" >"$work/bad"; then
  fail "the .rpm's scriptlets stop or disable moed: $(tr '\n' ' ' <"$work/bad")"
fi
for f in "$repo"/packaging/rpm/cuda_*.sh; do sh -n "$f" || fail "$(basename "$f") is not valid sh"; done
ok "scriptlets: daemon-reload and try-restart of moed.service, never stop or disable"

echo "== deb: lintian $(dpkg-deb -f "$deb" Version)"
lintian_out="$(lintian --info --display-info --tag-display-limit 0 "$deb" 2>&1)" || true
echo "${lintian_out:-(lintian printed nothing)}"
if grep -q '^E: ' <<<"$lintian_out"; then fail "lintian reports errors"; else ok "lintian: no errors"; fi

checks_done check-cuda.sh
echo "check-cuda.sh: all moed-cuda package checks passed"
