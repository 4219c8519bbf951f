# Sourced by packaging/check.sh (uses its fail/ok/want, $work, $repo, $deb_arch and the .deb of moed
# unpacked in $work/pkg): offline checks of the companion package moed-import, the exporter that
# `moectl models import` runs with the system's python3.

# Every exporter source file, as the packages' asset glob moe_export/**/*.py picks it.
import_sources() {
  (cd "$repo/models/export" && find moe_export -name '*.py' -not -path '*/__pycache__/*' | sort) |
    sed 's#^#/usr/lib/moed/export/#'
}

# check_import_list WHAT LIST DOCS...: LIST holds exactly the exporter's files and DOCS.
check_import_list() {
  local what="$1" list="$2"
  shift 2
  { import_sources; printf '%s\n' "$@"; } | sort >"$work/import.want"
  sort "$list" >"$work/import.got"
  if diff -u "$work/import.want" "$work/import.got" >"$work/import.diff"; then
    ok "$what holds the $(wc -l <"$work/import.want") files of the exporter and its documentation, nothing else"
  else
    fail "$what: files differ from models/export/moe_export/**/*.py and the docs: $(grep -E '^[-+]/' "$work/import.diff" | tr '\n' ' ')"
  fi
}

check_import_packages() {
  local ideb="$1" irpm="$2" f
  for f in "$ideb" "$irpm"; do
    [[ -f "$f" ]] || { fail "$f does not exist; packaging/build.sh builds moed-import beside moed"; return; }
  done

  echo "== moed-import deb: $(basename "$ideb")"
  [[ "$(dpkg-deb -f "$ideb" Package)" == moed-import ]] || fail "the .deb's package is '$(dpkg-deb -f "$ideb" Package)', not moed-import"
  dpkg-deb -c "$ideb" | awk '$1 ~ /^-/ { print $6 }' | sed 's#^\./#/#' >"$work/import-deb.list"
  check_import_list "moed-import .deb" "$work/import-deb.list" /usr/share/doc/moed-import/README.md \
    /usr/share/doc/moed-import/copyright /usr/share/doc/moed-import/changelog.Debian.gz
  mkdir -p "$work/import-control"
  dpkg-deb -e "$ideb" "$work/import-control"
  [[ ! -s "$work/import-control/conffiles" ]] || fail "moed-import has conffiles: $(cat "$work/import-control/conffiles")"
  for s in preinst postinst postrm; do
    [[ ! -e "$work/import-control/$s" ]] || fail "moed-import has a $s (it inherited moed's?)"
  done
  if grep -qE 'systemctl|deb-systemd|moed\.service' "$work/import-control/prerm" 2>/dev/null; then
    fail "moed-import's prerm touches moed's service"
  fi
  sh -n "$work/import-control/prerm" || fail "moed-import's prerm is not valid sh"
  ok "maintainer scripts: only a prerm that removes bytecode caches"
  local depends
  depends="$(dpkg-deb -f "$ideb" Depends)"
  for d in "moed" "python3 (>= 3.10)" "python3-numpy (>= 1:1.24)" "python3-onnx (>= 1.12)" "python3-tqdm"; do
    grep -qF -- "$d" <<<"$depends" || fail "moed-import Depends lacks $d: $depends"
  done
  if grep -qiE 'safetensors|ml-dtypes|pip' <<<"$depends"; then fail "moed-import depends on what Debian 12 lacks: $depends"; fi
  ok "moed-import Depends: $depends"
  if [[ "$deb_arch" == "$(dpkg --print-architecture)" ]]; then
    # Resolved against this machine's apt lists (Debian 12 here): every dependency has a candidate.
    if sim="$(apt-get install --simulate --no-install-recommends "$(realpath "$ideb")" "$(realpath "$deb")" 2>&1)"; then
      local versions="" p
      for p in python3-numpy python3-onnx python3-tqdm; do
        versions+="$p $(apt-cache policy "$p" | sed -n 's/^ *Candidate: //p'), "
      done
      ok "apt resolves moed-import's dependencies from the archive (candidates: ${versions%, })"
    else
      fail "apt cannot resolve moed-import's dependencies: $(tail -n 5 <<<"$sim" | tr '\n' ' ')"
    fi
  fi
  lintian_out="$(lintian --info --pedantic --tag-display-limit 0 "$ideb" 2>&1)" || true
  echo "${lintian_out:-(lintian printed nothing)}"
  if grep -q '^E: ' <<<"$lintian_out"; then fail "lintian reports errors on moed-import"; else ok "lintian: no errors on moed-import"; fi

  echo "== moed-import: the packaged exporter, run by the packaged moectl with this machine's python3"
  mkdir -p "$work/import-root" "$work/run"
  dpkg-deb -x "$ideb" "$work/import-root"
  arch_wrap "$deb_arch" "$work/pkg/usr/bin/moectl" "$work/run/moectl" || return
  if out="$(MOED_EXPORTER_DIR="$work/import-root/usr/lib/moed/export" MOED_PYTHON=/usr/bin/python3 \
    "$work/run/moectl" models import "$repo/models/fixtures/qwen3_moe" --quant int4 --out "$work/import-out" 2>&1)"; then
    [[ -f "$work/import-out/manifest.json" ]] && ok "moectl models import with the packaged exporter: $(head -n 1 <<<"$out")" \
      || fail "moectl models import wrote no manifest.json: $out"
  else
    fail "moectl models import with the packaged exporter failed: $out"
  fi

  echo "== moed-import rpm: $(basename "$irpm")"
  local name_arch
  name_arch="$(rpm -qp --qf '%{NAME} %{ARCH}' "$irpm" 2>/dev/null)"
  [[ "$name_arch" == "moed-import noarch" ]] && ok "the .rpm is moed-import, noarch" || fail "the .rpm is '$name_arch', not 'moed-import noarch'"
  rpm -qp --list "$irpm" 2>/dev/null | grep -vxF -e /usr/lib/moed/export -e /usr/lib/moed/export/moe_export \
    -e /usr/lib/moed/export/moe_export/graphs >"$work/import-rpm.list"
  check_import_list "moed-import .rpm" "$work/import-rpm.list" /usr/share/doc/moed-import/README.md \
    /usr/share/licenses/moed-import/copyright
  rpm -qp --requires "$irpm" 2>/dev/null >"$work/import-rpm.requires"
  for r in "moed" "/usr/bin/python3" "python3dist(numpy) >= 1.24" "python3dist(onnx) >= 1.12" "python3dist(tqdm)"; do
    grep -qxF -- "$r" "$work/import-rpm.requires" || grep -qE "^$(sed 's/[.()+]/\\&/g' <<<"$r")( |$)" "$work/import-rpm.requires" ||
      fail "moed-import Requires lacks $r"
  done
  if grep -qiE 'safetensors|ml_dtypes|ml-dtypes' "$work/import-rpm.requires"; then fail "moed-import requires safetensors or ml_dtypes"; fi
  ok "moed-import Requires: $(grep -v '^rpmlib(' "$work/import-rpm.requires" | tr '\n' ',' | sed 's/,$//; s/,/, /g')"
  rpm -qp --scripts "$irpm" 2>/dev/null >"$work/import-rpm.scripts"
  if grep -qE 'systemctl|sysusers|moed\.service' "$work/import-rpm.scripts"; then
    fail "moed-import's scriptlets touch moed's service: $(tr '\n' ' ' <"$work/import-rpm.scripts")"
  else
    ok "moed-import's scriptlets leave moed's service alone"
  fi
}
