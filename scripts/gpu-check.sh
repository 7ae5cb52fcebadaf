#!/usr/bin/env bash
# The GPU checks in one command, for a CUDA machine with PyTorch already installed and no network:
#
#   bash scripts/gpu-check.sh --data-dir DIR [--out DIR] [--dry-run]
#
# DIR holds Fashion-MNIST's four IDX files. The project runs from src/ (PYTHONPATH), over whatever
# torch, torchvision, pytest and friends the machine has. Steps, designed to fit in about 6 minutes
# of an H100 (not yet run on one):
#   1. the GPU tests (tests/test_gpu.py) and the device-rule tests (tests/test_devices.py);
#   2. `inception bench --device cuda --train`: torchvision and our paths side by side, with the
#      GPU's measured peak;
#   3. the default Fashion-MNIST recipe on CUDA, with its wall time and test top-1;
#   4. a 1-process torchrun job with the NCCL backend and --sync-bn;
#   5. the default recipe again with --compile reduce-overhead (CUDA graphs), if time is left;
#   6. the bench's torch.compile rows, in whatever time is left (compiling can take minutes).
# Each step's output goes to OUT (default gpu-check/), and OUT/summary.md gathers the figures.
# On a machine without a CUDA GPU it says so and exits 0. --dry-run runs every step on the CPU at
# toy sizes, to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DATA_DIR=/usr/share/datasets/fashion-mnist
OUT=gpu-check
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir) DATA_DIR=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export INCEPTION_DATA_DIR=$DATA_DIR

if [ "$DRY" = 1 ]; then
    DEVICE=cpu; BENCH="--batch-size 4 --image-size 96 --repeats 2 --no-onnx"
    TRAIN="--subset 1024 --epochs 1 --width 0.25"; DDP="--subset 512 --epochs 1 --width 0.25"
    DDP_BN="--norm bn"
elif "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    DEVICE=cuda; BENCH="--repeats 10 --no-onnx"; TRAIN=""; DDP="--subset 8192 --epochs 1"
    DDP_BN="--norm bn --sync-bn"
else
    echo "gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check"
    exit 0
fi
if [ ! -d "$DATA_DIR" ]; then
    echo "gpu-check: --data-dir $DATA_DIR does not exist; give the folder with Fashion-MNIST's IDX files" >&2
    exit 2
fi
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
    echo "gpu-check: --out $OUT is not empty; choose another folder" >&2
    exit 2
fi
mkdir -p "$OUT"
SUMMARY=$OUT/summary.md
START=$(date +%s)
status=0
step() { echo; echo "== $* ($(( $(date +%s) - START )) s)"; }

{
    echo "# gpu-check, $(date -u +%Y-%m-%dT%H:%MZ)"
    "$PYTHON" -c 'import torch, torchvision
d = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU only"
print(f"- device: {d}; torch {torch.__version__}, torchvision {torchvision.__version__}")'
    echo "- mode: $([ "$DRY" = 1 ] && echo "dry run on the CPU, toy sizes" || echo "CUDA")"
} > "$SUMMARY"

# One summary line for a run directory: LABEL RUN_DIR LOG SECONDS_OF_THE_WHOLE_COMMAND
summarize_run() {
    "$PYTHON" - "$@" >> "$SUMMARY" <<'EOF'
import json, sys
label, run, log, wall = sys.argv[1:]
try:
    r = json.load(open(f"{run}/results.json"))
except OSError:
    print(f"- {label}: FAILED or out of time (no results.json; see {log})")
    raise SystemExit
print(f"- {label}: test top-1 {r['test_top1']:.2f}% after {r['epochs']} epoch(s), "
      f"{r['processes']} process(es) on {r['device']}; training wall_s {r['wall_s']:.1f} s, "
      f"whole command {float(wall):.1f} s")
EOF
}

