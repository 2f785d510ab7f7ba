"""The table of `benchmarks/int8_fashion.sh`: per model, INT8 TFLite against PyTorch FP32 on the same test images,
INT8 / FP32 size and INT8 / FP32 TFLite latency from one interleaved bench, and what mixed precision kept in float.

Usage: python benchmarks/int8_table.py OUT NAME [NAME ...]   (reads OUT/NAME/export_report.json, OUT/bench/bench.json;
writes OUT/int8_results.json and OUT/int8_results.md)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pacb_edge.core.fileio import atomic_write_json, atomic_write_text

TARGETS = {"drop_pp": -0.5, "size_ratio": 0.3, "latency_ratio": 0.7}


def row(out: Path, name: str, bench: dict[str, dict]) -> dict:
    report = json.loads((out / name / "export_report.json").read_text())
    by_precision = {a["precision"]: a for a in report["artifacts"] if a["format"] == "tflite"}
    fp32, int8 = by_precision["fp32"], by_precision["int8"]
    q = int8.get("int8") or int8.get("int8_quantization") or {}
    lat = {p: bench[str(Path(a["path"]).resolve())]["latency_ms"]["p50"] for p, a in by_precision.items()}
    test = q.get("test", {})
    return {
        "model": name,
        "checkpoint": report["checkpoint"],
        "n_test": report["n_test"],
        "torch_fp32_top1": report["torch_top1"],
        "tflite_fp32_top1": fp32["verification"]["top1"],
        "int8_top1": int8["verification"]["top1"],
        "int8_minus_fp32_pp": 100 * (int8["verification"]["top1"] - report["torch_top1"]),
        "full_int8_minus_fp32_pp": -test["full_int8_drop_pp"] if "full_int8_drop_pp" in test else None,
        "size_ratio": int8["size_bytes"] / fp32["size_bytes"],
        "latency_ratio": lat["int8"] / lat["fp32"],
        "fp32_ms": lat["fp32"],
        "int8_ms": lat["int8"],
        "float_layers": q.get("float_layers", []),
        "budget_met": q.get("met"),
        "val_drop_pp": q.get("val", {}).get("drop_pp"),
        "worst_layers": [w["name"] for w in q.get("worst_layers", [])],
        "mixed_vs_full_int8_latency": (q.get("latency") or {}).get("ratio"),
    }


def main(out: Path, names: list[str]) -> None:
    bench_results = json.loads((out / "bench" / "bench.json").read_text())["results"]
    bench = {str(Path(r["artifact"]).resolve()): r for r in bench_results if r["status"] == "ok"}
    rows = [row(out, n, bench) for n in names]
    lines = [
        "| model | FP32 (PyTorch) % | INT8 % | INT8 − FP32 (pp) | full INT8 − FP32 (pp) | INT8 / FP32 size "
        "| INT8 / FP32 TFLite latency | float layers |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        full = "–" if r["full_int8_minus_fp32_pp"] is None else f"{r['full_int8_minus_fp32_pp']:+.2f}"
        floats = ", ".join(r["float_layers"]) or "none (full INT8)"
        lines.append(
            f"| {r['model']} | {100 * r['torch_fp32_top1']:.2f} | {100 * r['int8_top1']:.2f} "
            f"| {r['int8_minus_fp32_pp']:+.2f} | {full} | {r['size_ratio']:.2f} | {r['latency_ratio']:.2f} | {floats} |"
        )
    atomic_write_json(out / "int8_results.json", {"targets": TARGETS, "rows": rows})
    atomic_write_text(out / "int8_results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: int8_table.py OUT NAME [NAME ...]")
    main(Path(sys.argv[1]), sys.argv[2:])
