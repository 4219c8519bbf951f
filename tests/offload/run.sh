#!/usr/bin/env bash
# A model package about twice the memory the service may use, served under that limit (#14):
# moed serves it with engine.expert_memory_budget inside a memory cgroup capped at LIMIT (what
# MemoryMax= in a unit drop-in sets), answers a request through moectl, and the run checks that
# the daemon was not OOM-killed, that its peak resident set stayed under the limit and that it
# answered every token asked. It prints load time, time to first token, decode tok/s, the expert
# cache's hit rate, expert bytes loaded and read from storage per token, and the cost of a miss,
# beside the same request with the whole package resident (no limit, no budget, every expert
# preloaded) in the same run. Per-token figures count every token run (prompt and generated).
# The limited daemon first answers another prompt, then restarts on the same state directory and
# answers the measured one with the hottest experts of the first run's statistics held
# (engine.held_experts_percent); its next-layer guesses' accuracy is printed too.
#
#   tests/offload/run.sh [--package DIR] [--limit-mib N] [--budget-mib N] [--tokens N] [--zipf S]
#                        [--held-percent N] [--no-prefetch-next-layer] [--temperature T]
#
# --package: a moed package (default: made here with moe_export.synth, the Qwen3-30B-A3B-like
#   4-layer int4 shape, 128 experts top-8, routers skewed with --zipf (default 1.0); about 1.66 GB,
#   cached in $MOE_CI_CACHE/offload). --limit-mib: the cgroup's limit (default: half the package's
#   bytes). --budget-mib: engine.expert_memory_budget (default: the limit less the package's
#   non-expert bytes and 192 MiB for the process, ONNX Runtime, the KV cache and the page cache).
#   --held-percent: engine.held_experts_percent of the limited daemon (default: the daemon's, 50);
#   --no-prefetch-next-layer: engine.prefetch_next_layer = false there (to compare without them).
#   --temperature: sample at T with a fixed seed instead of greedy (default 0), so that the tokens
#   do not repeat as greedy decoding of random weights does: a harder test of the expert cache.
#
# Before the limited run the package's pages are dropped from the page cache (posix_fadvise), so
# its misses read storage, and the cgroup is charged for what it reads. Needs root (a cgroup of
# its own: systemd-run --scope -p MemoryMax= where systemd runs, else a cgroup v2 or v1 memory
# cgroup made directly), dbus-run-session, python3 (the venv of tests/setup.sh) and release
# builds of moed and moectl (built here unless MOE_OFFLOAD_BIN names them).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${MOE_CI_CACHE:-/var/cache/moed-ci}/offload"
venv="${MOE_VENV:-$repo/.venv}"
package="" limit_mib="" budget_mib="" tokens=64 zipf=1.0 held_percent="" prefetch=true temperature=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --package) package="$2"; shift 2 ;;
    --limit-mib) limit_mib="$2"; shift 2 ;;
    --budget-mib) budget_mib="$2"; shift 2 ;;
    --tokens) tokens="$2"; shift 2 ;;
    --zipf) zipf="$2"; shift 2 ;;
    --held-percent) held_percent="$2"; shift 2 ;;
    --no-prefetch-next-layer) prefetch=false; shift ;;
    --temperature) temperature="$2"; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "offload/run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$tokens" ${limit_mib:+"$limit_mib"} ${budget_mib:+"$budget_mib"}; do
  [[ "$n" =~ ^[1-9][0-9]{0,6}$ ]] || { echo "offload/run.sh: '$n' is not a positive whole number" >&2; exit 2; }
done
[[ -z "$held_percent" || "$held_percent" =~ ^[0-9]{1,2}$ ]] || { echo "offload/run.sh: --held-percent '$held_percent' is not 0 to 90" >&2; exit 2; }
[[ "$temperature" =~ ^[0-9](\.[0-9]{1,3})?$ ]] || { echo "offload/run.sh: --temperature '$temperature' is not a number such as 0.8" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "offload/run.sh: needs root (a memory cgroup of its own)" >&2; exit 1; }
command -v dbus-run-session >/dev/null || { echo "offload/run.sh: dbus-run-session missing; run tests/setup.sh" >&2; exit 1; }
py="$venv/bin/python"
[[ -x "$py" ]] || { echo "offload/run.sh: no virtualenv at $venv; run tests/setup.sh" >&2; exit 1; }

