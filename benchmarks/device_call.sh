#!/bin/bash
# One prepared call on a lent GPU machine: the batch-1 latency of mobilenet_v1_224 at 50% MACs on the card (quiet
# machine, first), then a headroom bundle's fine-tunes (finetune_grid.py run) until GRID_SECONDS. Everything
# written under $OUT comes back, partial or not; results.jsonl is appended to one fine-tune at a time.
#
#   here:  python benchmarks/headroom.py bundle --policies P.json --bundle .gpu      # jobs, data, weights
#          (wheels of torch-pruning, gymnasium and farama-notifications in .whl: the machine lacks them)
#   there: bash benchmarks/device_call.sh                        # device tool: carry .gpu and .whl
#   rehearsal on this CPU: OUT=/tmp/rehearsal DEVICE=cpu WORKERS=1 BUILDERS=2 GRID_SECONDS=120 \
#          GRID_OPTIONS="--limit 3 --epochs 1" CHECK_OPTIONS=--quick bash benchmarks/device_call.sh
#
# A network with no checkpoint kept here (issue 30's vgg16 and mobilenet_v2 at 20%): HEADROOM_MODEL=vgg16 with
# only data.pkl in the bundle (from any earlier bundle) trains it there (TRAIN_EPOCHS, TRAIN_LR; or carry
# .gpu/vgg16.pt), draws and scores the sample there (SAMPLE_OPTIONS: --families, --scale, ...), and bundles it
# before the fine-tunes; policies.json and the trained network's log come back with the results. Where the
# fine-tunes outlast one call, a second call within the machine's 30 warm seconds goes on with what is there:
# carry .whl and a folder holding the first call's results.jsonl (not .gpu: the machine's .gpu, bundled there,
# is kept), without HEADROOM_MODEL, with GRID_OPTIONS="--done FOLDER/results.jsonl".
# Rehearsed on this CPU with HEADROOM_MODEL=resnet20 (its weights carried in the bundle) and SAMPLE_OPTIONS=--scale 0.05.
set -u
OUT=${OUT:-/tmp/device-out}
DEVICE=${DEVICE:-cuda}
BUNDLE=${BUNDLE:-.gpu}
WORKERS=${WORKERS:-14}
BUILDERS=${BUILDERS:-4}
GRID_SECONDS=${GRID_SECONDS:-450}
PRECISION=${PRECISION:-fp32}   # the CPU rows it is compared with are fp32
GRID_OPTIONS=${GRID_OPTIONS:-}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD/benchmarks:${PYTHONPATH:-} PYTHONUNBUFFERED=1
PY=${PY:-python3}
date -u
$PY -c "import torch, torch_pruning, gymnasium, amc; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true

# 0. (HEADROOM_MODEL) a network trained, sampled and bundled here
if [ -n "${HEADROOM_MODEL:-}" ]; then
    NPZ=/tmp/dc-data/cifar10_jpeg.npz WEIGHTS=/tmp/dc-weights
    mkdir -p /tmp/dc-data $WEIGHTS
    $PY -c "from pathlib import Path; from grid_files import unpack_dataset; print('data bit-identical:', unpack_dataset(Path('$BUNDLE/data.pkl'), Path('$NPZ')))"
    if [ -f "$BUNDLE/$HEADROOM_MODEL.pt" ]; then cp "$BUNDLE/$HEADROOM_MODEL.pt" $WEIGHTS/; else
        $PY -m amc.cli train --model "$HEADROOM_MODEL" --data cifar10 --data-dir $NPZ --epochs "${TRAIN_EPOCHS:-30}" \
            --lr "${TRAIN_LR:-0.05}" --warmup-epochs 1 --precision bf16 --device "$DEVICE" \
            --out $WEIGHTS/$HEADROOM_MODEL.pt || exit 1
    fi
    $PY benchmarks/headroom.py sample --model "$HEADROOM_MODEL" --ratio "${RATIO:-0.2}" --lbound "${LBOUND:-0.05}" \
        --name "headroom-$HEADROOM_MODEL-r${RATIO:-0.2}" --device "$DEVICE" --data $NPZ --weights-dir $WEIGHTS \
        --out "$OUT/policies.json" ${SAMPLE_OPTIONS:-} || exit 1
    rm -f "$BUNDLE/jobs.json"   # the carried data.pkl is kept: bundle packs nothing again
    $PY benchmarks/headroom.py bundle --policies "$OUT/policies.json" --bundle "$BUNDLE" || exit 1
fi

# 1. batch-1 latency, original against uniform 50% MACs, interleaved (gpu_check's part), on a small generated folder
if [ -z "${SKIP_LATENCY:-}" ]; then
$PY -c "from pathlib import Path; from search_scaling import make_folder; make_folder(Path('/tmp/dc-folder'), train_per_class=60)"
$PY benchmarks/gpu_check.py --out "$OUT" --device "$DEVICE" --parts mobilenet --folder /tmp/dc-folder \
    --precision fp32 ${CHECK_OPTIONS:-}
fi

# 2. the fine-tunes; CUDA MPS lets the workers' small kernels share the card instead of taking turns
if [ "$DEVICE" = cuda ]; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
    nvidia-cuda-mps-control -d && echo "MPS on" || echo "MPS not started"
    if ! $PY -c "import torch; torch.zeros(1, device='cuda')"; then   # a client that cannot connect: without MPS
        echo quit | nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY; echo "MPS off again"
    fi
fi
setsid $PY benchmarks/finetune_grid.py run --bundle "$BUNDLE" --out "$OUT" --work /tmp/dc-work --device "$DEVICE" \
    --workers "$WORKERS" --builders "$BUILDERS" --build-threads 1 --precision "$PRECISION" $GRID_OPTIONS &
GRID=$!
for _ in $(seq "$GRID_SECONDS"); do kill -0 $GRID 2>/dev/null || break; sleep 1; done
if kill -0 $GRID 2>/dev/null; then echo "grid stopped after ${GRID_SECONDS}s"; fi
kill -- -$GRID 2>/dev/null   # its workers too (and whatever a finished grid left in its group)
wait $GRID 2>/dev/null
echo "fine-tunes recorded: $(grep -c test_top1 "$OUT/results.jsonl" 2>/dev/null || echo 0)"
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv 2>/dev/null || true
date -u
