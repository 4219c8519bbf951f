#!/usr/bin/env bash
# Offline checks of what packaging/build.sh made; each fails with the reason named:
#   1. the units (moed.service, moed-http.service): `systemd-analyze security --offline=true`
#      exposure at most 2.0, and
#      `systemd-analyze verify` printing nothing, run on this machine with the .deb's files laid
#      over it (an overlay in a private mount namespace: nothing is installed here), so the
#      ExecStart= binary and the Documentation= man pages are checked as installed;
#   2. packaging/moed.toml passes `moed check-config`, also with every commented key switched on;
#   3. lintian reports no errors on the .deb (its whole output is printed);
#   4. the .deb's and .rpm's contents, conffiles/config files, maintainer scripts/scriptlets and
#      requirements (`dpkg-deb`, `rpm -qp --list/--configfiles/--scripts/--requires`);
#   5. the companion moed-import (packaging/import-checks.sh): the exporter's files and nothing else,
#      dependencies from the distribution (python3-numpy, python3-onnx, python3-tqdm), no service
#      scriptlets, lintian without errors, and the packaged exporter run by this machine's python3.
#
#   packaging/check.sh [DEB RPM [IMPORT_DEB IMPORT_RPM]]
#     (default: the amd64 packages of this version in $TARGET; moed-import's next to moed's)
#
# The packages may be of another architecture than this machine's (packaging/build.sh --arch
# arm64): the same checks apply, moed check-config then runs under qemu-aarch64-static.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)"
deb="${1:-$target/debian/moed_${version}-1_amd64.deb}"
rpm_file="${2:-$target/generate-rpm/moed-${version}-1.x86_64.rpm}"
for f in "$deb" "$rpm_file"; do
  [[ -f "$f" ]] || { echo "check.sh: $f does not exist; run packaging/build.sh" >&2; exit 1; }
done

# shellcheck source=packaging/arch.sh
source "$repo/packaging/arch.sh"
deb_arch="$(dpkg-deb -f "$deb" Architecture)"

# shellcheck source=packaging/checks.sh
source "$repo/packaging/checks.sh"

ort_version="$(sed -n 's/^ORT_VERSION=//p' "$repo/packaging/onnxruntime/provision.sh")"
# Files both packages must hold (the rpm's zsh completion lives in site-functions instead).
expected_common=(
  /usr/bin/moed /usr/bin/moectl /usr/bin/moed-http
  /usr/lib/systemd/system/moed-http.socket /usr/lib/systemd/system/moed-http.service
  /usr/share/doc/moed/http.md
  "/usr/lib/moed/libonnxruntime.so.$ort_version"
  /usr/share/moed/models/moe-mini/manifest.json /usr/share/moed/models/moe-mini/tokenizer.json
  /usr/share/moed/models/moe-mini/generation_config.json /usr/share/moed/models/moe-mini/tokenizer_config.json
  /etc/moed/moed.toml
  /usr/lib/systemd/system/moed.service
  /usr/share/dbus-1/system.d/org.moed.Moed1.conf
  /usr/share/dbus-1/system-services/org.moed.Moed1.service
  /usr/share/polkit-1/actions/org.moed.policy
  /usr/lib/sysusers.d/moed.conf /usr/lib/tmpfiles.d/moed.conf
  /usr/share/man/man8/moed.8.gz /usr/share/man/man1/moectl.1.gz /usr/share/man/man1/moectl-generate.1.gz
  /usr/share/bash-completion/completions/moectl /usr/share/fish/vendor_completions.d/moectl.fish
  /usr/share/doc/moed/README.systemd.md
)
# Every reference plugin (a manifest directly under plugins/; hostile fixtures are deeper).
for manifest in "$repo"/plugins/*/plugin.toml; do
  p="$(basename "$(dirname "$manifest")")"
  expected_common+=("/usr/share/moed/plugins/$p.wasm" "/usr/share/moed/plugins/$p.toml")
done
# Every file of the model package, read from its manifest's directory in the source tree.
while IFS= read -r f; do
  expected_common+=("/usr/share/moed/models/moe-mini/${f#"$repo/models/moe-mini/"}")
done < <(find "$repo/models/moe-mini" -type f | sort)

# want LISTFILE PATH...: each PATH must be a line of LISTFILE.
want() {
  local list="$1" what="$2"; shift 2
  local missing=0
  for p in "$@"; do
    grep -qxF -- "$p" "$list" || { fail "$what lacks $p"; missing=1; }
  done
  return $missing
}
# refuse LISTFILE REGEX WHAT: no line may match.
refuse() {
  if grep -E -- "$2" "$1" >"$work/refused"; then fail "$3: $(tr '\n' ' ' <"$work/refused")"; return 1; fi
}

echo "== units: systemd-analyze security --offline=true"
for unit in moed.service moed-http.service; do
  security="$(systemd-analyze security --offline=true "$repo/systemd/$unit" 2>&1 | tail -n 3)"
  exposure="$(sed -n "s/.*Overall exposure level for $unit: \([0-9.]*\).*/\1/p" <<<"$security")"
  if [[ -z "$exposure" ]]; then
    fail "$unit: systemd-analyze security printed no exposure level: $security"
  elif awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }'; then
    ok "$unit: exposure $exposure (at most 2.0): $(grep -o 'Overall exposure.*' <<<"$security")"
  else
    fail "$unit: exposure $exposure is above 2.0"
  fi
