"""`pacb-edge reproduce`: rerun a paper's experiment grid and lay our numbers next to the paper's, table by table.

- `pacb`: Tables 2-4 of PACB (Chung 2025): Base, Base+CA and Base+CA+Pruned of MobileNetV3-Large and RepVGG-A0, with
  accuracy, params, FLOPs (= MACs, as the paper counts them) and our per-image latency on the host CPU (ONNX Runtime
  FP32 and TFLite INT8, benched in one interleaved run) next to the paper's Table 4, and each latency's ratio to the
  CA model's next to the MACs ratio.
- `cpsca`: Tables 4-5 of CPSCA (Liu, Fang et al.): L1-norm, Network Slimming, CPSE and CPSCA at each pruning ratio.

The pieces: `paper_numbers` (the published numbers), `reproduce_grids` (budgets, schedules and grids),
`reproduce_tables` (the tables), and `cells` (the one experiment engine the demo uses too).

Budgets: `paper` is the papers' schedule (160 + 160 epochs, for a GPU); `cpu` is sized for a 2-core CPU (a training
subset, a width multiplier, fewer epochs; see `reproduce_grids`); `--quick` is a smoke run of a few minutes.

Ratios: our `prune_ratio` is the project's one meaning, the global fraction of prunable channels removed. The papers'
rows are labelled by the fraction of *parameters* removed; the table shows our measured params-pruned % next to the
paper's, and each of our ratios is compared with the paper's level nearest to it in params pruned. The default CPSCA
ratios are derived from the paper's levels with r = 1 - sqrt(1 - p) (conv params scale with the square of the width).

Resume: every cell is a run directory keyed by its full configuration (`cells.cell_key`); a finished cell is read
back, never recomputed, and a changed configuration recomputes only the cells it changes. Exports and bench results
are cached per stage directory in the same way.

This module sits at the top of the data flow and imports training, export and the bench runners inside its
functions. It prints nothing: `run_reproduce` returns the tables; the CLI prints them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_json, atomic_write_text, ensure_dir
from pacb_edge.core.parallel import in_parallel, job_count, thread_plan
from pacb_edge.studies.cells import CellRunner, stable_key
from pacb_edge.studies.grids import (
    GRIDS,
    ReproduceConfig,
    Schedule,
    default_cpsca_ratios,
    grid_archs,
)
from pacb_edge.studies.paper_numbers import (
    CPSCA_METHODS,
    CPSCA_PAPER,
    PACB_LATENCY_MS,
    PACB_PAPER,
    PAPER_TITLES,
    paper_dataset,
    paper_numbers,
)
from pacb_edge.studies.tables import Table, cpsca_tables, pacb_tables, tables_markdown

__all__ = [
    "CPSCA_METHODS",
    "CPSCA_PAPER",
    "PACB_LATENCY_MS",
    "PACB_PAPER",
    "ReproduceConfig",
    "Schedule",
    "default_cpsca_ratios",
    "run_reproduce",
]

RESULT_NAME = "reproduce"  # reproduce.json and reproduce.md in the output folder
ORDERING_NOTE = (
    "Budget cpu: every pruned row prunes the same VGG16-SCA model (trained with Slimming's lambda), and SCA is removed "
    "from every pruned model, so only the channel choice differs between the rows. Random is a control the paper does "
    "not have; CPSE is left out."
)


# ----------------------------------------------------------------------------------------------------------------------
# Export and bench, cached per stage directory

BENCH_CACHE = "reproduce_bench.json"
# Artifact kind -> (export folder in the stage directory, the file (or folder) expected, export targets and options).
ARTIFACTS: dict[str, tuple[str, str, list[str], dict[str, Any]]] = {
    "onnx": ("export", "model.onnx", ["onnx"], {}),
    "tflite-int8": ("export_int8", "model_int8.tflite", ["tflite"], {"precision": "int8", "allow_drop": True}),
    "trt-bundle": ("export_jetson", "jetson_bundle", ["trt"], {}),
}


def _artifact(cfg: ReproduceConfig, sched: Schedule, stage_dir: Path, kind: str) -> str:
    """The deployable file of `kind` for a stage (exported once, then reused): ONNX or an INT8 .tflite, or a Jetson
    bundle (TensorRT is built on the device)."""
    from pacb_edge.export.api import REPORT_NAME

    sub, name, targets, options = ARTIFACTS[kind]
    out = stage_dir / sub
    if (out / REPORT_NAME).is_file():
        found = _pick_artifact(json.loads((out / REPORT_NAME).read_text()), kind, out / name)
        if found and Path(found).exists():
            return found
    from pacb_edge.export import api

    report = api.export_checkpoint(
        stage_dir,
        targets,
        out_dir=out,
        data_dir=cfg.data_dir,
        eval_limit=sched.limit,
        calibration_images=sched.calibration_images,
        **options,
    )
    found = _pick_artifact(report, kind, out / name)
    if not found:
        raise PacbEdgeError(f"export of {stage_dir} to {kind} produced no artifact")
    return found


def _pick_artifact(report: dict[str, Any], kind: str, expected: Path) -> str | None:
    """The artifact of `kind` in an export report, located in the report's folder (so a moved results folder still
    finds its own files)."""
    if kind == "trt-bundle":  # the bundle folder, whether or not an engine was also built here
        return str(expected) if expected.is_dir() else None
    want = ("onnx", "fp32") if kind == "onnx" else ("tflite", "int8")
    for a in report.get("artifacts", []):
        if (a.get("format"), a.get("precision")) == want:
            try:
                return str(expected.parent / Path(a["path"]).relative_to(report["out_dir"]))
            except (KeyError, ValueError):
                return a["path"]
    return None


def _read_bench_cache(stage_dir: Path) -> dict[str, Any]:
    path = stage_dir / BENCH_CACHE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def bench_stages(
    cfg: ReproduceConfig, sched: Schedule, out: Path, stage_dirs: list[Path], log: Callable[[str], None]
) -> dict[str, dict[Path, dict[str, Any]]]:
    """Per-image latency and accuracy of each stage's artifacts: {record field: {stage dir: bench result}}.

    Results are cached in each stage directory; the ones not cached are exported and measured in one interleaved
    bench run per device (so ONNX and INT8 on the host CPU are timed side by side). Failed measurements are returned
    but not cached, so a rerun tries them again.
    """
    from pacb_edge.device_bench import bench

    results: dict[str, dict[Path, dict[str, Any]]] = {}
    todo: dict[str, dict[str, tuple[str, Path, str]]] = {}  # device -> artifact -> (record field, stage dir, key)
    for where, (device, kind) in cfg.measurements().items():
        opts = {"cpu": {"threads": cfg.threads}, "jetson": cfg.jetson, "android": cfg.android}[device]
        opts = {**opts, "limit": sched.limit}
        key = stable_key(
            {"device": device, "artifact": kind, "runs": sched.bench_runs, "warmup": sched.bench_warmup, **opts}
        )
        results[where] = {}
        for d in stage_dirs:
            cached = _read_bench_cache(d).get(where)
            if cached and cached.get("key") == key:
                results[where][d] = cached["result"]
            else:
                log(f"export {d.relative_to(out)} to {kind} (or reuse its export)")
                todo.setdefault(device, {})[_artifact(cfg, sched, d, kind)] = (where, d, key)
    for device, items in todo.items():
        log(f"bench {len(items)} artifact(s) on {device}")
        opts = bench.BenchOptions(
            device=device,
            threads=cfg.threads,
            warmup=sched.bench_warmup,
            runs=sched.bench_runs,
            eval_limit=sched.limit,
            data_dir=cfg.data_dir,
            out_dir=out / "bench",
            jetson=dict(cfg.jetson),
            android=dict(cfg.android),
        )
        for rec in bench.run_bench(list(items), opts):
            where, d, key = items[rec.artifact]
            results[where][d] = rec.to_dict()
            if rec.status != "failed":
                cache = _read_bench_cache(d)
                cache[where] = {"key": key, "result": rec.to_dict()}
                atomic_write_json(d / BENCH_CACHE, cache)
    return results


def _bench_fields(result: dict[str, Any] | None) -> dict[str, Any]:
    if not result:
        return {"per_image_ms": None, "top1": None, "status": "missing", "error": None}
    keep = ("per_image_ms", "top1", "accuracy_source", "status", "error", "runner", "artifact")
    return {k: result.get(k) for k in keep}


def _ratios_vs_ca(records: list[dict[str, Any]]) -> None:
    """PACB: each record's MACs and latencies over its own seed's CA model's (per seed, then averaged)."""
    ca = {(r["arch"], r["seed"]): r for r in records if r["variant"] == "CA"}
    for r in records:
        ref = ca[(r["arch"], r["seed"])]
        r["macs_ratio_vs_ca"] = r["macs"] / ref["macs"]
        for where in ("host", "host_int8"):
            ms, ref_ms = r[where]["per_image_ms"], ref[where]["per_image_ms"]
            r[f"{where}_ratio_vs_ca"] = ms / ref_ms if ms and ref_ms else None


