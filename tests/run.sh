#!/usr/bin/env bash
# The test suite: installs what it needs (tests/setup.sh), then runs every check CI runs.
# README's second command; .ci/run calls exactly this.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
"$repo/tests/setup.sh"

venv="${MOE_VENV:-$repo/.venv}"
py="$venv/bin/python3"
# moed-http's tests (cargo test below) run the `openai` client from this virtualenv.
export MOE_VENV="$venv"
target="${CARGO_TARGET_DIR:-$repo/target}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$("$repo/packaging/onnxruntime/provision.sh")}"
export MOE_FIXTURE_PACKAGES="${MOE_FIXTURE_PACKAGES:-$target/fixture-packages}"
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
# The knowledge tests start their own PostgreSQL cluster; in CI they must not skip for want of one.
export MOE_REQUIRE_POSTGRES=1

echo "== exporting fixture checkpoints to $MOE_FIXTURE_PACKAGES"
for src in "$repo"/models/fixtures/*/; do
  [[ -f "$src/config.json" ]] || continue
  arch="$(basename "$src")"
  "$py" -m moe_export "$src" "$MOE_FIXTURE_PACKAGES/$arch" --quant fp32 --quiet --force
done
# Quantized packages for the quantized-matmul kernel tests (daemon/tests/quantized_matmul.rs).
"$py" -m moe_export models/fixtures/qwen3_moe "$MOE_FIXTURE_PACKAGES/quantized/qwen3_moe.int4" \
  --quant int4 --quiet --force
"$py" -m moe_export models/fixtures/qwen3_moe "$MOE_FIXTURE_PACKAGES/quantized/qwen3_moe.int4-sym-dense4" \
  --quant int4 --dense-quant int4 --symmetric --quiet --force
"$py" -m moe_export models/fixtures/deepseek_v3 "$MOE_FIXTURE_PACKAGES/quantized/deepseek_v3.int4-dense4" \
  --quant int4 --dense-quant int4 --quiet --force
"$py" -m moe_export models/fixtures/mixtral "$MOE_FIXTURE_PACKAGES/quantized/mixtral.int8" \
  --quant int8 --quiet --force
# A float16 KV cache on the fp32 weights (daemon/tests/kv_cache_f16.rs).
"$py" -m moe_export models/fixtures/qwen3_moe "$MOE_FIXTURE_PACKAGES/kv16/qwen3_moe" \
  --kv-cache float16 --quiet --force

echo "== exporter and reference runner (pytest)"
(cd "$repo/models/export" && "$py" -m pytest -q)

echo "== WASM plugins: build, format, clippy and the guests' unit tests"
"$repo/plugins/build.sh" --check

echo "== rustfmt and clippy"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

echo "== packages: .deb and .rpm (packaging/build.sh)"
built="$("$repo/packaging/build.sh")"
mapfile -t packages <<<"$built"

echo "== packages: unit (systemd-analyze security, verify), moed.toml, lintian, .deb and .rpm contents"
"$repo/packaging/check.sh" "${packages[0]}" "${packages[1]}"

echo "== GPU variant: provision.sh --gpu refusals, checksums and layout (onnxruntime-gpu wheel: 277 MB, cached)"
"$repo/packaging/onnxruntime/check-gpu.sh"

echo "== GPU variant: moed on the onnxruntime-gpu library, CPU provider, against transformers (tests/gpu/fidelity.py)"
gpu_ort="$("$repo/packaging/onnxruntime/provision.sh" --gpu)"
ORT_DYLIB_PATH="$gpu_ort" python3 "$repo/tests/gpu/fidelity.py" --moed "$target/release/moed" --provider cpu --packages "$MOE_FIXTURE_PACKAGES" --tol 1e-4

echo "== GPU companion package moed-cuda: build (packaging/build.sh --gpu --fast) and checks (packaging/check-cuda.sh)"
built_cuda="$("$repo/packaging/build.sh" --gpu --fast)"
mapfile -t cuda_packages <<<"$built_cuda"
"$repo/packaging/check-cuda.sh" "${cuda_packages[0]}" "${cuda_packages[1]}" "${packages[0]}"

echo "== packages: install, use, upgrade, remove and purge on a booted Debian (packaging/lifecycle.sh)"
if [[ $(id -u) -eq 0 ]]; then
  "$repo/packaging/lifecycle.sh" "${packages[0]}"
else
  # Only the container needs root: build the upgrade package as this user.
  upgrade="$("$repo/packaging/build.sh" --no-build --deb-only --fast --revision 2 --out "$target/lifecycle-upgrade")"
  sudo "$repo/packaging/lifecycle.sh" "${packages[0]}" "$upgrade"
fi

echo "== a package twice the memory limit, served under it (tests/offload/run.sh; the package is cached)"
as_root env ORT_DYLIB_PATH="$ORT_DYLIB_PATH" MOE_VENV="$venv" MOE_OFFLOAD_BIN="$target/release" \
  MOE_CI_CACHE="${MOE_CI_CACHE:-/var/cache/moed-ci}" "$repo/tests/offload/run.sh" --tokens 32

echo "== arm64 packages: cross-built .deb and .rpm (packaging/build.sh --arch arm64)"
built_arm="$("$repo/packaging/build.sh" --arch arm64)"
mapfile -t arm_packages <<<"$built_arm"

echo "== arm64 packages: the same checks as amd64's (packaging/check.sh)"
"$repo/packaging/check.sh" "${arm_packages[0]}" "${arm_packages[1]}"

echo "== arm64 package: install, generate (ids equal to amd64's) and serve under qemu (packaging/emulated.sh)"
as_root "$repo/packaging/emulated.sh" "${arm_packages[0]}" "${packages[0]}"
