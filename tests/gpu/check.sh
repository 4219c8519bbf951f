#!/usr/bin/env bash
# The GPU check: moed on an NVIDIA GPU, through its public commands. On a machine without one it
# stops at once, exit status 2, having measured nothing.
#
#   1. provisions the GPU variant of ONNX Runtime (packaging/onnxruntime/provision.sh --gpu
#      --tensorrt: onnxruntime-gpu, NVIDIA's CUDA 12, cuDNN 9 and TensorRT 10 libraries; several GB
#      of wheels, cached in MOE_WHEEL_CACHE, reused when already extracted) into GPU_ORT_DIR
#      (default <repo>/target/onnxruntime-gpu), and runs moed with it (ORT_DYLIB_PATH,
#      LD_LIBRARY_PATH=GPU_ORT_DIR/cuda);
#   2. prints the GPU (nvidia-smi) and `moed check-config`'s provider report;
#   3. fidelity on CUDA, then on TensorRT (tests/gpu/fidelity.py): every fp32 fixture package in
#      MOE_FIXTURE_PACKAGES (default <repo>/target/fixture-packages, as tests/run.sh exports them)
#      scores transformers' golden logprobs within 1e-3 and continues with its greedy ids;
#   4. `moed bench` of the Qwen3-30B-A3B-like 4-layer int4 package (tests/peer's `qwen3` shape:
#      MOED_GPU_BENCH_MODEL, default $MOED_PEER_CACHE/models/qwen3-s0/moed-int4, made with the
#      Python environment MOE_VENV when missing) on CPU, CUDA and TensorRT, and, when `moed bench
#      --help` offers --gpu-memory-budget, CUDA with CPU at a quarter, half and three quarters of the
#      expert bytes; one table, with the issue's targets (CUDA decode >= 5x CPU, half the experts on
#      the GPU >= 2x CPU, TensorRT >= CUDA).
# Exit status: 0 when fidelity passed on both providers and every benchmark ran, 1 otherwise, 2 when
# there is no GPU. MOED_BIN picks the moed binary (default: $TARGET/release/moed, built with cargo
# when missing).
#
#   tests/gpu/check.sh [--repeat N] [--skip-fidelity] [--skip-bench]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
repeat=3 fidelity=1 bench=1
while (($#)); do
  case "$1" in
    --repeat) repeat="${2:?--repeat needs a number}"; shift 2 ;;
    --skip-fidelity) fidelity=0; shift ;;
    --skip-bench) bench=0; shift ;;
    *) echo "check.sh: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done

if ! command -v nvidia-smi >/dev/null; then
  echo "tests/gpu/check.sh: no NVIDIA GPU on this machine (nvidia-smi is not installed); this check needs one and measured nothing" >&2
  exit 2
fi
if ! gpus="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)" || [[ -z "$gpus" ]]; then
  echo "tests/gpu/check.sh: nvidia-smi finds no usable GPU ($gpus); this check needs one and measured nothing" >&2
  exit 2
fi
echo "== GPU: $gpus"

work="$target/gpu-check"
mkdir -p "$work"
failures=0

