#!/bin/bash
# Runs inside the booted container of packaging/lifecycle.sh (as root, systemd as PID 1): installs
# the package, uses it as root and as unprivileged users, upgrades, removes and purges it. Each
# check appends "ok: ..." or "FAIL: ..." to RESULTS; the last line is "RESULT: pass" or
# "RESULT: fail".
#
#   lifecycle-checks.sh DEB UPGRADE_DEB RESULTS IMPORT_DEB HF_DIR
set -uo pipefail

deb="$1" upgrade="$2" results="$3" import_deb="$4" hf="$5"
: >"$results"
failures=0
log() { echo "$*" | tee -a "$results"; }
ok() { log "ok: $*"; }
fail() { log "FAIL: $*"; failures=$((failures + 1)); }
# check DESCRIPTION COMMAND...: ok when the command succeeds.
check() { local what="$1"; shift; if "$@" >/tmp/check.out 2>&1; then ok "$what"; else fail "$what: $(tail -c 600 /tmp/check.out)"; fi; }
finish() {
  if ((failures)); then log "RESULT: fail"; else log "RESULT: pass"; fi
  exit 0
}
t0=$SECONDS
elapsed() { echo "$((SECONDS - t0))s"; }

prompt="What do you think of Mr. Darcy?"
engine=(org.moed.Moed1 /org/moed/Moed1 org.moed.Moed1.Engine)

