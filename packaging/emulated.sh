#!/usr/bin/env bash
# The arm64 .deb used on an emulated arm64 Debian: a bookworm arm64 root from debootstrap, entered
# with chroot through qemu-user (qemu-aarch64-static registered with binfmt_misc), in which
#   1. the .deb installs and purges with its maintainer scripts;
#   2. `moed generate` runs the bundled model greedily and its token ids are compared with the
#      amd64 package's `moed generate` on this machine (same prompt, same flags): they must be equal;
#   3. `moed serve` serves on a private bus (the chroot's own arm64 dbus-daemon) with the shipped
#      input-check and pii-redact WASM filters active (Cranelift compiles them for aarch64 there),
#      and `moectl` answers through it, the filters showing their effect.
# systemd is not booted: PID 1 systemd under qemu-user is not supported (its namespaces and
# cgroup calls are not emulated), so the service part runs moed by hand as the unit would, and the
# unit itself is checked by packaging/check.sh and, on amd64, by the booted packaging/lifecycle.sh.
#
#   packaging/emulated.sh ARM64_DEB AMD64_DEB
#
# Needs root, debootstrap, qemu-user-static and binfmt-support (tests/setup.sh installs them); it
# mounts binfmt_misc and enables qemu-aarch64 if they are not. The debootstrapped base comes from
# packaging/debian-base.sh (cached in /var/cache/moed-ci/lifecycle): the first run fetches it from
# deb.debian.org and runs debootstrap's second stage under emulation (about 4.5 min), later runs
# unpack it (seconds). Prints "ok:"/"FAIL:" lines, timings, and "RESULT: pass" at the end.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
arm_deb="${1:?usage: packaging/emulated.sh ARM64_DEB AMD64_DEB}"
amd_deb="${2:?usage: packaging/emulated.sh ARM64_DEB AMD64_DEB}"
# Everything the package Depends on (polkitd needs a logind: libpam-systemd), so that installing it
# needs no network; dbus also gives the private bus its daemon.
base_packages="systemd,libpam-systemd,dbus,polkitd,libstdc++6,libgcc-s1,passwd,procps"
started=$SECONDS
step() { echo "== emulated arm64 [$((SECONDS - started))s]: $*"; }
die() { echo "emulated.sh: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, binfmt_misc, chroot)"
for tool in debootstrap qemu-aarch64-static update-binfmts dpkg-deb /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool is missing; run tests/setup.sh"
done
for f in "$arm_deb" "$amd_deb"; do [[ -f "$f" ]] || die "$f does not exist; run packaging/build.sh"; done
[[ "$(dpkg-deb -f "$arm_deb" Architecture)" == arm64 ]] || die "$arm_deb is not an arm64 package"
[[ "$(dpkg-deb -f "$amd_deb" Architecture)" == amd64 ]] || die "$amd_deb is not an amd64 package"

# binfmt_misc: the kernel hands arm64 ELF files to qemu. The F flag (Debian's default) opens the
# interpreter now, so it works inside the chroot without a copy of qemu there.
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || die "binfmt qemu-aarch64 is not enabled (update-binfmts --enable qemu-aarch64)"
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt qemu-aarch64 lacks the F flag, so it cannot work in a chroot"

work="$(mktemp -d /var/tmp/moed-emulated.XXXXXX)"
root="$work/root"
bus_pid=""
serve_pid=""
cleanup() {
  [[ -n "$serve_pid" ]] && kill "$serve_pid" 2>/dev/null
  [[ -n "$bus_pid" ]] && kill "$bus_pid" 2>/dev/null
  wait 2>/dev/null || true
  for m in proc dev; do umount -l "$root/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
failures=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# A command in the arm64 root with a clean environment; chroot and env exec it, so the PID of a
# background `"${root_env[@]}" cmd &` is the command's own.
root_env=(chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
in_root() { "${root_env[@]}" "$@"; }

step "the arm64 Debian base (packaging/debian-base.sh)"
base="$("$repo/packaging/debian-base.sh" arm64 "$base_packages")"
step "unpacking the base $(basename "$base")"
mkdir -p "$root"
tar -C "$root" -xf "$base"
[[ "$(in_root dpkg --print-architecture)" == arm64 ]] || die "the base's dpkg does not run as arm64"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
cp "$arm_deb" "$root/root/moed.deb"

step "install and purge, then install again (no systemd running)"
if out="$(in_root /bin/sh -ec '
  dpkg -i /root/moed.deb
  getent passwd moed
  dpkg --purge moed
  ! getent passwd moed
  dpkg -i /root/moed.deb' 2>&1)"; then
  ok "dpkg -i, --purge and -i again of $(basename "$arm_deb")"
else
  echo "$out" >&2; die "install/purge in the arm64 root failed (output above)"
fi
file_out="$(file -b "$root/usr/bin/moed")"
[[ "$file_out" == *"ARM aarch64"* ]] && ok "/usr/bin/moed is $(cut -d, -f1-2 <<<"$file_out")" || fail "/usr/bin/moed is not aarch64: $file_out"

# One prompt, greedy, a fixed number of tokens: the same computation on both architectures.
prompt="What do you think of Mr. Darcy?"
gen=(generate --model /usr/share/moed/models/moe-mini --temperature 0 --ignore-eos --max-tokens 24 --json "$prompt")
step "moed generate on arm64 (emulated)"
t=$SECONDS
# GNU time's peak RSS: chroot and env exec moed, so it is moed's (under qemu-user, with qemu's own).
/usr/bin/time -o "$work/arm.rss" -f %M "${root_env[@]}" moed "${gen[@]}" >"$work/arm.json" 2>"$work/arm.err" || { cat "$work/arm.err" >&2; die "moed generate failed on arm64"; }
arm_s=$((SECONDS - t))
step "moed generate on amd64 (this machine, the amd64 package's files)"
mkdir -p "$work/amd64"
dpkg-deb -x "$amd_deb" "$work/amd64"
amd_gen=("${gen[@]}")
amd_gen[2]="$work/amd64/usr/share/moed/models/moe-mini"
t=$SECONDS
ORT_DYLIB_PATH="$(ls "$work"/amd64/usr/lib/moed/libonnxruntime.so.*)" /usr/bin/time -o "$work/amd.rss" -f %M \
  "$work/amd64/usr/bin/moed" "${amd_gen[@]}" \
  >"$work/amd.json" 2>"$work/amd.err" || { cat "$work/amd.err" >&2; die "moed generate failed on amd64"; }
amd_s=$((SECONDS - t))
ids() { python3 -c 'import json,sys; print(" ".join(map(str, json.load(open(sys.argv[1]))["token_ids"])))' "$1"; }
arm_ids="$(ids "$work/arm.json")" amd_ids="$(ids "$work/amd.json")"
n="$(wc -w <<<"$arm_ids")"
if [[ -n "$arm_ids" && "$arm_ids" == "$amd_ids" ]]; then
  ok "greedy token ids equal on arm64 and amd64 ($n tokens; arm64 emulated ${arm_s}s, amd64 native ${amd_s}s): $arm_ids"
else
  fail "greedy token ids differ: arm64 [$arm_ids] amd64 [$amd_ids]"
fi
python3 - "$work/arm.json" "$work/amd.json" <<'PY'
import json, sys
for arch, path in zip(("arm64 (emulated)", "amd64 (native)"), sys.argv[1:]):
    s = json.load(open(path))["stats"]
    print(f"   {arch} stats:", ", ".join(f"{k}={v}" for k, v in s.items() if not isinstance(v, (dict, list))))
PY
echo "   peak RSS of moed generate: arm64 $(($(tail -n 1 "$work/arm.rss") / 1024)) MiB (qemu-user's own memory included), amd64 $(($(tail -n 1 "$work/amd.rss") / 1024)) MiB"

step "moed serve on a private bus with the shipped WASM filters; moectl answers"
mkdir -p "$root/run/moed-test" "$root/etc/moed/moed.toml.d"
cat >"$root/etc/moed/moed.toml.d/50-emulated.toml" <<'EOF'
[service]
state_directory = "/var/lib/moed-test"
[plugins]
filters = ["/usr/share/moed/plugins/input-check.wasm", "/usr/share/moed/plugins/pii-redact.wasm"]
EOF
address="unix:path=/run/moed-test/bus"
"${root_env[@]}" dbus-daemon --session --nofork --nopidfile --address="$address" >"$work/bus.log" 2>&1 &
bus_pid=$!
for _ in $(seq 100); do [[ -S "$root/run/moed-test/bus" ]] && break; sleep 0.2; done
[[ -S "$root/run/moed-test/bus" ]] || { cat "$work/bus.log" >&2; die "the arm64 dbus-daemon made no socket"; }
t=$SECONDS
"${root_env[@]}" moed serve --address "$address" --config /etc/moed/moed.toml >"$work/serve.log" 2>&1 &
serve_pid=$!
ready=0
for _ in $(seq 600); do
  if in_root moectl --bus "$address" status >"$work/status.out" 2>&1 && grep -q moe-mini "$work/status.out"; then ready=1; break; fi
  kill -0 "$serve_pid" 2>/dev/null || break
  sleep 1
done
if ((ready)); then
  ok "moed serve answers moectl status after $((SECONDS - t))s: $(tr '\n' ' ' <"$work/status.out" | cut -c1-200)"
else
  tail -n 30 "$work/serve.log" >&2; cat "$work/status.out" >&2; die "moed serve did not come up on the private bus"
fi
if out="$(in_root moectl --bus "$address" plugins list 2>&1)" && grep -q input-check <<<"$out" && grep -q pii-redact <<<"$out"; then
  ok "moectl plugins list shows the filters: $(tr '\n' ' ' <<<"$out" | cut -c1-240)"
else
  fail "moectl plugins list does not show input-check and pii-redact: $out"
fi
t=$SECONDS
if out="$(in_root moectl --bus "$address" generate --max-tokens 12 --seed 7 "$prompt" 2>&1)" && [[ -n "${out//[[:space:]]/}" ]]; then
  ok "moectl generate through the filters ($((SECONDS - t))s): $(tr '\n' ' ' <<<"$out" | cut -c1-160)"
else
  fail "moectl generate: $out"
fi
# As an application would send it (moectl itself asks for a prompt): an empty one over busctl.
if out="$(in_root busctl --address="$address" call org.moed.Moed1 /org/moed/Moed1 org.moed.Moed1.Engine \
  Complete 'sa{sv}' "" 0 2>&1)"; then
  fail "an empty prompt was answered although input-check is active: $out"
elif [[ "$out" == *input-check* || "$out" == *input.empty* ]]; then
  ok "input-check refuses an empty prompt: $(tr '\n' ' ' <<<"$out" | cut -c1-200)"
else
  fail "an empty prompt failed, but not through input-check: $out"
fi
# Cranelift compiled the filters on this (emulated) arm64 machine: the cached code is aarch64.
mapfile -t cwasm < <(find "$root/var/lib/moed-test" -name '*.cwasm' -type f)
if ((${#cwasm[@]} >= 2)) && ! file -b "${cwasm[@]}" | grep -qv 'ARM aarch64'; then
  ok "the ${#cwasm[@]} filters were compiled to aarch64 code: $(file -b "${cwasm[0]}" | cut -d, -f1-2)"
else
  fail "no aarch64 code compiled for the filters: ${cwasm[*]:-none} $( ((${#cwasm[@]})) && file -b "${cwasm[@]}")"
fi
echo "   moed serve (arm64 under qemu-user, model loaded, filters compiled, after the requests): $(grep -E '^Vm(HWM|RSS)' /proc/"$serve_pid"/status | tr -s ' \t\n' ' ')"
kill "$serve_pid"
wait "$serve_pid" 2>/dev/null || true
serve_pid=""
for log in "$work/arm.err" "$work/serve.log"; do
  n="$(grep -c 'Error in cpuinfo' "$log" || true)"
  ((n == 0)) || echo "   note: $(basename "$log") has $n 'Error in cpuinfo' lines: under qemu-user /proc/cpuinfo is this x86 machine's"
done
if grep -qi 'panic' "$work/serve.log"; then fail "moed serve's log mentions a panic: $(grep -i panic "$work/serve.log" | head -n 3)"; fi

echo "   sizes: $(basename "$arm_deb") $(stat -c %s "$arm_deb") bytes, $(basename "$amd_deb") $(stat -c %s "$amd_deb") bytes"
step "done"
if ((failures)); then echo "RESULT: fail ($failures)"; exit 1; fi
echo "RESULT: pass"