echo "== ONNX Runtime, GPU variant (provision.sh --gpu --tensorrt)"
gpu_dir="${GPU_ORT_DIR:-$repo/target/onnxruntime-gpu}"
mapfile -t provisioned < <("$repo/packaging/onnxruntime/provision.sh" --gpu --tensorrt "$gpu_dir"; echo "rc=$?")
[[ "${provisioned[-1]}" == rc=0 && ${#provisioned[@]} == 3 ]] || { echo "tests/gpu/check.sh: provisioning failed" >&2; exit 1; }
export ORT_DYLIB_PATH="${provisioned[0]}"
export LD_LIBRARY_PATH="${provisioned[1]}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

moed="${MOED_BIN:-$target/release/moed}"
if [[ ! -x "$moed" ]]; then
  echo "== building moed (release)"
  (cd "$repo" && cargo build --quiet --release --locked -p moed)
fi

echo "== providers (moed check-config)"
"$moed" check-config --config "$repo/packaging/moed.toml" | grep -E '^# (ONNX Runtime|provider)' || failures=$((failures + 1))

if ((fidelity)); then
  packages="${MOE_FIXTURE_PACKAGES:-$target/fixture-packages}"
  for provider in cuda tensorrt; do
    echo "== fidelity on $provider: fp32 fixtures against transformers (logprobs within 1e-3, greedy equal)"
    python3 "$repo/tests/gpu/fidelity.py" --moed "$moed" --provider "$provider" --packages "$packages" --tol 1e-3 \
      || failures=$((failures + 1))
  done
fi

if ((bench)); then
  model="${MOED_GPU_BENCH_MODEL:-${MOED_PEER_CACHE:-/var/cache/moed-ci/peer}/models/qwen3-s0/moed-int4}"
  if [[ ! -f "$model/manifest.json" ]]; then
    echo "== making the bench package $model (tests/peer's qwen3 shape, int4)"
    py="${MOE_VENV:-$repo/.venv}/bin/python3"
    (cd "$repo/tests/peer" && PYTHONPATH="$repo/models/export" "$py" - "$model" <<'PY'
import subprocess, sys
from pathlib import Path
from checkpoint import write_checkpoint
from shapes import SHAPES
out = Path(sys.argv[1])
ckpt = out.parent / "checkpoint"
if not (ckpt / "model.safetensors").is_file():
    write_checkpoint(ckpt, SHAPES["qwen3"].config, 0)
subprocess.run([sys.executable, "-m", "moe_export", str(ckpt), str(out), "--quant", "int4", "--quiet"], check=True)
PY
    )
  fi
  runs=("cpu|cpu|" "cuda|cuda|" "tensorrt|tensorrt|")
  if "$moed" bench --help | grep -q -- '--gpu-memory-budget'; then
    experts="$("$moed" bench --model "$model" --provider cpu --repeat 1 --prompt-tokens 8 --decode-tokens 2 --bandwidth-mib 16 --json \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["weights"]["experts"])')"
    for quarter in 1 2 3; do
      runs+=("mixed ${quarter}/4 experts|cuda,cpu|$((experts * quarter / 4))")
    done
  else
    echo "(moed bench has no --gpu-memory-budget: no mixed placement rows)"
  fi
  echo "== moed bench $(basename "$(dirname "$model")")/$(basename "$model"): prompt 128, decode 64, medians of $repeat"
  results="$work/bench.jsonl"
  : >"$results"
  for run in "${runs[@]}"; do
    IFS='|' read -r label providers budget <<<"$run"
    args=(bench --model "$model" --provider "$providers" --prompt-tokens 128 --decode-tokens 64 --repeat "$repeat" --bandwidth-mib 256 --json)
    [[ -n "$budget" ]] && args+=(--gpu-memory-budget "$budget")
    if "$moed" "${args[@]}" >"$work/bench.json" 2>"$work/bench.err"; then
      python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"label": sys.argv[2], "budget": sys.argv[3], "provider": r["execution_provider"], "prefill": r["sparse"]["prefill_tok_s"], "decode": r["sparse"]["decode_tok_s"]}))' \
        "$work/bench.json" "$label" "$budget" >>"$results"
    else
      echo "moed ${args[*]} failed: $(tail -n 3 "$work/bench.err")" >&2
      python3 -c 'import json,sys; print(json.dumps({"label": sys.argv[1], "budget": sys.argv[2], "error": sys.argv[3]}))' \
        "$label" "$budget" "$(tail -n 1 "$work/bench.err")" >>"$results"
      failures=$((failures + 1))
    fi
  done
  python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cpu = next((r["decode"] for r in rows if r["label"] == "cpu" and "decode" in r), None)
print(f"{'run':<22}{'provider used':<16}{'GPU budget':>14}{'prefill tok/s':>15}{'decode tok/s':>14}{'decode / CPU':>14}")
for r in rows:
    if "error" in r:
        print(f"{r['label']:<22}failed: {r['error'][:90]}")
        continue
    ratio = f"{r['decode'] / cpu:.2f}x" if cpu else "-"
    budget = f"{int(r['budget']) / 1e6:.0f} MB" if r["budget"] else "-"
    print(f"{r['label']:<22}{r['provider']:<16}{budget:>14}{r['prefill']:>15.1f}{r['decode']:>14.2f}{ratio:>14}")
by = {r["label"]: r.get("decode") for r in rows}
def verdict(name, got, want):
    print(f"target {name}: " + ("not measured" if got is None else f"{got:.2f}x, {'met' if got >= want else 'missed'} (>= {want}x)"))
if cpu:
    verdict("CUDA decode vs CPU", by.get("cuda") and by["cuda"] / cpu, 5)
    verdict("half the experts on the GPU vs CPU", by.get("mixed 2/4 experts") and by["mixed 2/4 experts"] / cpu, 2)
if by.get("cuda"):
    verdict("TensorRT vs CUDA", by.get("tensorrt") and by["tensorrt"] / by["cuda"], 1)
PY
fi

if ((failures)); then
  echo "tests/gpu/check.sh: $failures part(s) failed" >&2
  exit 1
fi
echo "tests/gpu/check.sh: every part run passed"