# complete USER: Engine.Complete over busctl as USER; prints the reply.
complete_as() {
  runuser -u "$1" -- busctl --system call "${engine[@]}" Complete 'sa{sv}' "$prompt" 2 max_tokens u 12 seed t 7
}
# answered REPLY: a (sa{sv}) reply whose text is not empty and which names the model.
answered() { [[ "$1" =~ ^sa\{sv\}\ \"[^\"] ]] && grep -q '"model" s "moe-mini"' <<<"$1"; }
prop() { busctl --system get-property org.moed.Moed1 /org/moed/Moed1 "$1" "$2" 2>&1; }

log "systemd $(systemctl --version | head -n 1 | cut -d' ' -f2), $(systemctl is-system-running 2>&1) system, polkitd $(dpkg-query -W -f='${Version}' polkitd), dbus $(dpkg-query -W -f='${Version}' dbus)"
useradd -m alice
useradd -m bob
# bob is an administrator as far as polkit decides (a rule, not a group the daemon knows of): this
# exercises the real polkit path, including the daemon's right to ask about other users' calls.
cat >/etc/polkit-1/rules.d/50-moed-lifecycle.rules <<'EOF'
polkit.addRule(function(action, subject) {
    if (action.id == "org.moed.manage-models" && subject.user == "bob") {
        return polkit.Result.YES;
    }
});
EOF

log "== install ($(elapsed))"
if DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/tmp/install.out 2>&1; then ok "dpkg -i $(dpkg-deb -f "$deb" Version)"; else fail "dpkg -i: $(tail -c 800 /tmp/install.out)"; finish; fi
check "moed.service is active after install" systemctl is-active --quiet moed.service
check "moed.service is enabled" systemctl is-enabled --quiet moed.service
check "the moed user exists (sysusers)" getent passwd moed
check "moed runs as the moed user" test "$(ps -o user= -p "$(systemctl show -P MainPID moed.service)")" = moed
# --man=no: the base has no man-db; packaging/check.sh verifies the Documentation= pages.
out="$(systemd-analyze verify --man=no moed.service 2>&1)"
if [[ -z "$out" ]]; then ok "systemd-analyze verify moed.service (installed) prints nothing"; else fail "systemd-analyze verify: $out"; fi
log "   exposure: $(systemd-analyze security moed.service 2>&1 | grep -o 'Overall exposure.*')"
model="$(prop org.moed.Moed1.Engine Model)"
[[ "$model" == 's "moe-mini"' ]] && ok "Engine.Model is moe-mini (the installed default model)" || fail "Engine.Model: $model"

log "== answers ($(elapsed))"
reply="$(complete_as root 2>&1)"
if answered "$reply"; then ok "busctl Engine.Complete as root: ${reply:0:160}"; else fail "busctl Complete as root: $reply"; fi
reply="$(complete_as alice 2>&1)"
if answered "$reply"; then ok "busctl Engine.Complete as alice (unprivileged): ${reply:0:160}"; else fail "busctl Complete as alice: $reply"; fi
for who in root alice; do
  if out="$(runuser -u "$who" -- moectl generate --max-tokens 12 --seed 7 "$prompt" 2>&1)" && [[ -n "${out//[[:space:]]/}" ]]; then
    ok "moectl generate as $who: $(tr '\n' ' ' <<<"$out" | cut -c1-160)"
  else
    fail "moectl generate as $who: $out"
  fi
done

log "== authorization ($(elapsed))"
out="$(runuser -u alice -- moectl models unload moe-mini 2>&1)"; rc=$?
if [[ $rc -eq 4 && "$out" == *org.moed.manage-models* && "$out" != *"could not be asked"* ]]; then
  ok "alice is refused models unload (exit 4): $(tr '\n' ' ' <<<"$out")"
else
  fail "alice's models unload: exit $rc: $out"
fi
out="$(runuser -u alice -- busctl --system call org.moed.Moed1 /org/moed/Moed1 org.moed.Moed1.Models Unload s moe-mini 2>&1)"; rc=$?
if [[ $rc -ne 0 && "$out" == *"not authorized for polkit action org.moed.manage-models"* ]]; then
  ok "alice is refused Models.Unload over busctl: $out"
else
  fail "alice's Models.Unload over busctl: exit $rc: $out"
fi
check "the model is still loaded after the refusals" grep -q moe-mini <<<"$(prop org.moed.Moed1.Models LoadedModels)"
out="$(runuser -u bob -- moectl models unload moe-mini 2>&1)"; rc=$?
if [[ $rc -eq 0 && "$(prop org.moed.Moed1.Engine Model)" == 's ""' ]]; then
  ok "bob (allowed by a polkit rule) unloads the model"
else
  fail "bob's models unload: exit $rc: $out; Model now $(prop org.moed.Moed1.Engine Model)"
fi
check "bob loads it again" runuser -u bob -- moectl models load moe-mini

log "== journal ($(elapsed))"
lines="$(journalctl --no-pager -o cat -u moed.service SYSLOG_IDENTIFIER=moed 2>&1)"
if [[ -n "$lines" ]]; then
  ok "journalctl -u moed shows moed's own lines ($(wc -l <<<"$lines")), e.g.: $(head -n 2 <<<"$lines" | tr '\n' '|')"
else
  fail "no lines of moed in the journal: $(journalctl --no-pager -u moed.service 2>&1 | tail -n 5)"
fi

check "no errors of moed in the journal (journalctl -u moed -p err)" test -z "$(journalctl --no-pager -o cat -u moed.service -p err SYSLOG_IDENTIFIER=moed)"
check "ONNX Runtime reads the CPU's description (no 'Error in cpuinfo')" bash -c '! journalctl --no-pager -o cat -u moed.service | grep -q "Error in cpuinfo"'
pid="$(systemctl show -P MainPID moed.service)"
check "systemctl reload moed (SIGHUP through ExecReload=)" systemctl reload moed.service
check "moed is still the same running process after reload" test "$(systemctl show -P MainPID moed.service)" = "$pid" -a "$(systemctl is-active moed.service)" = active

log "== WASM plugins under the unit's sandbox ($(elapsed))"
# The shipped filters, configured by a drop-in: compiled by Cranelift into $CACHE_DIRECTORY.
mkdir -p /etc/moed/moed.toml.d
printf '[plugins]\nfilters = ["/usr/share/moed/plugins/input-check.wasm", "/usr/share/moed/plugins/pii-redact.wasm"]\n' \
  >/etc/moed/moed.toml.d/50-lifecycle.toml
check "moed restarts with the shipped input-check and pii-redact filters" systemctl restart moed.service
reply="$(complete_as alice 2>&1)"
if answered "$reply"; then ok "answers through the filters"; else fail "Complete through the filters: $reply"; fi
out="$(busctl --system call "${engine[@]}" Complete 'sa{sv}' "" 0 2>&1)"
if [[ "$out" == *input-check* || "$out" == *input.empty* ]]; then ok "input-check rejects an empty prompt: $out"; else fail "an empty prompt through input-check: $out"; fi
check "compiled plugins are cached in /var/cache/moed (CacheDirectory=)" test -n "$(find /var/cache/moed -type f -print -quit)"
# The documented decision, shown: W^X memory stops Cranelift, so the unit keeps it off.
mkdir -p /etc/systemd/system/moed.service.d
printf '[Service]\nMemoryDenyWriteExecute=yes\n' >/etc/systemd/system/moed.service.d/50-lifecycle-mdwe.conf
systemctl daemon-reload
rm -rf /var/cache/moed/*
if systemctl restart moed.service 2>/dev/null && sleep 2 && systemctl is-active --quiet moed.service; then
  fail "moed ran its WASM filters under MemoryDenyWriteExecute=yes; the unit could enable it (systemd/README.md)"
else
  ok "with MemoryDenyWriteExecute=yes moed cannot load its WASM filters: $(journalctl --no-pager -o cat -u moed.service SYSLOG_IDENTIFIER=moed -n 1)"
fi
rm -rf /etc/systemd/system/moed.service.d /etc/moed/moed.toml.d
systemctl daemon-reload
systemctl reset-failed moed.service 2>/dev/null
check "moed runs again without the drop-ins" systemctl restart moed.service

log "== moed-import: moectl models import with Debian's python3, no virtualenv ($(elapsed))"
if DEBIAN_FRONTEND=noninteractive dpkg -i "$import_deb" >/tmp/import.out 2>&1; then ok "dpkg -i moed-import $(dpkg-deb -f "$import_deb" Version)"; else fail "dpkg -i moed-import: $(tail -c 800 /tmp/import.out)"; fi
check "python3 has onnx $(python3 -c 'import onnx; print(onnx.__version__)' 2>&1) and no safetensors or ml_dtypes" \
  python3 -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ("safetensors", "ml_dtypes")))'
pkg="/var/lib/moed/models/$(basename "$hf")"
if out="$(moectl models import "$hf" --quant int4 2>&1)" && [[ "$out" == *"load it with: moectl models load $pkg"* ]]; then
  ok "moectl models import $hf --quant int4: $(tr '\n' ' ' <<<"$out")"
else
  fail "moectl models import: $out"
fi
check "the import left no bytecode in /usr/lib/moed/export" test -z "$(find /usr/lib/moed/export -name __pycache__)"
check "moectl models load $pkg" moectl models load "$pkg"
if out="$(runuser -u alice -- moectl generate --model "$(basename "$hf")" --max-tokens 8 --seed 7 "$prompt" 2>&1)" && [[ -n "${out//[[:space:]]/}" ]]; then
  ok "moectl generate --model $(basename "$hf") as alice: $(tr '\n' ' ' <<<"$out" | cut -c1-120)"
else
  fail "generate with the imported model: $out"
fi
check "moectl models unload $(basename "$hf")" moectl models unload "$(basename "$hf")"
if dpkg -r moed-import >/tmp/import-rm.out 2>&1 && test ! -e /usr/lib/moed/export; then ok "dpkg -r moed-import removes /usr/lib/moed/export"; else fail "dpkg -r moed-import: $(tail -c 400 /tmp/import-rm.out); $(ls -R /usr/lib/moed/export 2>&1 | head -n 5)"; fi

log "== upgrade ($(elapsed))"
before="$(systemctl show -P InvocationID moed.service)"
printf '\n# edited by the lifecycle test\n' >>/etc/moed/moed.toml
sed -i 's/^#max_concurrent = 8$/max_concurrent = 3/' /etc/moed/moed.toml
edited="$(sha256sum /etc/moed/moed.toml)"
if DEBIAN_FRONTEND=noninteractive dpkg -i "$upgrade" >/tmp/upgrade.out 2>&1; then ok "dpkg -i $(dpkg-deb -f "$upgrade" Version) (upgrade)"; else fail "upgrade: $(tail -c 800 /tmp/upgrade.out)"; fi
check "the installed version is $(dpkg-deb -f "$upgrade" Version)" test "$(dpkg-query -W -f='${Version}' moed)" = "$(dpkg-deb -f "$upgrade" Version)"
check "the edited /etc/moed/moed.toml is kept" test "$(sha256sum /etc/moed/moed.toml)" = "$edited"
check "moed.service is active after the upgrade" systemctl is-active --quiet moed.service
after="$(systemctl show -P InvocationID moed.service)"
check "the upgrade restarted moed (new invocation)" test -n "$after" -a "$after" != "$before"
check "the restarted moed uses the edited config (MaxConcurrent 3)" test "$(prop org.moed.Moed1.Engine MaxConcurrent)" = "u 3"
reply="$(complete_as alice 2>&1)"
if answered "$reply"; then ok "answers after the upgrade"; else fail "Complete after the upgrade: $reply"; fi

log "== removal ($(elapsed))"
if dpkg -r moed >/tmp/remove.out 2>&1; then ok "dpkg -r moed"; else fail "dpkg -r: $(tail -c 800 /tmp/remove.out)"; fi
state="$(systemctl is-active moed.service 2>&1)"
[[ "$state" == inactive || "$state" == unknown || "$state" == failed ]] && [[ -z "$(pgrep -u moed -x moed)" ]] \
  && ok "removal stopped moed (is-active: $state; no moed process)" || fail "after removal moed.service is $state, processes: $(pgrep -a -u moed)"
if out="$(busctl --system call "${engine[@]}" Complete 'sa{sv}' x 0 2>&1)"; then fail "moed still answers after removal: $out"; else ok "org.moed.Moed1 no longer answers: $out"; fi
check "the state directory stays until purge" test -d /var/lib/moed
check "the edited config stays until purge" grep -q 'edited by the lifecycle test' /etc/moed/moed.toml

log "== purge ($(elapsed))"
if dpkg --purge moed >/tmp/purge.out 2>&1; then ok "dpkg --purge moed"; else fail "dpkg --purge: $(tail -c 800 /tmp/purge.out)"; fi
check "/var/lib/moed is gone" test ! -e /var/lib/moed
check "/var/cache/moed is gone" test ! -e /var/cache/moed
check "/etc/moed/moed.toml is gone" test ! -e /etc/moed/moed.toml
check "the moed user is gone" bash -c '! getent passwd moed'
check "the moed group is gone" bash -c '! getent group moed'
check "no unit file or enablement remains" bash -c '! systemctl cat moed.service && test ! -e /etc/systemd/system/multi-user.target.wants/moed.service'
log "checks took $(elapsed)"
finish
