#!/usr/bin/env bash
# The main job, from a source tree: builds moed and moectl, starts `moed serve` with the bundled
# default model on a private session bus, and asks it through `moectl generate`.
#
# Usage: packaging/dev/run-default.sh [PROMPT]
# Installed systems do the same with `systemctl start moed` and `moectl generate PROMPT`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
prompt="${1:-Tell me about the weather at Pemberley.}"

cargo build --release --locked -p moed -p moectl >&2
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$("$repo/packaging/onnxruntime/provision.sh")}"
bin="${CARGO_TARGET_DIR:-$repo/target}/release"

# dbus-run-session gives the daemon and the client a bus of their own that ends with this script.
exec dbus-run-session -- bash -euo pipefail -c '
  bin="$1"; model="$2"; prompt="$3"
  state="$(mktemp -d)"
  XDG_STATE_HOME="$state" "$bin/moed" serve --session --model "$model" 2>"$state/moed.log" &
  daemon=$!
  trap "kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf \"$state\"" EXIT
  for _ in $(seq 100); do
    "$bin/moectl" --bus session --json status 2>/dev/null | grep -q "\"state\": *\"ready\"" && break
    kill -0 $daemon 2>/dev/null || { cat "$state/moed.log" >&2; exit 1; }
    sleep 0.1
  done
  "$bin/moectl" --bus session generate --max-tokens 80 "$prompt"
' run-default "$bin" "$repo/models/moe-mini" "$prompt"
