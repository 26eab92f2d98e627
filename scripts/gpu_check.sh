#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one run: build the native CUDA kernels, run the tests that
# have a cuda side (kernels against their references, GPU vs CPU segmentation, AMP training
# steps), then the GPU benchmarks. Meant for a machine that has CUDA torch, nvcc and a GPU but
# none of our pinned environment (it uses that machine's python3 and its packages):
#
#     bash scripts/gpu_check.sh [STEP ...]  # logs and tables under $OUT (default runs/gpu_check)
#
# Steps: build tests bench_ops bench_pipeline bench_train (default: all, in that order).
#
# Checks run in order of importance, each logged on its own, and a failing step does not stop
# the later ones; the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)}
export PYTHONPATH="$PWD/dyco_perception:$PWD/training:$PWD/cuda_ops${PYTHONPATH:+:$PYTHONPATH}"
CHECKPOINTS=(checkpoints/dyco3d_scannet_m16.safetensors checkpoints/dknet_scannet_m16.safetensors
  checkpoints/isbnet_scannet_m16.safetensors)
STEPS=" ${*:-build tests bench_ops bench_pipeline bench_train} "
failed=0

step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, count a failure
  local name=$1 start=$SECONDS
  shift
  [[ $STEPS == *" $name "* ]] || return 0
  echo "== $name: $*"
  if "$@" > "$OUT/$name.log" 2>&1; then
    echo "   ok ($((SECONDS - start)) s)"
  else
    echo "   FAILED ($((SECONDS - start)) s); last lines:"
    failed=$((failed + 1))
  fi
  tail -n 25 "$OUT/$name.log" | sed 's/^/   | /'
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
step build "$PY" -m dyco_ops.build
# 8 workers of 2 threads each: 16 threads per worker on 16 cores starved the CPU halves.
step tests env OMP_NUM_THREADS=2 "$PY" -m pytest -q -p no:cacheprovider -n 8 -rfEs --timeout 120 \
  tests/test_ops.py tests/test_ops_decoders.py tests/test_dynamic_decode_native.py \
  tests/test_sparse_conv_native.py tests/test_segmenter.py \
  tests/test_trainer.py::test_a_few_amp_steps_on_cuda_reduce_the_loss \
  tests/test_trainer.py::test_mixed_precision_is_cuda_only -k "not pointgroup"
step bench_ops timeout 120 "$PY" bench/bench_ops.py --device cuda --sizes 50000 1000000
step bench_pipeline timeout 180 "$PY" bench/bench_pipeline.py --device cuda --backends torch \
  --models "${CHECKPOINTS[@]}" --sizes 50000 250000 1000000 --repeats 3
step bench_train timeout 120 "$PY" bench/bench_train_speed.py --device cuda --threads 1 \
  --config config/train/continue.yaml --iterations 30
echo "failed steps: $failed"
exit "$failed"
