#!/usr/bin/env bash
# INT8 of a short-trained CA model: MobileNetV3-Large CA x0.5 trained 3 epochs on 6,000 Fashion-MNIST images with
# `pacb-edge train`'s defaults, without augmentation (Slimming lambda 1e-4), pruned 30 % by bn-scale and fine-tuned
# 1 epoch, then exported to INT8 TFLite (the accuracy-budget loop's mixed precision, full INT8 when that meets it)
# and tested on the 10,000 test images.
# The run and its export go to RUN (default runs/int8_probe); OUT/int8_probe.json gets the INT8 - FP32 figures.
# OUT (default benchmarks/results/int8_probe), RUN and THREADS (default 2) may be set.
set -euo pipefail
PCB=${PCB:-.venv/bin/pacb-edge}
OUT=${OUT:-benchmarks/results/int8_probe}
THREADS=${THREADS:-2}
RUN=${RUN:-runs/int8_probe}

"$PCB" train --model mobilenetv3_large --attention ca --width-mult 0.5 --dataset fashion-mnist --train-limit 6000 \
  --epochs 3 --no-augment --sparsity 1e-4 --prune bn-scale --prune-ratio 0.3 --finetune-epochs 1 --seed 0 \
  --threads "$THREADS" --no-progress --out "$RUN"
"$PCB" export "$RUN/pruned" --target tflite --precision int8 --allow-drop --out "$RUN/export"
mkdir -p "$OUT"
.venv/bin/python - "$RUN" "$OUT" <<'PY'
import json, os, platform, sys
from datetime import date
from pathlib import Path

from pacb_edge.core.fileio import atomic_write_json

run, out = Path(sys.argv[1]), Path(sys.argv[2])
report = json.loads((run / "export" / "export_report.json").read_text())
q = next(a["int8"] for a in report["artifacts"] if a.get("int8"))
record = {
    "date": date.today().isoformat(),
    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    "command": "benchmarks/int8_probe.sh",
    "train_command": json.loads((run / "metrics.json").read_text())["command"],
    "fp32_test_top1": report["torch_top1"],
    "int8_test_top1": q["test"]["top1"],
    "int8_minus_fp32_pp": round(100 * (q["test"]["top1"] - report["torch_top1"]), 2),
    "full_int8_test_top1": q["test"]["full_int8_top1"],
    "float_ops_kept": q["n_float_ops"],
    "worst_layers": q["worst_layers"],
}
atomic_write_json(out / "int8_probe.json", record)
print(f"INT8 - FP32: {record['int8_minus_fp32_pp']:+.2f} pp ({100 * record['int8_test_top1']:.2f} % vs "
      f"{100 * record['fp32_test_top1']:.2f} %), {record['float_ops_kept']} op(s) in float")
PY