if [[ -z "$package" ]]; then
  package="$cache/q3-zipf$zipf"
  if [[ ! -f "$package/manifest.json" ]]; then
    echo "== making $package (moe_export.synth, a few minutes)" >&2
    mkdir -p "$cache"
    (cd "$repo/models/export" && "$py" -m moe_export.synth "$package" --layers 4 --hidden 2048 \
      --ffn 768 --experts 128 --top-k 8 --vocab 32000 --quant int4 --router-zipf "$zipf" \
      --name "q3-zipf$zipf" --force --quiet) >&2
  fi
fi
[[ -f "$package/manifest.json" ]] || { echo "offload/run.sh: $package is not a moed package" >&2; exit 1; }

# MOE_OFFLOAD_BIN: a directory holding release builds of moed and moectl to use instead.
bin="${MOE_OFFLOAD_BIN:-}"
if [[ -z "$bin" ]]; then
  (cd "$repo" && cargo build --release --locked -p moed -p moectl >&2)
  bin="${CARGO_TARGET_DIR:-$repo/target}/release"
fi
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$("$repo/packaging/onnxruntime/provision.sh")}"

# Bytes of the package, and of its experts (what the budget can leave on disk).
read -r package_bytes expert_bytes < <("$py" - "$package" <<'EOF'
import json, os, sys
pkg = sys.argv[1]
m = json.load(open(os.path.join(pkg, "manifest.json")))
files = m["files"]
total = sum(f["bytes"] for f in files.values())
def graph_bytes(rel):
    # As the engine counts a graph (Package::graph_bytes): the .onnx file and its .data.
    return sum(files.get(name, {"bytes": 0})["bytes"] for name in (rel, rel + ".data"))
experts = sum(graph_bytes(e) for l in m["layers"] for e in l.get("experts", []))
print(total, experts)
EOF
)
mib=$((1024 * 1024))
limit=$(( ${limit_mib:-$((package_bytes / 2 / mib))} * mib ))
fixed=$((package_bytes - expert_bytes))
budget=$(( ${budget_mib:-$(( (limit - fixed) / mib - 192 ))} * mib ))
(( budget > 0 )) || { echo "offload/run.sh: no room for experts under $((limit / mib)) MiB (the non-expert weights alone are $((fixed / mib)) MiB)" >&2; exit 1; }

work="$(mktemp -d /var/tmp/moed-offload.XXXXXX)"
cgroup=""
cleanup() {
  [[ -n "$cgroup" && -d "$cgroup" ]] && rmdir "$cgroup" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# One request against a daemon started for it, with its state (the persisted expert statistics)
# in $3; writes the daemon's figures as JSON to $1: the expert statistics before and after the
# request, and how many experts it held from the statistics of earlier runs.
serve_once() {
  local out="$1" config="$2" state="$3" prompt="$4"
  mkdir -p "$state"
  dbus-run-session -- bash -euo pipefail -c '
    bin="$1"; model="$2"; config="$3"; out="$4"; tokens="$5"; state="$6"; prompt="$7"; temperature="$8"
    started=$(date +%s%N)
    XDG_STATE_HOME="$state" "$bin/moed" serve --session --config "$config" --model "$model" 2>"$state/moed.log" &
    daemon=$!
    trap "kill $daemon 2>/dev/null; wait $daemon 2>/dev/null" EXIT
    for _ in $(seq 1200); do
      "$bin/moectl" --bus session --json status 2>/dev/null | grep -q "\"state\": *\"ready\"" && break
      kill -0 $daemon 2>/dev/null || { tail -n 20 "$state/moed.log" >&2; exit 1; }
      sleep 0.1
    done
    ready=$(date +%s%N)
    "$bin/moectl" --bus session --json experts > "$state/before.json"
    "$bin/moectl" --bus session --json generate --raw --ignore-eos --temperature "$temperature" --seed 7 \
      --max-tokens "$tokens" "$prompt" > "$state/gen.json" \
      || { tail -n 20 "$state/moed.log" >&2; exit 1; }
    "$bin/moectl" --bus session --json experts > "$state/experts.json"
    hwm=$(sed -n "s/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p" /proc/$daemon/status)
    kill -0 $daemon
    held=$(sed -n "s/.*holding the \([0-9]*\) most activated experts of .* (\([0-9.]*\) MB.*/\1, \2/p" "$state/moed.log" | tail -n 1)
    printf "{\"load_ms\": %s, \"peak_rss\": %s, \"held\": [%s], \"generate\": %s, \"before\": %s, \"experts\": %s}\n" \
      $(( (ready - started) / 1000000 )) $((hwm * 1024)) "$held" "$(cat "$state/gen.json")" \
      "$(cat "$state/before.json")" "$(cat "$state/experts.json")" > "$out"
  ' serve-once "$bin" "$package" "$config" "$out" "$tokens" "$state" "$prompt" "$temperature"
}

prompt="The expert cache of a model larger than memory"
# The limited daemon runs twice on one state directory: an earlier request (another prompt) that
# leaves its expert statistics, then, after a restart, the measured one, with the hottest experts
# of those statistics held (engine.held_experts_percent).
limited_runs() {
  drop_cache
  serve_once "$work/earlier.json" "$work/limited.toml" "$work/limited-state" \
    "Which experts run when the page cache is cold"
  drop_cache
  serve_once "$work/limited.json" "$work/limited.toml" "$work/limited-state" "$prompt"
}

printf '[service]\nmax_concurrent = 1\n[engine]\npreload_experts = true\n' > "$work/full.toml"
printf '[service]\nmax_concurrent = 1\n[engine]\nexpert_memory_budget = %s\nprefetch_next_layer = %s\n%s' \
  "$budget" "$prefetch" "${held_percent:+held_experts_percent = $held_percent
}" > "$work/limited.toml"

