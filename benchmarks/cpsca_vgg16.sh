#!/usr/bin/env bash
# CPSCA's ordering on VGG16 (CPSCA >= Slimming >= L1-norm, with random as a control), as `pacb-edge reproduce cpsca
# --budget cpu`: one VGG16-SCA model (width x0.25, sparsity 1e-4, 4,000 training images, the whole test split) is
# pruned at 50 % and 80 % of the channels by each criterion from that same checkpoint (SCA is removed in every case, so
# only the channel choice differs), fine-tuned, exported to ONNX and benched in one interleaved run; 3 seeds, mean ± std.
# The table's notes say whether the ordering holds and by how many standard deviations.
# About an hour on a 2-core CPU (the estimate is in pacb_edge/studies/grids.py, CPSCA_CPU). An interrupted run resumes
# cell by cell. `benchmarks/cpsca_vgg16.sh --quick` is a smoke run of a few minutes; other arguments go to
# `pacb-edge reproduce` too. DATASET (default fashion-mnist), SEEDS (default: the budget's) and OUT may be set.
set -euo pipefail
PCB=${PCB:-.venv/bin/pacb-edge}
args=(--budget cpu --dataset "${DATASET:-fashion-mnist}")
if [[ -n "${SEEDS:-}" ]]; then args+=(--seeds "$SEEDS"); fi
if [[ -n "${OUT:-}" ]]; then args+=(--out "$OUT"); fi
exec "$PCB" reproduce cpsca "${args[@]}" "$@"
