#!/usr/bin/env bash
# The CUDA path end to end: training (plain, AMP, adversarial), every registered
# attack, AMP + channels_last attacks, torchrun with nccl, the report, and the GPU
# benchmark suite. Run on a machine with a GPU, from the repository root:
#     bash scripts/gpu_check.sh [OUT_DIR]
set -uo pipefail
export PYTHONPATH="$PWD" OMP_WAIT_POLICY=PASSIVE
OUT="${1:-${OUT:-/tmp/advkit-gpu}}"
RUNS="$OUT/runs"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
status=0
step() { echo "=== $*"; "$@" || { echo "FAILED ($?): $*"; status=1; }; }

step $PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
step $PY -m advkit train --model bncnn --optimizer adam --epochs 4 --device cuda --out "$RUNS/bncnn"
step $PY -m advkit train --model attention --epochs 3 --device cuda --amp bf16 --out "$RUNS/attention-bf16"
step $PY -m advkit train --model bncnn --epochs 3 --device cuda --adversarial pgd --adv-eps 0.1 --adv-steps 5 --out "$RUNS/bncnn-pgd-at"
step $PY -m advkit train --model bncnn --epochs 3 --device cuda --adversarial fgsm-rs --adv-eps 0.1 --out "$RUNS/bncnn-fgsm-rs"
for attack in fgsm pgd apgd mifgsm strong; do
  step $PY -m advkit attack "$RUNS/bncnn" --attack "$attack" --device cuda --eps 0,0.05,0.1,0.2
done
step $PY -m advkit attack "$RUNS/bncnn" --attack square --device cuda --eps 0,0.1 --limit 120
step $PY -m advkit attack "$RUNS/bncnn" --attack pgd --norm l2 --device cuda --amp bf16 --channels-last --eps 0,0.5,1
step $PY -m advkit attack "$RUNS/bncnn-pgd-at" --attack strong --device cuda --eps 0,0.1
step $PY -m advkit attack "$RUNS/attention-bf16" --attack pgd --device cuda --amp fp16 --eps 0,0.1
step $PY -m advkit attack "$RUNS/bncnn" --attack pgd --steps 20 --device cuda --eps 0,0.1 --defense resize:0.1 --adaptive eot:4
step $PY -m advkit attack "$RUNS/bncnn" --attack pgd --steps 20 --device cuda --eps 0,0.1 --defense jpeg:75 --adaptive bpda
# The same curve on the CPU: per-sample seeds make it comparable up to float rounding.
step $PY -m advkit attack "$RUNS/bncnn" --attack pgd --device cpu --eps 0,0.05,0.1,0.2 --force --out "$OUT/pgd-cpu.json"
step $PY -m advkit attack "$RUNS/bncnn" --attack pgd --device cuda --eps 0,0.05,0.1,0.2 --force --out "$OUT/pgd-cuda.json"
step torchrun --standalone --nproc-per-node 1 -m advkit attack "$RUNS/bncnn" --attack apgd --device cuda --eps 0,0.1 --force
step $PY -m advkit report "$RUNS" --out "$OUT/report"
step $PY -m scripts.bench --only gpu --device cuda --out "$OUT/BENCHMARKS-gpu.md"
exit $status
