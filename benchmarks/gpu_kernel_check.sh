#!/usr/bin/env bash
# Every accelerator measurement of the fused Pallas selective scan, in one go.
#
#   bash benchmarks/gpu_kernel_check.sh [OUT_DIR] [STEP...]
#
# Steps (all by default, in this order; each under its own time limit, so
# they can also be run one per call on a machine lent for a few minutes):
#   correctness  tests/ops/selective_scan_pallas_test.py on the accelerator:
#                impl="pallas" then runs the compiled kernel (Triton on GPU,
#                Mosaic on TPU) against the float64 oracle and SEQUENTIAL;
#   scan         benchmarks/scan_bench.py, b=64 l=2048 e=512 n=16, CHUNKED vs
#                PALLAS (target: fwd+bwd >= 5x faster, no more temp memory);
#   train_step   benchmarks/train_step_bench.py, Transformer-2, Mamba-4 and
#                the 24-layer D=256 1024-token Mamba, with and without the
#                kernel (targets: Mamba-4 <= 1.5x Transformer-2; 24-layer
#                step <= 200 ms on an H200).
# Writes OUT_DIR/{env.json, <step>.log, scan_bench.json,
# train_step_bench.json}; exits non-zero if a step failed. The README's
# kernel section records the numbers with their device and date.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT="${1:-kernel_results}"
shift || true
STEPS=("$@")
((${#STEPS[@]})) || STEPS=(correctness scan train_step)
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

backend="$("$PY" -c 'import jax; print(jax.default_backend())')" || exit 1
if [[ "$backend" == cpu ]]; then
  echo "error: no GPU/TPU visible to JAX; the kernel is not measured on CPU" >&2
  exit 1
fi
"$PY" - "$OUT/env.json" <<'EOF'
import datetime, json, sys
import jax
json.dump({"date_utc": datetime.datetime.now(datetime.timezone.utc)
           .isoformat(timespec="seconds"),
           "backend": jax.default_backend(),
           "device": jax.devices()[0].device_kind,
           "device_count": jax.device_count(), "jax": jax.__version__},
          open(sys.argv[1], "w"), indent=1)
EOF
cat "$OUT/env.json"

status=0
step() {  # step NAME LIMIT_S CMD...
  local name="$1" limit="$2"
  shift 2
  echo "==> $name (limit ${limit}s)"
  if ! timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
    echo "error: $name failed (see $OUT/$name.log)" >&2
    status=1
  fi
  tail -n 25 "$OUT/$name.log"
}

for s in "${STEPS[@]}"; do
  case "$s" in
    correctness)
      # tests/conftest.py defaults JAX_PLATFORMS to cpu; keep the device.
      step correctness 300 env JAX_PLATFORMS="$backend" \
        "$PY" -m pytest -q -p no:cacheprovider \
        tests/ops/selective_scan_pallas_test.py ;;
    scan)
      step scan 420 "$PY" benchmarks/scan_bench.py --lengths 2048 \
        --batch 64 --d-model 256 --d-state 16 --repeats 5 \
        --impls chunked pallas --out "$OUT/scan_bench.json" ;;
    train_step)
      step train_step 540 "$PY" benchmarks/train_step_bench.py \
        --cases=transformer,mamba,mamba_pallas,deep_mamba_1024,deep_mamba_1024_pallas \
        --json="$OUT/train_step_bench.json" ;;
    *)
      echo "error: unknown step $s (correctness, scan, train_step)" >&2
      exit 2 ;;
  esac
done
exit "$status"
