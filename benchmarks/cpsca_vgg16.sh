#!/usr/bin/env bash
# CPSCA ordering and VGG16 latency on digits, with the project's own commands (README "Measured results").
# Trains VGG16-SCA once (sparsity 1e-4), then prunes 50 % of the channels with each criterion from that same
# checkpoint (SCA is removed in every case, so only the channel choice differs), fine-tunes, exports ONNX + INT8
# TFLite and benches everything in one interleaved run against the unpruned model.
set -euo pipefail
OUT=${OUT:-runs/cpsca_vgg16}
WIDTH=${WIDTH:-0.5}
EPOCHS=${EPOCHS:-8}
FT=${FT:-3}
PCB=.venv/bin/pacb-edge
common=(--model vgg16 --attention sca --width-mult "$WIDTH" --grayscale-to-rgb --no-progress)
$PCB train "${common[@]}" --epochs "$EPOCHS" --sparsity 1e-4 --lr 0.05 --out "$OUT/base_run" --stage train
for crit in sca-attention bn-scale l1-norm random; do
  $PCB train "${common[@]}" --prune "$crit" --prune-ratio 0.5 --checkpoint "$OUT/base_run/base" \
      --out "$OUT/$crit" --stage prune
  $PCB train "${common[@]}" --prune "$crit" --prune-ratio 0.5 --finetune-epochs "$FT" --lr 0.05 \
      --out "$OUT/$crit" --stage finetune
done
arts=()
for d in "$OUT/base_run/base" "$OUT"/{sca-attention,bn-scale,l1-norm,random}/pruned; do
  $PCB export "$d" --target onnx --target tflite --precision fp32,int8 --out "$d/export" --allow-drop >/dev/null
  arts+=("$d/export/model.onnx" "$d/export/model_int8.tflite")
done
$PCB bench "${arts[@]}" --baseline "$OUT/base_run/base/export/model.onnx" --runs 200 --warmup 20 --threads 1 \
    --out "$OUT/bench"