# The bench's JSON as its Markdown table: JSON MD
bench_table() {
    "$PYTHON" -c 'import json, sys
from inception.bench import format_report
print(format_report(json.load(open(sys.argv[1]))))' "$1" > "$2"
}

seconds_since() { "$PYTHON" -c 'import sys, time; print(time.time() - float(sys.argv[1]))' "$1"; }

step "1. tests"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_devices.py 2>&1 \
    | tee "$OUT/tests.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
echo "- tests (tests/test_gpu.py, tests/test_devices.py): $(tail -n 1 "$OUT/tests.log")" >> "$SUMMARY"

step "2. inception bench --device $DEVICE --train"
# shellcheck disable=SC2086
if "$PYTHON" -m inception bench --device "$DEVICE" --train $BENCH --json > "$OUT/bench.json" \
        2> "$OUT/bench.log"; then
    bench_table "$OUT/bench.json" "$OUT/bench.md"
    cat "$OUT/bench.md"
    { echo; echo "## inception bench"; echo; cat "$OUT/bench.md"; echo; } >> "$SUMMARY"
else
    status=1
    echo "- bench: FAILED (see bench.log)" >> "$SUMMARY"
fi

step "3. the default recipe on $DEVICE"
t0=$(date +%s.%N)
# shellcheck disable=SC2086
"$PYTHON" -m inception train --device "$DEVICE" --data-dir "$DATA_DIR" --out "$OUT/default" \
    --no-progress $TRAIN 2>&1 | tee "$OUT/train.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
summarize_run "default recipe" "$OUT/default" train.log "$(seconds_since "$t0")"

step "4. torchrun, 1 process, $([ "$DEVICE" = cuda ] && echo NCCL || echo gloo)"
t0=$(date +%s.%N)
# shellcheck disable=SC2086
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 1 -m inception train \
    --device "$DEVICE" --data-dir "$DATA_DIR" --out "$OUT/ddp" --no-progress $DDP $DDP_BN \
    2>&1 | tee "$OUT/ddp.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
summarize_run "torchrun $DDP $DDP_BN" "$OUT/ddp" ddp.log "$(seconds_since "$t0")"

left=$(( 240 - ($(date +%s) - START) ))
if [ "$left" -gt 60 ] || [ "$DRY" = 1 ]; then
    mode=$([ "$DEVICE" = cuda ] && echo reduce-overhead || echo default)
    step "5. the default recipe with --compile $mode, within $(( left > 60 ? left : 60 )) s"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    timeout "$(( left > 60 ? left : 60 ))" "$PYTHON" -m inception train --device "$DEVICE" \
        --data-dir "$DATA_DIR" --out "$OUT/compiled" --no-progress $TRAIN --compile "$mode" \
        > "$OUT/compiled.log" 2>&1
    rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 124 ] || status=1  # 124: out of time, not a failure
    summarize_run "default recipe, --compile $mode (compilation included)" "$OUT/compiled" \
        compiled.log "$(seconds_since "$t0")"
fi

left=$(( 330 - ($(date +%s) - START) ))
if [ "$DEVICE" = cuda ] && [ "$left" -gt 60 ]; then
    step "6. inception bench --compile, within ${left} s"
    # shellcheck disable=SC2086
    if timeout "$left" "$PYTHON" -m inception bench --device cuda --train --compile $BENCH \
            --json > "$OUT/bench-compile.json" 2> "$OUT/bench-compile.log"; then
        bench_table "$OUT/bench-compile.json" "$OUT/bench-compile.md"
        { echo "## inception bench --compile"; echo; cat "$OUT/bench-compile.md"; echo; } >> "$SUMMARY"
    else
        echo "- bench --compile: did not finish within ${left} s" >> "$SUMMARY"
    fi
fi

echo "- total: $(( $(date +%s) - START )) s; $([ $status = 0 ] && echo "every step passed" || echo "SOME STEPS FAILED")" >> "$SUMMARY"
step "summary ($SUMMARY)"
cat "$SUMMARY"
exit $status
