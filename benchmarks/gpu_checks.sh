#!/usr/bin/env bash
# Every check that needs a GPU, in one go, each bounded by its own timeout (benchmarks/README.md, "On one GPU"):
# the CUDA local-attention kernels, the one-rank compile and offloading tests, and the compile benchmark.
# Logs and the benchmark's JSON go to $OUT (default /tmp/gpu-checks).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
step() {  # step NAME SECONDS COMMAND...: run, keep the log, report the exit status
    local name=$1 seconds=$2; shift 2
    local begin=$SECONDS
    timeout "$seconds" "$@" >"$OUT/$name.log" 2>&1
    echo "== $name: exit $? in $((SECONDS - begin)) s"
    tail -n 25 "$OUT/$name.log"
}
STEPS=${STEPS:-kernels one_rank compile}  # a subset reruns part of it
[[ $STEPS == *kernels* ]] && step cuda_kernels 60 python3 -m pytest -q -rs tests/test_cuda_kernels.py
# -s: the tests print their measurements before they assert, so a step cut by its timeout still says what
# failed and why (pytest's own summary comes only at the end).
[[ $STEPS == *one_rank* ]] && step cuda_one_rank ${ONE_RANK_SECONDS:-270} python3 -m pytest -v -s --tb=short \
    --durations=0 tests/test_cuda_one_rank.py
[[ $STEPS == *compile* ]] && step cuda_compile ${COMPILE_SECONDS:-200} torchrun --nproc_per_node 1 benchmarks/cuda_compile.py \
    --modes default,reduce-overhead --out "$OUT"