done

echo "== units: systemd-analyze verify, with the .deb's files laid over this system"
for unit in moed.service moed-http.socket moed-http.service; do
  verify_out="$(verify_unit_installed "$work" "$unit" "$deb")"
  if [[ -n "$verify_out" ]]; then
    fail "systemd-analyze verify $unit printed: $verify_out"
  else
    ok "systemd-analyze verify $unit printed nothing"
  fi
done

echo "== binaries: no path of the build tree searched"
# A debug build also looks for ONNX Runtime in its source tree; the packaged (release) one must not.
if grep -qF "../../target/onnxruntime" "$work/pkg/usr/bin/moed"; then
  fail "/usr/bin/moed searches its build tree's target/onnxruntime/ for ONNX Runtime"
else
  ok "/usr/bin/moed does not search its build tree for ONNX Runtime"
fi
# Likewise a debug moectl looks for the exporter in its source tree's models/export; the packaged one
# must know only /usr/lib/moed/export (and MOED_EXPORTER_DIR).
if grep -qF "../models/export" "$work/pkg/usr/bin/moectl"; then
  fail "/usr/bin/moectl searches its build tree's models/export for the exporter"
elif grep -qF "/usr/lib/moed/export" "$work/pkg/usr/bin/moectl"; then
  ok "/usr/bin/moectl looks for the exporter in /usr/lib/moed/export, not in its build tree"
else
  fail "/usr/bin/moectl does not name /usr/lib/moed/export"
fi

echo "== config: packaging/moed.toml"
# The package's own moed, run here; another architecture's through qemu-user with its cross libc.
mkdir -p "$work/run"
arch_wrap "$deb_arch" "$work/pkg/usr/bin/moed" "$work/run/moed" || exit 1
moed_bin="$work/run/moed"
if out="$("$moed_bin" check-config --config "$repo/packaging/moed.toml" 2>&1)"; then
  grep -qx 'default = "moe-mini"' <<<"$out" && ok "moed check-config accepts it; default model moe-mini" \
    || fail "check-config does not report default = \"moe-mini\": $out"
else
  fail "moed check-config rejects packaging/moed.toml: $out"
fi
# Every documented key switched on must be valid. Groups aside (they must exist on the machine);
# the GPU budget is switched on with a GPU provider listed, as it must be.
grep -v -E '^#(allowed_group|admin_group|bridge_group) ' "$repo/packaging/moed.toml" | sed -E 's/^#([a-z_]+ = )/\1/' |
  sed -E 's/^providers = .*/providers = ["cuda", "cpu"]/' >"$work/all-keys.toml"
