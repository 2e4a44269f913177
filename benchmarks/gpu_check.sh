#!/bin/sh
# GPU check of the PyTorch runtime: the CUDA tests (fp32 / tf32 / fp16 parity with the reference
# fixture, the whole-frame CUDA graph, frames pre-processed on the GPU) and the device-agnostic tests
# of that code, the matmul peaks per precision, the post-processing benchmark (dense vs cells
# up-sampling, kNN, OpenCV vs torch pre-processing), `bench` rows (random OFA-tiny) in one table,
# CUDA graphs on and off, and `bench --compare` (every backend x precision row, with its share of
# the matmul peak).
#
#   bash benchmarks/gpu_check.sh                          # DEVICE=cuda
#   DEVICE=cpu IMGSZ=128 ITERS=3 bash benchmarks/gpu_check.sh   # the same script end to end on a CPU
#
# Runs this checkout (python3 -m ifseg_deploy with the checkout first on PYTHONPATH) and installs
# nothing: torch, onnx, onnxruntime and opencv must be importable (a CUDA image has them).
# Settings (environment): DEVICE (cuda), IMGSZ (512), SOURCE_SIZE (IMGSZ), ITERS (50), WARMUP (10),
# ROWS (the bench rows, default by device), SKIP_TESTS=1 (bench only), COMPARE=0 (no bench
# --compare), BPE_DIR (for bench --compare; default: $IFSEG_SHARED/bpe, else ../shared/bpe), OUT (a
# folder for the JSON reports; default: a temporary one).
set -u
cd "$(dirname "$0")/.." || exit 1

DEVICE=${DEVICE:-cuda}
IMGSZ=${IMGSZ:-512}
SOURCE_SIZE=${SOURCE_SIZE:-$IMGSZ}
ITERS=${ITERS:-50}
WARMUP=${WARMUP:-10}
OUT=${OUT:-$(mktemp -d)}
SHARED=${IFSEG_SHARED:-$(cd .. && pwd)/shared}
BPE_DIR=${BPE_DIR:-$SHARED/bpe}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
case "$DEVICE" in
cpu) DEFAULT_ROWS="fp32" CLASSES="3,20" ;;  # fp16 and tf32 need CUDA; CUDA graphs are CUDA-only
*) DEFAULT_ROWS="fp32 fp32:no-graph tf32 fp16 fp16:no-graph" CLASSES="3,20,150" ;;
esac
ROWS=${ROWS:-$DEFAULT_ROWS}

python3 -c "import ifseg_deploy" || { echo "ifseg_deploy does not import: torch, onnx, onnxruntime and opencv are needed"; exit 2; }
python3 -c "import torch; print('torch', torch.__version__, '| CUDA available:', torch.cuda.is_available(),
      '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" || exit 2

status=0
mkdir -p "$OUT"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    for t in tests/test_cuda.py tests/test_cuda_graphs.py tests/test_preprocess_torch.py tests/test_postprocess_fast.py; do
        echo "== python3 -m pytest -q $t"
        python3 -m pytest -q -p no:cacheprovider -rs "$t" || status=1
    done
fi

echo "== matmul peaks on $DEVICE (FLOP/s; int8: torch._int_mm)"
python3 -c "import sys, torch; from ifseg_deploy.bench.peaks import peaks
for p, v in peaks(torch.device(sys.argv[1])).items(): print(f'  {p:5} ' + ('-' if v is None else f'{v / 1e12:.2f} T'))" "$DEVICE" || status=1

echo "== python3 benchmarks/postprocess_speed.py --device $DEVICE"
python3 benchmarks/postprocess_speed.py --device "$DEVICE" --classes "$CLASSES" --rounds 5 --json "$OUT/postprocess.json" || status=1

for row in $ROWS; do
    precision=${row%%:*}
    flags=""
    [ "$row" != "${row#*:no-graph}" ] && flags="--no-cuda-graph"
    echo "== python3 -m ifseg_deploy bench --arch tiny --device $DEVICE --precision $precision $flags"
    # shellcheck disable=SC2086  # $flags is empty or one flag
    if ! python3 -m ifseg_deploy bench --arch tiny --device "$DEVICE" --precision "$precision" $flags --imgsz "$IMGSZ" \
        --source-size "$SOURCE_SIZE" --iters "$ITERS" --warmup "$WARMUP" --json "$OUT/$row.json" >"$OUT/$row.log" 2>&1; then
        tail -n 3 "$OUT/$row.log"
        status=1
    fi
done

python3 - "$OUT" "$DEVICE" "$IMGSZ" "$SOURCE_SIZE" $ROWS <<'EOF'
import json, os, sys

out, device, imgsz, source = sys.argv[1:5]
print(f"\nOFA-tiny (random weights), --device {device}, --imgsz {imgsz}, --source-size {source}; milliseconds per image")
print(f"| {'precision':<20} | {'median':>8} | {'p90':>8} | {'network':>8} | {'images/s':>8} | {'peak CUDA MB':>12} |")
print(f"|{'-' * 22}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 14}|")
for row in sys.argv[5:]:
    label = row.replace(":no-graph", " --no-cuda-graph")
    path = os.path.join(out, row + ".json")
    if not os.path.exists(path):
        print(f"| {label:<20} | {'failed: see ' + os.path.join(out, row + '.log'):<58} |")
        continue
    r = json.load(open(path))
    stages = r["stages_ms"]
    network = sum(stages[s]["median"] for s in ("network", "backbone", "encoder", "decoder") if s in stages)
    cuda = r.get("peak_cuda_mb")
    print(
        f"| {label:<20} | {r['latency_ms']['median']:>8.2f} | {r['latency_ms']['p90']:>8.2f} | {network:>8.2f} "
        f"| {r['throughput_fps']:>8.1f} | {'-' if cuda is None else f'{cuda:.0f}':>12} |"
    )
EOF
if [ "${COMPARE:-1}" = 1 ]; then
    echo "== python3 -m ifseg_deploy bench --compare --arch tiny --device $DEVICE"
    if ! python3 -m ifseg_deploy bench --compare --arch tiny --bpe-dir "$BPE_DIR" --device "$DEVICE" --imgsz "$IMGSZ" \
        --source-size "$SOURCE_SIZE" --iters "$ITERS" --warmup "$WARMUP" --json "$OUT/compare/compare.json" \
        >"$OUT/compare.log" 2>&1; then
        status=1
    fi
    grep -v "bench --compare: " "$OUT/compare.log" | tail -n 25  # the table, not the progress bar
fi
echo "reports: $OUT"
exit $status