# ----------------------------------------------------------------------------------------------------------------------
# The job


def _grid_part(
    cfg: ReproduceConfig,
    sched: Schedule,
    seed: int,
    arch: str,
    threads: int,
    log: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One architecture's grid for one seed (in a worker process when jobs run side by side), then its host-CPU
    exports, so that they too run side by side: (records, cell counts)."""
    from pacb_edge.studies.pipeline import pin_threads

    pin_threads(threads)
    command = f"pacb-edge reproduce {cfg.paper}"
    runner = CellRunner(cfg.out_dir(), command, progress=cfg.progress and log is not None, threads=threads)
    if log is not None:
        runner.log = log
    records = GRIDS[cfg.paper](dataclasses.replace(cfg, archs=(arch,)), sched, runner, seed)
    for d in dict.fromkeys(Path(r["stage_dir"]) for r in records):
        for device, kind in cfg.measurements().values():
            if device == "cpu" and kind in ARTIFACTS and not _read_bench_cache(d):
                _artifact(cfg, sched, d, kind)
    counts = {
        "cells_computed": runner.computed,
        "cells_cached": runner.cached,
        "cell_wall_s": sum(
            float(s.get("wall_seconds", 0.0))
            for c in {c.dir: c for c in runner.cells}.values()
            for s in c.metrics.get("stages", {}).values()
        ),
    }
    return records, counts


def _run_grid(
    cfg: ReproduceConfig, sched: Schedule, seeds: list[int], log: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every seed of the grid, one part (architecture, seed) per job; records in seed order, then the grid's order.

    Each part trains on `threads // jobs` torch threads (the cells' numbers depend on it, so the same command gives
    the same numbers); the longest architecture's parts go first so that the workers finish together."""
    from pacb_edge.studies.pipeline import pin_threads

    threads = pin_threads(cfg.threads)
    parts = [(seed, arch) for arch in grid_archs(cfg) for seed in seeds]
    jobs = job_count(cfg.jobs or threads, len(parts))
    job_threads, plan = thread_plan(jobs, threads)
    log(f"{len(parts)} grid part(s) (architecture x seed): {plan}")
    done: dict[int, tuple[list[dict[str, Any]], dict[str, float]]] = {}

    def finished(i: int, result: tuple[list[dict[str, Any]], dict[str, float]]) -> None:
        done[i] = result
        if jobs > 1:
            seed, arch = parts[i]
            log(f"seed {seed} {arch}: done ({result[1]['cells_computed']} cell(s) computed)")

    calls = [(_grid_part, (cfg, sched, seed, arch, job_threads, log if jobs == 1 else None)) for seed, arch in parts]
    in_parallel(jobs, calls, finished)
    order = sorted(range(len(parts)), key=lambda i: (parts[i][0], grid_archs(cfg).index(parts[i][1])))
    records = [r for i in order for r in done[i][0]]
    counts = {k: sum(done[i][1][k] for i in done) for k in ("cells_computed", "cells_cached", "cell_wall_s")}
    return records, counts


def run_reproduce(cfg: ReproduceConfig, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run (or resume) a paper's grid for every seed, bench every model, and write `reproduce.{json,md}` in the
    output folder. Returns the result: config, schedule, per-seed records, the tables and the files written."""
    cfg.validate()
    sched = cfg.schedule()
    out = ensure_dir(cfg.out_dir())
    seeds = list(range(sched.seeds))
    t0 = time.perf_counter()
    records, counts = _run_grid(cfg, sched, seeds, log)
    t_train = time.perf_counter() - t0
    stage_dirs = list(dict.fromkeys(Path(r["stage_dir"]) for r in records))
    measured = bench_stages(cfg, sched, out, stage_dirs, log)
    for r in records:
        for where, by_dir in measured.items():
            r[where] = _bench_fields(by_dir.get(Path(r["stage_dir"])))
    caption = sched.caption(len(seeds)) + (" (--quick: smoke-sized, not comparable to the paper)" if cfg.quick else "")
    tables: list[Table]
    if cfg.paper == "pacb":
        _ratios_vs_ca(records)
        tables = pacb_tables(records, cfg.dataset, cfg.device, caption=caption)
    else:
        defaults = cfg.ratios is None and not cfg.quick and cfg.budget == "paper"
        extra = (ORDERING_NOTE,) if cfg.budget == "cpu" else ()
        tables = cpsca_tables(records, cfg.dataset, cfg.device, defaults, caption=caption, extra_notes=extra)
    failures = [
        f"{r['row']} seed {r['seed']} on {where}: {r[where]['error'] or r[where]['status']}"
        for r in records
        for where in measured
        if r[where]["status"] not in ("ok", "low_accuracy")
    ]
    host = "ONNX Runtime FP32 and TFLite INT8" if cfg.paper == "pacb" else "ONNX Runtime"
    preamble = [
        f"paper: {PAPER_TITLES[cfg.paper]}",
        f"dataset: {cfg.dataset}; seeds: {', '.join(map(str, seeds))}"
        + ("; values are mean ± sample std over the seeds" if len(seeds) > 1 else ""),
        f"settings: {caption}",
        f"latency: host CPU ({host}){'' if cfg.device == 'cpu' else f' and {cfg.device}'}, batch 1, "
        f"p50 of {sched.bench_runs} runs after {sched.bench_warmup} warm-up",
    ] + [f"measurement failed: {f}" for f in failures]
    timings = {
        "grid_s": t_train,
        "total_s": time.perf_counter() - t0,
        **counts,
    }
    paths = {"json": str(out / f"{RESULT_NAME}.json"), "md": str(out / f"{RESULT_NAME}.md")}
    result = {
        "paper": cfg.paper,
        "title": PAPER_TITLES[cfg.paper],
        "dataset": cfg.dataset,
        "paper_dataset": paper_dataset(cfg.paper, cfg.dataset),
        "budget": cfg.budget,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
        "schedule": dataclasses.asdict(sched),
        "seeds": seeds,
        "preamble": preamble,
        "records": records,
        "tables": [t.to_dict() for t in tables],
        "paper_numbers": paper_numbers(cfg.paper),
        "failures": failures,
        "timings": timings,
        "files": paths,
    }
    result = json.loads(json.dumps(result, default=str))  # what the JSON file holds (tuples become lists)
    atomic_write_json(paths["json"], result)
    atomic_write_text(paths["md"], tables_markdown(f"Reproduction of {PAPER_TITLES[cfg.paper]}", tables, preamble))
    return result