if out="$("$moed_bin" check-config --config "$work/all-keys.toml" 2>&1)"; then
  ok "every commented key of moed.toml is a valid key and value"
else
  fail "a commented key of packaging/moed.toml is not accepted: $out"
fi

echo "== deb: lintian $(dpkg-deb -f "$deb" Version)"
lintian_out="$(lintian --info --display-info --pedantic --show-overrides --tag-display-limit 0 "$deb" 2>&1)" || true
echo "${lintian_out:-(lintian printed nothing)}"
if grep -q '^E: ' <<<"$lintian_out"; then
  fail "lintian reports errors"
else
  ok "lintian: no errors"
fi

echo "== deb: contents, conffiles, maintainer scripts, Depends"
dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's#^\./#/#; s#/$##' >"$work/deb.list"
want "$work/deb.list" ".deb" "${expected_common[@]}" /usr/share/zsh/vendor-completions/_moectl \
  /usr/share/doc/moed/copyright /usr/share/doc/moed/changelog.Debian.gz && ok ".deb holds the $((${#expected_common[@]} + 3)) expected files"
refuse "$work/deb.list" 'hostile|/libonnxruntime\.so$' ".deb holds test fixtures or a development link" && ok ".deb holds no hostile plugin and no bare libonnxruntime.so"
mkdir -p "$work/control"
dpkg-deb -e "$deb" "$work/control"
if [[ "$(cat "$work/control/conffiles" 2>/dev/null)" == "/etc/moed/moed.toml" ]]; then ok "conffiles: /etc/moed/moed.toml"; else fail "conffiles is not exactly /etc/moed/moed.toml: $(cat "$work/control/conffiles" 2>/dev/null)"; fi
check_script() {
  local file="$1"; shift
  for pattern in "$@"; do
    grep -qF -- "$pattern" "$file" 2>/dev/null || fail "$(basename "$file") lacks: $pattern"
  done
}
check_script "$work/control/postinst" "systemd-sysusers" "moed.conf" "deb-systemd-helper enable moed.service" \
  "systemctl --system daemon-reload" "_dh_action=restart" "deb-systemd-invoke \$_dh_action moed.service" "if [ -d /run/systemd/system ]" "ReloadConfig"
