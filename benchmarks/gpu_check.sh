#!/usr/bin/env bash
# What a CPU-only project could not measure, in one run on one GPU (about 10 minutes on an H100).
#
#   benchmarks/gpu_check.sh          # on a machine with a CUDA GPU
#   benchmarks/gpu_check.sh --dry    # on the CPU with tiny sizes: every step runs, no figure means anything
#
# Steps (each bounded by `timeout`; a failed step is reported and the next one runs):
#   1. CUDA fidelity: PaSST-S on the GPU against the CPU in fp32, TF32, bf16 and fp16 (cuda_fidelity.py)
#   2. network throughput and MFU, bf16 and fp16, with the original side by side when `hear21passt`
#      is importable (train_speed.py; see its docstring for the scratch install)
#   3. end-to-end training step throughput and MFU, bf16-mixed and 16-mixed (train_loop.py)
#   4. data-loader supply: clips/s of one decoding worker (data_loading.py)
#   5. the attention-path table for the GPU, bf16 and fp16, recorded into models/attention_paths.json
#      (attention_paths.py --record; commit it)
#   6. how long a PaSST-S checkpoint save holds up the loop, in it and in the background (checkpoint_stall.py)
#   7. the memory gradient checkpointing saves on 30 s clips, batch 32 (grad_checkpointing_memory.py)
#   8. what distillation adds to a training step (offline, replay, online teacher) and the teacher pass of
#      ensemble_many per clip (distill.py)
# The report goes to stdout and to gpu_check-<host>-<date>.md (or $GPU_CHECK_REPORT).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DRY=0
[[ "${1:-}" == "--dry" ]] && DRY=1
REPORT=${GPU_CHECK_REPORT:-gpu_check-$(hostname -s)-$(date +%Y%m%d-%H%M).md}
FAILED=()

step() {  # step <title> <seconds> <command...>
    local title=$1 limit=$2
    shift 2
    echo -e "\n## ${title}\n\n\`$*\`\n"
    local start=$SECONDS
    if timeout "$limit" "$@"; then
        echo -e "\n(${title}: $((SECONDS - start)) s)"
    else
        echo -e "\n**${title} failed or ran over ${limit} s** (status $?)"
        FAILED+=("$title")
    fi
}

main() {
    echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
    if [[ $DRY == 1 ]]; then
        echo -e "\nDry run on the CPU (tiny sizes): checks that every step runs; the figures mean nothing."
        step "CUDA fidelity" 120 "$PY" benchmarks/cuda_fidelity.py --device cpu --tiny
        step "Network throughput (bf16)" 300 "$PY" benchmarks/train_speed.py --device cpu --batch 1 --steps 1 \
            --warmup 1 --settings "s_t=40, s_f=4" --precisions bf16 --impls ours
        step "End-to-end step throughput (bf16-mixed, 16-mixed)" 300 bash -c \
            "'$PY' benchmarks/train_loop.py --device cpu --models tiny --batches 2 --steps 1 --rounds 1 --warmup 1 \
                 --no-metrics --precision bf16-mixed && \
             '$PY' benchmarks/train_loop.py --device cpu --models tiny --batches 2 --steps 1 --rounds 1 --warmup 1 \
                 --no-metrics --precision 32-true"
        step "Data-loader supply" 120 "$PY" benchmarks/data_loading.py --clips 4 --seconds 2 --rounds 1
        step "Attention paths (not recorded)" 120 "$PY" benchmarks/attention_paths.py --device cpu --tokens 14 64 \
            --reps 1
        step "Checkpoint stall" 120 "$PY" benchmarks/checkpoint_stall.py --rounds 1
        step "Gradient checkpointing memory" 180 "$PY" benchmarks/grad_checkpointing_memory.py --device cpu --tiny \
            --batch 1 --settings "s_t=40, s_f=4" --precisions fp32
        step "Distillation costs" 180 "$PY" benchmarks/distill.py --device cpu --parts step disk --student tiny \
            --batch 2 --windows 1 --steps 1
    else
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
        step "CUDA fidelity" 120 "$PY" benchmarks/cuda_fidelity.py
        step "Network throughput and MFU (bf16, fp16)" 150 "$PY" benchmarks/train_speed.py \
            --settings "s_t=40, s_f=4" "stride 16" --precisions bf16 fp16 --batch 64 --steps 20
        step "End-to-end step throughput and MFU (bf16-mixed, 16-mixed)" 180 bash -c \
            "'$PY' benchmarks/train_loop.py --models passt_s --batches 12 64 --compile off --precision bf16-mixed && \
             '$PY' benchmarks/train_loop.py --models passt_s --batches 12 64 --compile off --precision 16-mixed \
                 --no-metrics"
        step "Data-loader supply (one worker)" 60 "$PY" benchmarks/data_loading.py --clips 64 --rounds 3
        step "Attention paths (recorded)" 90 bash -c \
            "'$PY' benchmarks/attention_paths.py --device cuda --dtype bfloat16 --record && \
             '$PY' benchmarks/attention_paths.py --device cuda --dtype float16 --record"
        step "Checkpoint stall (state on the GPU)" 90 "$PY" benchmarks/checkpoint_stall.py --device cuda --rounds 2
        step "Gradient checkpointing memory (30 s clips, batch 32)" 150 "$PY" benchmarks/grad_checkpointing_memory.py \
            --device cuda --batch 32
        step "Distillation costs (PaSST-S student, batch 12; ensemble_many's pass)" 120 "$PY" benchmarks/distill.py \
            --device cuda --parts step store --batch 12 --store-batch 16
    fi
    if [[ ${#FAILED[@]} -gt 0 ]]; then
        echo -e "\nFailed: ${FAILED[*]}"
        return 1
    fi
    echo -e "\nAll steps ran."
}

main 2>&1 | tee "$REPORT"
status=${PIPESTATUS[0]}
echo "report: $REPORT"
exit "$status"
