#!/usr/bin/env bash
# The test suite: installs what it needs (tests/setup.sh), then runs every check CI runs.
# README's second command; .ci/run calls exactly this.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
"$repo/tests/setup.sh"

venv="${MOE_VENV:-$repo/.venv}"
py="$venv/bin/python3"
target="${CARGO_TARGET_DIR:-$repo/target}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$("$repo/packaging/onnxruntime/provision.sh")}"
export MOE_FIXTURE_PACKAGES="${MOE_FIXTURE_PACKAGES:-$target/fixture-packages}"

echo "== exporting fixture checkpoints to $MOE_FIXTURE_PACKAGES"
for src in "$repo"/models/fixtures/*/; do
  [[ -f "$src/config.json" ]] || continue
  arch="$(basename "$src")"
  "$py" -m moe_export "$src" "$MOE_FIXTURE_PACKAGES/$arch" --quant fp32 --quiet --force
done

echo "== exporter and reference runner (pytest)"
(cd "$repo/models/export" && "$py" -m pytest -q)

echo "== WASM plugins: build, format, clippy and the guests' unit tests"
"$repo/plugins/build.sh" --check

echo "== rustfmt and clippy"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