echo "== full residency: no limit, no budget, the package read into the page cache first" >&2
find "$package" -type f -exec cat {} + > /dev/null
serve_once "$work/full.json" "$work/full.toml" "$work/full-state" "$prompt"

# Drops the package's pages from the page cache, as after a reboot.
drop_cache() {
  echo "== dropping the package from the page cache" >&2
  "$py" - "$package" <<'EOF'
import os, sys
for root, _, names in os.walk(sys.argv[1]):
    for n in names:
        fd = os.open(os.path.join(root, n), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
EOF
}

echo "== under a $((limit / mib)) MiB limit, expert budget $((budget / mib)) MiB" >&2
if [[ -d /run/systemd/system ]] && command -v systemd-run >/dev/null; then
  how="systemd-run --scope -p MemoryMax=$limit"
  unit="moed-offload-$$.scope"
  systemd-run --quiet --scope --unit "$unit" -p MemoryMax="$limit" -p MemorySwapMax=0 -- \
    bash -c "$(declare -f serve_once limited_runs drop_cache); py='$py' bin='$bin' package='$package' tokens='$tokens' temperature='$temperature' work='$work' prompt='$prompt' limited_runs"
  peak_file="" oom_kills=0
elif [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  how="cgroup v2 memory.max"
  grep -qw memory /sys/fs/cgroup/cgroup.subtree_control || echo +memory > /sys/fs/cgroup/cgroup.subtree_control
  cgroup="/sys/fs/cgroup/moed-offload.$$"
  mkdir "$cgroup"
  echo "$limit" > "$cgroup/memory.max"
  echo 0 > "$cgroup/memory.swap.max" 2>/dev/null || true
  (echo "$BASHPID" > "$cgroup/cgroup.procs" && limited_runs)
  peak_file="$cgroup/memory.peak"
else
  how="cgroup v1 memory.limit_in_bytes"
  cgroup="/sys/fs/cgroup/memory/moed-offload.$$"
  mkdir "$cgroup"
  echo "$limit" > "$cgroup/memory.limit_in_bytes"
  (echo "$BASHPID" > "$cgroup/cgroup.procs" && limited_runs)
  peak_file="$cgroup/memory.max_usage_in_bytes"
fi
cgroup_peak=0 oom_kills=0
if [[ -n "$cgroup" ]]; then
  [[ -f "$peak_file" ]] && cgroup_peak=$(cat "$peak_file")
  if [[ -f "$cgroup/memory.events" ]]; then
    oom_kills=$(sed -n 's/^oom_kill //p' "$cgroup/memory.events")
  elif [[ -f "$cgroup/memory.oom_control" ]]; then
    oom_kills=$(sed -n 's/^oom_kill //p' "$cgroup/memory.oom_control")
  fi
fi

"$py" - "$work/full.json" "$work/limited.json" "$package" "$package_bytes" "$expert_bytes" \
  "$limit" "$budget" "$tokens" "$(nproc)" "$how" "$cgroup_peak" "${oom_kills:-0}" "$temperature" <<'EOF'
import json, sys
full, lim = (json.load(open(p)) for p in sys.argv[1:3])
package, package_bytes, expert_bytes, limit, budget, tokens, threads = sys.argv[3], *map(int, sys.argv[4:7]), int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
how, cgroup_peak, oom_kills = sys.argv[10], int(sys.argv[11]), int(sys.argv[12] or 0)
decoding = "greedy" if float(sys.argv[13]) == 0 else f"sampled at temperature {sys.argv[13]}, seed 7"
mb = lambda b: b / 1e6
def delta(after, before):
    # The request's own counts: the statistics persist across the daemon's runs.
    if isinstance(after, dict):
        return {k: delta(v, before.get(k)) for k, v in after.items()}
    if isinstance(after, (int, float)) and not isinstance(after, bool) and isinstance(before, (int, float)):
        return after - before
    return after
def figures(r):
    g = r["generate"]
    e = delta(r["experts"], r["before"])
    decode_s = (g["total_ms"] - g["first_token_ms"]) / 1000
    c = e["cache"]
    lookups = c["hits"] + c["misses"]
    toks = max(e["tokens"], 1)
    p = e["prefetch"]
    held = r["held"] or [0, 0.0]
    return {
        "load to ready (s)": r["load_ms"] / 1000,
        "time to first token (ms)": g["first_token_ms"],
        "decode tok/s": (g["completion_tokens"] - 1) / decode_s if decode_s > 0 else 0.0,
        "completion tokens": g["completion_tokens"],
        "expert cache hit rate": c["hits"] / lookups if lookups else 1.0,
        "experts held (MB)": held[1],
        "prefetch: guesses chosen": p["guessed_right"] / p["guessed"] if p["guessed"] else 0.0,
        "prefetch: chosen guessed": p["guessed_right"] / p["chosen"] if p["chosen"] else 0.0,
        "expert loads / token (MB)": mb(c["load_bytes"]) / toks,
        "read from storage / token (MB)": mb(e["storage_read_bytes"]) / toks,
        "expert session creation (ms)": c["load_seconds"] * 1000 / max(c["misses"], 1),
        "peak RSS (MB)": mb(r["peak_rss"]),
    }
f, l = figures(full), figures(lim)
print(f"offload: {package}: {mb(package_bytes):.0f} MB ({mb(expert_bytes):.0f} MB of experts), "
      f"{threads} CPU(s), {tokens} tokens {decoding}")
print(f"limit {mb(limit):.0f} MB ({how}; the package is {package_bytes / limit:.2f}x it), "
      f"engine.expert_memory_budget {mb(budget):.0f} MB")
print(f"{'':<34}{'full':>12}{'limited':>12}{'ratio':>10}")
for k in f:
    ratio = f"{l[k] / f[k]:.2f}x" if k in ("decode tok/s", "time to first token (ms)") and f[k] else ""
    print(f"{k:<34}{f[k]:>12.3f}{l[k]:>12.3f}{ratio:>10}")
if cgroup_peak:
    print(f"cgroup peak (page cache included) {mb(cgroup_peak):.0f} MB; OOM kills {oom_kills}")
problems = []
if oom_kills:
    problems.append(f"{oom_kills} OOM kill(s) in the cgroup")
if lim["peak_rss"] >= limit:
    problems.append(f"peak RSS {mb(lim['peak_rss']):.0f} MB is not under the limit")
if lim["generate"]["completion_tokens"] != tokens:
    problems.append(f"{lim['generate']['completion_tokens']} tokens answered of {tokens}")
if lim["generate"]["token_ids"] != full["generate"]["token_ids"]:
    problems.append(f"the limited run's tokens differ from the full run's ({decoding})")
print("RESULT: " + ("pass" if not problems else "FAIL: " + "; ".join(problems)))
sys.exit(1 if problems else 0)
EOF
