#!/usr/bin/env bash
# The GPU checks of issue 10, in one run (under 8 minutes on one modern GPU). On a CUDA machine:
#   make venv && bash scripts/gpu_check.sh [OUT]        # OUT default: results/gpu_check
# 1. the device-parametrised tests on CUDA;
# 2. one paper-scale training iteration of each recipe on synthetic data: measured peak memory
#    (torch.cuda.max_memory_allocated) against scripts/estimate_memory.py's prediction;
# 3. float16 and bfloat16 steps of the LRTI-VSR recipe;
# 4. a 2-process nccl DDP run of the LRTI demo recipe (skipped, and said so, with fewer than 2 GPUs).
# Each step's output goes to OUT; the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/gpu_check}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
failed=0
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo "== $name"
    if timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"; then echo "== $name: ok"; else echo "== $name: FAILED"; failed=$((failed + 1)); fi
}
nvidia-smi -L | tee "$OUT/gpus.txt" || { echo 'no CUDA device: this script is for a GPU machine'; exit 1; }

step tests 200 env LRTI_TEST_DEVICE=cuda "$PY" -m pytest -q -m "not slow" tests/test_lrti_strategy.py \
    tests/test_training_guards.py tests/test_ritb.py tests/test_lrti_vsr_arch.py tests/test_basicvsr_arch.py \
    tests/test_basicvsrpp_arch.py tests/test_lrti_model.py tests/test_checkpoint.py
step memory 150 "$PY" scripts/gpu_memory_check.py --json "$OUT/memory.json" -opt options/train_lrti.yml \
    options/train_lrti_plain.yml options/train_lrti_basicvsrpp.yml options/train_basicvsrpp_plain.yml \
    options/finetune_basicvsr_real_lrti.yml
step amp 60 "$PY" scripts/gpu_memory_check.py --json "$OUT/amp.json" -opt options/train_lrti.yml \
    --amp float16 bfloat16
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
    step demo_data 60 "$PY" scripts/run_demo.py --tiny --out "$OUT/demo"
    step ddp_nccl 90 "$PY" -m torch.distributed.run --nproc_per_node=2 -m lrti_plugin.train \
        -opt options/train_demo_lrti.yml --launcher pytorch --force_yml train:total_iter=2 \
        datasets:train:long_frames=8 network_g:spynet_path=~ path:pretrain_network_g=~ \
        datasets:train:dataroot_gt="$OUT/demo/data/train_GT.lmdb" \
        datasets:train:dataroot_lq="$OUT/demo/data/train_GT_LRx4.lmdb" \
        datasets:train:meta_info_file="$OUT/demo/data/train_GT_meta_info.txt" \
        datasets:val:dataroot_gt="$OUT/demo/data/heldout_GT.lmdb" \
        datasets:val:dataroot_lq="$OUT/demo/data/heldout_GT_LRx4.lmdb" \
        datasets:val:meta_info_file="$OUT/demo/data/heldout_GT_meta_info.txt"
else
    echo '== ddp_nccl: skipped (needs 2 GPUs; NCCL refuses two ranks on one GPU)' | tee "$OUT/ddp_nccl.txt"
fi
echo "failed steps: $failed"
exit "$failed"
