#!/usr/bin/env bash
# INT8 that keeps its accuracy, on Fashion-MNIST (issue "INT8 that keeps its accuracy"): for each model, export FP32 +
# INT8 TFLite with the per-layer report and mixed precision to --int8-budget (chosen on the validation split), then
# one interleaved host bench of every FP32 and INT8 file (XNNPACK, the same thread count for all, 1,000 runs), and
# the table `int8_results.{json,md}` in OUT: INT8 - PyTorch FP32 top-1 on the 10,000 test images, INT8 / FP32 size,
# INT8 / FP32 TFLite latency, and the layers kept in float.
#
# The models are the checkpoints of `pacb-edge reproduce pacb --dataset fashion-mnist --budget cpu` (seed 0) and
# `benchmarks/cpsca_vgg16.sh` (seed 0), plus a QARepVGG-A0 CA trained and pruned with the same schedule (trained here
# when missing). Arguments: none. PACB, CPSCA, OUT, THREADS (default 1), BUDGET (default 0.5) and JOBS (exports run
# side by side, default 1; the bench always runs alone) may be set.
set -euo pipefail
PCB=${PCB:-.venv/bin/pacb-edge}
PACB=${PACB:-runs/reproduce_pacb_fashion-mnist_cpu/seed0}
CPSCA=${CPSCA:-runs/reproduce_cpsca_fashion-mnist_cpu/seed0}
QAREP=${QAREP:-runs/int8/qarepvgg_a0_ca}
OUT=${OUT:-runs/int8}
THREADS=${THREADS:-1}
BUDGET=${BUDGET:-0.5}
JOBS=${JOBS:-1}

if [[ ! -f "$QAREP/pruned/model.safetensors" ]]; then
  # The reproduce cpu budget's schedule (pacb_edge/studies/grids.py, PACB_CPU) for the QARep block.
  "$PCB" train --model qarepvgg_a0 --attention ca --dataset fashion-mnist --grayscale-to-rgb --train-limit 6000 \
    --width-mult 0.5 --epochs 12 --lr 0.05 --scheduler cosine --warmup-epochs 1 --nesterov --weight-decay 5e-4 \
    --batch-size 32 --sparsity 1e-4 --prune bn-scale --prune-ratio 0.3 --finetune-epochs 4 --finetune-lr 0.01 \
    --seed 0 --threads "$THREADS" --out "$QAREP" --no-progress
fi

NAMES=(mobilenetv3_large_ca_pruned mobilenetv3_large_ca_pruned_hswish_float repvgg_a0_ca_pruned qarepvgg_a0_ca_pruned
  qarepvgg_a0_ca_pruned_hswish_float vgg16_sca vgg16_sca_cpsca50)
declare -A MODELS=(
  [mobilenetv3_large_ca_pruned]="$PACB/mobilenetv3_large_ca/pruned"
  [mobilenetv3_large_ca_pruned_hswish_float]="$PACB/mobilenetv3_large_ca/pruned"
  [repvgg_a0_ca_pruned]="$PACB/repvgg_a0_ca/pruned"
  [qarepvgg_a0_ca_pruned]="$QAREP/pruned"
  [qarepvgg_a0_ca_pruned_hswish_float]="$QAREP/pruned"
  [vgg16_sca]="$CPSCA/vgg16_sca_sparse/base"
  [vgg16_sca_cpsca50]="$CPSCA/vgg16_sca-attention_r0.50/pruned"
)
# The *_hswish_float rows keep every HARD_SWISH in float (XNNPACK has no INT8 h-swish): the latency lever.
declare -A EXTRA=(
  [mobilenetv3_large_ca_pruned_hswish_float]="--int8-float-ops HARD_SWISH"
  [qarepvgg_a0_ca_pruned_hswish_float]="--int8-float-ops HARD_SWISH"
)
artifacts=()
pids=()
for name in "${NAMES[@]}"; do
  ckpt=${MODELS[$name]}
  if [[ ! -f "$ckpt/model.safetensors" ]]; then
    echo "int8_fashion: $ckpt/model.safetensors is missing; run the Fashion-MNIST reproductions first" >&2
    exit 1
  fi
  while :; do  # at most JOBS exports at a time (`jobs` in a pipeline would see no jobs)
    running=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=$((running + 1)); done
    (( running < JOBS )) && break
    sleep 2
  done
  # --allow-drop: a missed budget is a result to report here, not a reason to stop the table.
  # shellcheck disable=SC2086  # EXTRA holds whole options
  "$PCB" export "$ckpt" --target tflite --precision fp32,int8 --int8-budget "$BUDGET" --allow-drop \
    ${EXTRA[$name]:-} --out "$OUT/$name" > "$OUT/$name.export.log" 2>&1 &
  pids+=($!)
  artifacts+=("$OUT/$name/model_fp32.tflite" "$OUT/$name/model_int8.tflite")
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "int8_fashion: exports done after ${SECONDS} s"
"$PCB" bench "${artifacts[@]}" --device cpu --threads "$THREADS" --runs 1000 --out "$OUT/bench"
exec "${PCB%pacb-edge}python" "$(dirname "$0")/int8_table.py" "$OUT" "${NAMES[@]}"
