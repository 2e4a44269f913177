#!/bin/sh
# GPU check of the PyTorch runtime: the CUDA tests (fp32 / tf32 / fp16 parity with the reference
# fixture), then `ifseg-deploy bench` rows (random OFA-tiny) in one table, CUDA graphs on and off.
#
#   sh benchmarks/gpu_check.sh                          # DEVICE=cuda
#   DEVICE=cpu IMGSZ=128 ITERS=3 sh benchmarks/gpu_check.sh   # the same script end to end on a CPU
#
# Installs nothing. Where torch, onnx, onnxruntime and opencv are already installed (a CUDA image),
# install this checkout without touching them:
#   pip install --no-deps --no-build-isolation -e .
# Settings (environment): DEVICE (cuda), IMGSZ (512), SOURCE_SIZE (IMGSZ), ITERS (50), WARMUP (10),
# ROWS (the bench rows, default by device), SKIP_TESTS=1 (bench only), OUT (a folder for the JSON
# reports; default: a temporary one).
set -u
cd "$(dirname "$0")/.." || exit 1

DEVICE=${DEVICE:-cuda}
IMGSZ=${IMGSZ:-512}
SOURCE_SIZE=${SOURCE_SIZE:-$IMGSZ}
ITERS=${ITERS:-50}
WARMUP=${WARMUP:-10}
OUT=${OUT:-$(mktemp -d)}
case "$DEVICE" in
cpu) DEFAULT_ROWS="fp32" ;;  # fp16 and tf32 need CUDA; CUDA graphs are CUDA-only
*) DEFAULT_ROWS="fp32 fp32:no-graph tf32 fp16 fp16:no-graph" ;;
esac
ROWS=${ROWS:-$DEFAULT_ROWS}

if ! command -v ifseg-deploy >/dev/null 2>&1; then
    echo "ifseg-deploy is not installed; with torch, onnx, onnxruntime and opencv present, run:"
    echo "  pip install --no-deps --no-build-isolation -e ."
    exit 2
fi
python3 -c "import torch; print('torch', torch.__version__, '| CUDA available:', torch.cuda.is_available(),
      '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" || exit 2

status=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    echo "== python3 -m pytest -q tests/test_cuda.py"
    python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py || status=1
fi

mkdir -p "$OUT"
for row in $ROWS; do
    precision=${row%%:*}
    flags=""
    [ "$row" != "${row#*:no-graph}" ] && flags="--no-cuda-graph"
    echo "== ifseg-deploy bench --arch tiny --device $DEVICE --precision $precision $flags"
    # shellcheck disable=SC2086  # $flags is empty or one flag
    if ! ifseg-deploy bench --arch tiny --device "$DEVICE" --precision "$precision" $flags --imgsz "$IMGSZ" \
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
echo "reports: $OUT"
exit $status
