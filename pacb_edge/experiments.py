"""The main job (`pacb-edge demo`): its cells (train with sparsity -> prune -> fine-tune) run through the experiment
engine `pacb_edge.cells` that `pacb-edge reproduce` uses too, then every model is exported and benched.

This module sits at the top of the data flow (it drives training, export and the bench runners), like the CLI, and
imports those layers inside its functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacb_edge.cells import CellConfig, CellRunner
from pacb_edge.fileio import atomic_write_json, atomic_write_text, ensure_dir

# PACB's variants: the paper's Base (the architecture as published: SE in MobileNetV3, none in RepVGG), Base+CA
# (CA in every block, sparsity-trained), and Base+CA+Pruned (bn-scale pruning of that model, fine-tuned).
DEMO_ARCHS = ("mobilenetv3_large", "repvgg_a0")
DEMO_VARIANTS: tuple[tuple[str, str | None], ...] = (("Base", None), ("CA", "ca"))


@dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    archs: tuple[str, ...] = DEMO_ARCHS
    width_mult: float = 1.0
    # Long enough that every model the demo reports reaches >= 95 % on digits (measured: lr 0.1 for 6 epochs left
    # RepVGG-A0 at 64-86 % depending on the seed; 16 epochs at 0.05 and 6 fine-tuning epochs at 0.01 converge).
    epochs: int = 16
    finetune_epochs: int = 6
    lr: float = 0.05
    seed: int = 0
    sparsity: float = 1e-4
    prune_ratio: float = 0.3
    limit: int | None = None
    calibration_images: int = 200
    bench_runs: int = 100
    bench_warmup: int = 10
    threads: int | None = None
    progress: bool = True


def demo_cells(cfg: DemoConfig) -> list[tuple[str, str, CellConfig]]:
    """(arch, variant label, cell) of every training run of the demo: Base, and CA sparsity-trained then pruned."""
    cells = []
    for arch in cfg.archs:
        for label, attention in DEMO_VARIANTS:
            cell = CellConfig(
                arch=arch,
                attention=attention,
                width_mult=cfg.width_mult,
                epochs=cfg.epochs,
                finetune_epochs=cfg.finetune_epochs,
                lr=cfg.lr,
                finetune_lr=cfg.lr / 5,
                seed=cfg.seed,
                sparsity=cfg.sparsity if attention == "ca" else 0.0,
                criterion="bn-scale" if attention == "ca" else None,
                prune_ratio=cfg.prune_ratio,
                limit=cfg.limit,
            )
            cells.append((arch, label, cell))
    return cells


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The main job on the bundled digits data: train Base / Base+CA / Base+CA+Pruned for each arch, export each to
    ONNX and FP32 + INT8 TFLite (verified), bench everything on the host CPU, and make the Jetson bundles of the
    pruned models. Writes `demo_results.{json,md}`, the bench reports and the plots under `cfg.out`."""
    from pacb_edge.device_bench.bench import BenchOptions, run_bench, write_reports
    from pacb_edge.export.api import export_checkpoint

    out = ensure_dir(cfg.out)
    timings: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    artifacts: dict[tuple[str, str], dict[str, str]] = {}
    t_start = time.perf_counter()
    from pacb_edge.pipeline import pin_threads

    threads = pin_threads(cfg.threads)
    log(f"seed {cfg.seed}, {threads} torch thread{'s' if threads != 1 else ''} (training and bench)")
    runner = CellRunner(out, "pacb-edge demo", progress=cfg.progress, threads=threads, log=log)
    for arch, label, cell in demo_cells(cfg):
        t0 = time.perf_counter()
        done = runner.run(cell, f"{arch}_{label.lower()}")
        timings[f"train {arch} {label}"] = time.perf_counter() - t0
        stages = [(label, "base", done.metrics["stages"]["train"])]
        if "finetune" in done.metrics["stages"]:
            stages.append((f"{label}_Pruned", "pruned", done.metrics["stages"]["finetune"]))
        for name, stage_dir, rec in stages:
            ckpt = done.dir / stage_dir
            log(f"export {arch} {name}")
            t0 = time.perf_counter()
            onnx_report = export_checkpoint(ckpt, ["onnx"], out_dir=ckpt / "export")
            tfl_report = export_checkpoint(
                ckpt,
                ["tflite"],
                precision="fp32,int8",
                out_dir=ckpt / "export",
                calibration_images=cfg.calibration_images,
                allow_drop=True,
            )
            timings[f"export {arch} {name}"] = time.perf_counter() - t0
            files = {
                a["format"] + "_" + a["precision"]: a["path"]
                for a in onnx_report["artifacts"] + tfl_report["artifacts"]
            }
            tfl = {a["precision"]: a["verification"] for a in tfl_report["artifacts"]}
            artifacts[(arch, name)] = files
            rows.append(
                {
                    "arch": arch,
                    "variant": name,
                    "checkpoint": str(ckpt),
                    "test_top1": rec["test_top1"],
                    "params": rec["params"],
                    "macs": rec["macs"],
                    "flops": rec["flops"],
                    "int8_top1": tfl["int8"]["top1"],
                    "fp32_tflite_top1": tfl["fp32"]["top1"],
                    "int8_drop_pp": tfl["int8"].get("drop_vs_fp32_pp"),
                    "onnx_bytes": Path(files["onnx_fp32"]).stat().st_size,
                    "tflite_fp32_bytes": Path(files["tflite_fp32"]).stat().st_size,
                    "tflite_int8_bytes": Path(files["tflite_int8"]).stat().st_size,
                    "export_seconds": {
                        a["format"] + "_" + a["precision"]: a["export_seconds"]
                        for a in onnx_report["artifacts"] + tfl_report["artifacts"]
                    },
                }
            )
            if name.endswith("_Pruned"):
                log(f"jetson bundle {arch} {name}")
                export_checkpoint(ckpt, ["trt"], out_dir=ckpt / "export", calibration_images=cfg.calibration_images)
    log("bench on the host CPU")
    t0 = time.perf_counter()
    bench_files = [
        p for files in artifacts.values() for k, p in files.items() if k in ("onnx_fp32", "tflite_int8", "tflite_fp32")
    ]
    results = run_bench(
        bench_files,
        BenchOptions(runs=cfg.bench_runs, warmup=cfg.bench_warmup, threads=threads, out_dir=out / "bench"),
    )
    write_reports(results, out / "bench", meta={"command": "pacb-edge demo", "device": "cpu"})
    timings["bench"] = time.perf_counter() - t0
    by_path = {r.artifact: r for r in results}
    for row in rows:
        files = artifacts[(row["arch"], row["variant"])]
        for key, col in (
            ("onnx_fp32", "onnx_ms"),
            ("tflite_fp32", "tflite_fp32_ms"),
            ("tflite_int8", "tflite_int8_ms"),
        ):
            rec = by_path.get(files[key])
            row[col] = rec.per_image_ms if rec is not None else None
    for arch in cfg.archs:
        arch_rows = {r["variant"]: r for r in rows if r["arch"] == arch}
        base = arch_rows.get("Base")
        for r in arch_rows.values():
            if base and r["onnx_ms"] and base["onnx_ms"]:
                r["onnx_latency_ratio_vs_base"] = r["onnx_ms"] / base["onnx_ms"]
                r["flops_ratio_vs_base"] = r["flops"] / base["flops"]
        if "CA" in arch_rows and "CA_Pruned" in arch_rows:
            ca, pr = arch_rows["CA"], arch_rows["CA_Pruned"]
            pr["flops_ratio_vs_ca"] = pr["flops"] / ca["flops"]
            pr["acc_change_vs_ca_pp"] = 100 * (pr["test_top1"] - ca["test_top1"])
            if ca["onnx_ms"] and pr["onnx_ms"]:
                pr["onnx_latency_ratio_vs_ca"] = pr["onnx_ms"] / ca["onnx_ms"]
            if ca["tflite_int8_ms"] and pr["tflite_int8_ms"]:
                pr["int8_latency_ratio_vs_ca"] = pr["tflite_int8_ms"] / ca["tflite_int8_ms"]
    timings["total"] = time.perf_counter() - t_start
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()},
        "rows": rows,
        "timings_s": timings,
        "bench": str(out / "bench" / "bench.json"),
    }
    atomic_write_json(out / "demo_results.json", result)
    atomic_write_text(out / "demo_results.md", demo_markdown(rows))
    return result


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def demo_markdown(rows: list[dict[str, Any]]) -> str:
    """The paper-style table (PACB Tables 2-4 layout plus latency) as Markdown."""
    lines = [
        "| Model | Acc (%) | Params (M) | FLOPs (M, MACs) | ONNX ms | TFLite-INT8 ms | INT8 Acc (%) | INT8 size (KB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} {r['variant']} | {_fmt(100 * r['test_top1'], '.2f')} | {_fmt(r['params'] / 1e6, '.3f')} "
            f"| {_fmt(r['macs'] / 1e6, '.2f')} | {_fmt(r.get('onnx_ms'), '.3f')} "
            f"| {_fmt(r.get('tflite_int8_ms'), '.3f')} "
            f"| {_fmt(100 * r['int8_top1'], '.2f')} | {_fmt(r['tflite_int8_bytes'] / 1024, '.1f')} |"
        )
    return "\n".join(lines) + "\n"
