#!/usr/bin/env bash
# Every benchmark shown in benchmarks/README.md, in one command (run from anywhere):
#     bash benchmarks/run_all.sh
# CPU (no GPU): one 2-rank launch (models + attention, 1 thread per rank; Flux at 4k tokens also compiled), one
# 4-rank attention launch (for the ring memory goal: with more ranks than cores its times are not meaningful, and
# the report gives its bytes and memory only), then the report.
# GPUs: one launch over all of them, plus the single-GPU split-attention measurement.
# Results: benchmarks/results/*.json, results.md, *.png, and the generated sections of both READMEs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
mkdir -p "$out"

launch() {  # launch NPROC ARGS...: run one torchrun launch and record its exact command in the JSON
    local n=$1; shift
    export BENCH_COMMAND="torchrun --nproc_per_node $n benchmarks/run.py $*"
    echo "+ $BENCH_COMMAND"
    timeout "${BENCH_TIMEOUT:-3600}" torchrun --nproc_per_node "$n" benchmarks/run.py "$@" --no-report
}

if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    gpus=$(python -c "import torch; print(torch.cuda.device_count())")
    if [ "$gpus" -gt 1 ]; then
        launch "$gpus" --tag "cuda-${gpus}gpus" --attn-lengths 4096,16384,65536 --heads 24 --head-dim 128
    fi
    launch 1 --suites split --heads 24 --head-dim 128 --split-lengths 4096,16384,32768,65536 --repeats 5 --tag cuda-1gpu-split
else
    # At least 9 alternating rounds, more (up to 31) until 60 s of timing per workload: single rounds vary by
    # 5-10% on a shared 2-core machine, and the goals table compares variants round by round.
    # --compile flux-4k: the compiled variants (inductor, cold cache) of the 4k Flux workload, in the same rounds.
    # Each costs 30-120 s of compilation per rank on 2 cores; add flux-16k for the larger one (about 15 min more).
    launch 2 --repeats 9 --min-seconds 60 --compile flux-4k --tag cpu-2ranks
    launch 4 --suites attention --attn-lengths 4096,16384 --repeats 2 --tag cpu-4ranks-attention
    # Classifier-free guidance over 2 cfg groups (batched and sequential) against one process, into the goals.
    launch 2 --suites cfg --cfg-tokens 4096 --repeats 15 --tag cpu-2ranks-cfg
fi
python benchmarks/report.py --readme > /dev/null
echo "wrote $out/results.md and the README sections"
