#!/usr/bin/env bash
# What only a GPU can show, in one run of a few minutes on one CUDA GPU:
#   1. the CUDA tests (pytest --rungpu -m gpu): the batched augmentations and the batched phase
#      vocoder on CUDA give the CPU path's parameters and agree with the numpy path;
#   2. benchmarks/vocoder_batch.py --quick: views/s of fade -> time stretch -> pitch shift on
#      CUDA at 32/128 rows beside the CPU variants, and the 2D model's training views/s alone
#      and with the set augmented on the GPU first;
#   3. benchmarks/train_throughput.py --device cuda --no-pipeline --quick: the 1D and 2D models
#      alone under bf16 autocast.
# Each step's output and JSON go under $OUT (default ./device-results); a failing step does not
# stop the next. Without CUDA it says so and exits 2 before running anything.
set -uo pipefail
out="${OUT:-device-results}"
mkdir -p "$out"
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "device_checks: torch sees no CUDA device; nothing to check here" >&2
    exit 2
fi
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
status=0
run() {  # run NAME COMMAND...: its output to $out/NAME.txt, its time and exit status on stdout
    local name=$1 started=$SECONDS
    shift
    "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    echo "$name: exit $rc after $((SECONDS - started)) s"
    [ "$rc" -eq 0 ] || status=1
}
run pytest-gpu python -m pytest -q -p no:cacheprovider --rungpu -m gpu \
    tests/test_augment_batch.py tests/test_augment_batch_vocoder.py
run vocoder-batch python benchmarks/vocoder_batch.py --quick --json "$out/vocoder_batch.json"
run train-throughput python benchmarks/train_throughput.py --quick --device cuda --no-pipeline \
    --json "$out/train_throughput.json"
exit "$status"