check_script "$work/control/prerm" "deb-systemd-invoke stop moed.service"
check_script "$work/control/postrm" 'if [ "$1" = "purge" ]' "rm -rf /var/lib/moed /var/cache/moed" "userdel moed" "groupdel moed" "deb-systemd-helper purge moed.service"
for s in postinst prerm postrm; do sh -n "$work/control/$s" || fail "$s is not valid sh"; done
# cargo-deb replaces every copy of its token, even one in a comment: each snippet exactly once.
for pair in "postinst:deb-systemd-invoke \$_dh_action moed.service" "postinst:deb-systemd-helper enable moed.service" \
  "prerm:deb-systemd-invoke stop moed.service" "postrm:deb-systemd-helper purge moed.service"; do
  n="$(grep -cF -- "${pair#*:}" "$work/control/${pair%%:*}" || true)"
  [[ "$n" == 1 ]] || fail "${pair%%:*} has '${pair#*:}' $n times, not once"
done
grep -q '#DEBHELPER#' "$work/control/postinst" "$work/control/prerm" "$work/control/postrm" && fail "a maintainer script still holds the #DEBHELPER# token"
ok "maintainer scripts: sysusers, enable, daemon-reload, start/restart, stop on removal, purge of state and user"
depends="$(dpkg-deb -f "$deb" Depends)"
for d in libc6 libstdc++6 libgcc-s1 systemd dbus polkitd passwd procps; do
  grep -qF -- "$d" <<<"$depends" || fail "Depends lacks $d: $depends"
done
ok "Depends: $depends"

echo "== rpm: $(basename "$rpm_file")"
rpm_arch="$(rpm -qp --qf '%{ARCH}' "$rpm_file" 2>/dev/null)"
want_arch="$(arch_triple "$deb_arch")" && want_arch="${want_arch%%-*}" || want_arch="(none for $deb_arch)"
if [[ "$rpm_arch" == "$want_arch" ]]; then ok "the .rpm is $rpm_arch, as the .deb is $deb_arch"; else fail "the .rpm is '$rpm_arch', the .deb $deb_arch (expected $want_arch)"; fi
rpm -qp --list "$rpm_file" 2>/dev/null >"$work/rpm.list"
want "$work/rpm.list" ".rpm" "${expected_common[@]}" /usr/share/zsh/site-functions/_moectl && ok ".rpm holds the $((${#expected_common[@]} + 1)) expected files"
refuse "$work/rpm.list" 'hostile|/libonnxruntime\.so$' ".rpm holds test fixtures or a development link" && ok ".rpm holds no hostile plugin and no bare libonnxruntime.so"
rpm -qp --configfiles "$rpm_file" 2>/dev/null >"$work/rpm.conf"
if [[ "$(cat "$work/rpm.conf")" == "/etc/moed/moed.toml" ]]; then ok "config files: /etc/moed/moed.toml"; else fail "config files are not exactly /etc/moed/moed.toml: $(cat "$work/rpm.conf")"; fi
# %config(noreplace): rpm's file flags bit 4 (RPMFILE_NOREPLACE).
flags="$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS}\n]' "$rpm_file" 2>/dev/null | awk '$1 == "/etc/moed/moed.toml" { print $2 }')"
if [[ -n "$flags" ]] && (( (flags & 16) && (flags & 1) )); then ok "/etc/moed/moed.toml is %config(noreplace)"; else fail "/etc/moed/moed.toml is not %config(noreplace) (flags '$flags')"; fi
rpm -qp --scripts "$rpm_file" 2>/dev/null >"$work/rpm.scripts"
check_script "$work/rpm.scripts" "postinstall scriptlet" "systemd-sysusers /usr/lib/sysusers.d/moed.conf" "enable moed.service" \
  "systemctl start moed.service" "preuninstall scriptlet" "systemctl stop moed.service" "disable moed.service" \
  "postuninstall scriptlet" "systemctl try-restart moed.service" "systemctl daemon-reload" "if [ -d /run/systemd/system ]"
for f in "$repo"/packaging/rpm/*.sh; do sh -n "$f" || fail "$(basename "$f") is not valid sh"; done
ok "scriptlets: sysusers, enable and start on install, stop and disable on erase, restart after upgrade"
rpm -qp --requires "$rpm_file" 2>/dev/null >"$work/rpm.requires"
for r in systemd dbus polkit /bin/sh /usr/bin/kill 'libc.so.6()(64bit)' 'libstdc++.so.6()(64bit)' 'libgcc_s.so.1()(64bit)'; do
  grep -qE "^$(sed 's/[.()+]/\\&/g' <<<"$r")( |$)" "$work/rpm.requires" || fail "Requires lacks $r"
done
ok "Requires ($(wc -l <"$work/rpm.requires") entries, versions left out here): $(sed -E 's/\(.*//; s/ .*//' "$work/rpm.requires" | sort -u | tr '\n' ' ')"

# shellcheck source=packaging/import-checks.sh
source "$repo/packaging/import-checks.sh"
deb_revision="$(dpkg-deb -f "$deb" Version)" && deb_revision="${deb_revision##*-}"
rpm_release="$(rpm -qp --qf '%{RELEASE}' "$rpm_file" 2>/dev/null)"
check_import_packages "${3:-$(dirname "$deb")/moed-import_${version}-${deb_revision}_${deb_arch}.deb}" \
  "${4:-$(dirname "$rpm_file")/moed-import-${version}-${rpm_release}.noarch.rpm}"

checks_done check.sh
echo "check.sh: all package checks passed"
