"""The main job (`pacb-edge demo`): its cells (train with sparsity -> prune -> fine-tune) run through the experiment
engine `pacb_edge.studies.cells` that `pacb-edge reproduce` uses too, then every model is exported and benched.

This module sits at the top of the data flow (it drives training, export and the bench runners), like the CLI, and
imports those layers inside its functions.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_json, atomic_write_text, ensure_dir
from pacb_edge.core.parallel import in_parallel, job_count, thread_plan
from pacb_edge.studies.cells import CellConfig, CellRunner

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
    # Also prune each CA model to this share of its measured ONNX Runtime latency (one thread), beside the ratio
    # prune: the CA_Latency rows. None: ratio pruning only.
    latency_ratio: float | None = None
    limit: int | None = None
    calibration_images: int = 300
    bench_runs: int = 100
    bench_warmup: int = 10
    threads: int | None = None  # torch threads in all (default: all cores)
    jobs: int | None = None  # cells trained side by side (default: one per core)
    progress: bool = True

    def validate(self) -> None:
        """Refuse settings that cannot run, in one line, before anything is written."""
        for name, value, least in (
            ("--epochs", self.epochs, 1),
            ("--finetune-epochs", self.finetune_epochs, 0),
            ("--bench-runs", self.bench_runs, 1),
            ("--threads", self.threads, 1),
            ("--jobs", self.jobs, 1),
            ("--limit", self.limit, 1),
        ):
            if value is not None and value < least:
                raise PacbEdgeError(f"{name} must be at least {least}, got {value}")
        if not 0 < self.prune_ratio < 1:
            raise PacbEdgeError(f"--prune-ratio must be in (0, 1), got {self.prune_ratio}")
        if self.latency_ratio is not None and not 0 < self.latency_ratio < 1:
            raise PacbEdgeError(f"--latency-ratio must be in (0, 1), got {self.latency_ratio}")
        if self.width_mult <= 0:
            raise PacbEdgeError(f"--width-mult must be positive, got {self.width_mult}")


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
            if attention == "ca" and cfg.latency_ratio is not None:
                # the same seeded training (so the same trained model), pruned to a measured latency instead
                cells.append((arch, f"{label}_Latency", dataclasses.replace(cell, latency_ratio=cfg.latency_ratio)))
    return cells


def _train_job(
    out: str, cell: CellConfig, name: str, threads: int, progress: bool
) -> tuple[str, dict[str, Any], float]:
    """One demo cell in a worker process: (its folder, its metrics, seconds)."""
    t0 = time.perf_counter()
    done = CellRunner(Path(out), "pacb-edge demo", progress=progress, threads=threads).run(cell, name)
    return str(done.dir), done.metrics, time.perf_counter() - t0


def _export_job(ckpt: str, calibration_images: int, bundle: bool, threads: int) -> tuple[dict, dict, float]:
    """ONNX and FP32 + INT8 TFLite of one checkpoint (and its Jetson bundle) in a worker process."""
    from pacb_edge.export.api import export_checkpoint
    from pacb_edge.studies.pipeline import pin_threads

    pin_threads(threads)
    t0 = time.perf_counter()
    out = Path(ckpt) / "export"
    onnx_report = export_checkpoint(ckpt, ["onnx"], out_dir=out)
    tfl_report = export_checkpoint(
        ckpt, ["tflite"], precision="fp32,int8", out_dir=out, calibration_images=calibration_images, allow_drop=True
    )
    if bundle:
        export_checkpoint(ckpt, ["trt"], out_dir=out, calibration_images=calibration_images)
    return onnx_report, tfl_report, time.perf_counter() - t0


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The main job on the bundled digits data: train Base / Base+CA / Base+CA+Pruned for each arch, export each to
    ONNX and FP32 + INT8 TFLite (verified), bench everything on the host CPU, and make the Jetson bundles of the
    pruned models. Writes `demo_results.{json,md}`, the bench reports and the plots under `cfg.out`.

    Small models on a CPU do not get faster with more threads, so the cells train (and the checkpoints export) in
    `jobs` worker processes side by side, one thread each by default; each cell is seeded, so the numbers are the
    same for the same seed, jobs and threads. The bench then runs alone, interleaved, on all threads."""
    from pacb_edge.device_bench.bench import BenchOptions, run_bench, write_reports
    from pacb_edge.studies.pipeline import pin_threads

    cfg.validate()
    out = ensure_dir(cfg.out)
    timings: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    artifacts: dict[tuple[str, str], dict[str, str]] = {}
    t_start = time.perf_counter()
    threads = pin_threads(cfg.threads)
    cells = demo_cells(cfg)
    jobs = job_count(cfg.jobs, len(cells))
    job_threads, plan = thread_plan(jobs, threads)
    log(f"seed {cfg.seed}; {plan}")
    trained: dict[int, tuple[str, dict[str, Any]]] = {}

    def trained_one(i: int, result: tuple[str, dict[str, Any], float]) -> None:
        arch, label, _ = cells[i]
        trained[i] = (result[0], result[1])
        timings[f"train {arch} {label}"] = result[2]
        log(f"trained {arch} {label}")

    # The CA cells (train, prune, fine-tune) are the long ones: they go first, so the workers finish together. The
    # latency cells measure while they prune, so they run after the others, one at a time.
    cells = sorted(cells, key=lambda c: (c[2].latency_ratio is not None, c[2].criterion is None))
    log("train " + ", ".join(f"{arch} {label}" for arch, label, _ in cells))
    t0 = time.perf_counter()
    for n_jobs, part in ((jobs, [i for i, c in enumerate(cells) if c[2].latency_ratio is None]),
                         (1, [i for i, c in enumerate(cells) if c[2].latency_ratio is not None])):  # fmt: skip
        in_parallel(
            n_jobs,
            [
                (
                    _train_job,
                    (
                        str(out),
                        cells[i][2],
                        f"{cells[i][0]}_{cells[i][1].lower()}",
                        job_threads,
                        cfg.progress and n_jobs == 1,
                    ),
                )  # fmt: skip
                for i in part
            ],
            lambda k, result, part=part: trained_one(part[k], result),
        )
    timings["train (wall)"] = time.perf_counter() - t0
    stages = []  # (arch, variant, checkpoint, record)
    for i, (arch, label, cell) in enumerate(cells):
        cell_dir, metrics = trained[i]
        if cell.latency_ratio is None:  # a latency cell's trained model is its CA cell's
            stages.append((arch, label, Path(cell_dir) / "base", metrics["stages"]["train"]))
        if "finetune" in metrics["stages"]:
            name = label if cell.latency_ratio is not None else f"{label}_Pruned"
            prune = metrics["stages"].get("prune", {})
            rec = {**metrics["stages"]["finetune"], **{k: prune.get(k) for k in ("alignment", "latency")}}
            stages.append((arch, name, Path(cell_dir) / "pruned", rec))
    exported: dict[int, tuple[dict, dict]] = {}

    def exported_one(i: int, result: tuple[dict, dict, float]) -> None:
        arch, name, _, _ = stages[i]
        exported[i] = (result[0], result[1])
        timings[f"export {arch} {name}"] = result[2]
        log(f"exported {arch} {name}")

    log("export " + ", ".join(f"{arch} {name}" for arch, name, _, _ in stages))
    t0 = time.perf_counter()
    in_parallel(
        jobs,
        [
            (_export_job, (str(ckpt), cfg.calibration_images, name.endswith("_Pruned"), job_threads))
            for _, name, ckpt, _ in stages
        ],
        exported_one,
    )
    timings["export (wall)"] = time.perf_counter() - t0
    for i, (arch, name, ckpt, rec) in enumerate(stages):
        onnx_report, tfl_report = exported[i]
        files = {
            a["format"] + "_" + a["precision"]: a["path"] for a in onnx_report["artifacts"] + tfl_report["artifacts"]
        }
        tfl = {a["precision"]: a["verification"] for a in tfl_report["artifacts"]}
        artifacts[(arch, name)] = files
        rows.append(
            {
                "arch": arch,
                "variant": name,
                "checkpoint": str(ckpt),
                **({"channel_multiple": rec["alignment"].get("multiple")} if rec.get("alignment") else {}),
                **({"latency_budget": _budget_outcome(rec["latency"])} if rec.get("latency") else {}),
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
    variants = [label for label, _ in DEMO_VARIANTS] + [f"{label}_{how}" for label, _ in DEMO_VARIANTS
                                                        for how in ("Pruned", "Latency")]  # fmt: skip
    rows.sort(key=lambda r: (cfg.archs.index(r["arch"]), variants.index(r["variant"])))
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
        for pruned in ("CA_Pruned", "CA_Latency"):
            if "CA" not in arch_rows or pruned not in arch_rows:
                continue
            ca, pr = arch_rows["CA"], arch_rows[pruned]
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


def _budget_outcome(lat: dict[str, Any]) -> dict[str, Any]:
    """What a latency-budget prune measured (its full record stays in the cell's metrics.json)."""
    keys = ("met", "budget_ms", "measured_ms", "predicted_ms", "latency_ratio", "macs_ratio", "runtime", "threads")
    return {k: lat.get(k) for k in keys}


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
    multiples = sorted({r["channel_multiple"] for r in rows if r.get("channel_multiple")})
    if multiples:
        lines += ["", f"Pruned widths rounded up to multiples of {', '.join(map(str, multiples))} (`--round-to auto`)."]
    for r in rows:
        b = r.get("latency_budget")
        if b:
            lines.append(
                f"{r['arch']} {r['variant']}: latency budget {b['budget_ms']:.3f} ms on {b['runtime']} "
                f"({'met' if b['met'] else 'missed'}: measured {b['measured_ms']:.3f} ms, {b['latency_ratio']:.2f} x "
                f"the unpruned model, predicted {b['predicted_ms']:.3f} ms)."
            )
    return "\n".join(lines) + "\n"
