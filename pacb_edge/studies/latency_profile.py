"""Latency where the model runs: `pacb-edge profile` (a measured latency table) and pruning to a latency budget.

Profiling measures, on the target runtime, how the whole model's latency responds to the width of each prunable
group (NetAdapt's and HALP's look-up tables, measured in the model rather than layer by layer, so fused blocks and
per-operator overhead are in the numbers). Every candidate model is a real structural prune of the user's model,
exported to the target's format; host runtimes (onnxruntime, LiteRT FP32 and INT8) run in this process in one
interleaved measurement, Jetson and Android candidates go through the bench runners.

Pruning to a budget (`prune_to_latency`) chooses the group widths with the table (HALP's knapsack), exports the
pruned model and measures it on the target beside the unpruned one; when it misses the budget, the target is
tightened and the choice repeated (NetAdapt), a bounded number of rounds. A budget counts as met only when the
measurement says so: the mean ratio of two independent measurements, the second one taken only when the first is
within the budget.

This module sits at the top of the data flow: it drives pruning, export and the runners.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.runtimes import HOST_TARGETS, check_target
from pacb_edge.models import builder_default
from pacb_edge.pruning.latency import (
    LatencyTable,
    TableKey,
    choose_widths,
    feature_names,
    group_values,
    relative_error,
    structure_hash,
)


def table_name(target: str) -> str:
    """The file name a run keeps its latency table for `target` under."""
    return f"latency_table_{target}.json"


CALIBRATION_FRACTIONS = (0.75, 0.5, 0.25)
AIM = 0.97  # a round aims at this share of the budget, leaving room for measurement noise
LOW = 0.9  # a measured latency under this share of the budget leaves latency unused: the next round loosens
COPIES = 3  # sessions per model when a pruned model is judged against its budget
# A round that meets its budget is measured once more in fresh sessions, and judged on the mean of both ratios: on a
# 2-core VM, four interleaved measurements of one pruned/unpruned pair gave ratios from 0.687 to 0.768, so a single
# measurement just under the budget is often luck.
CONFIRMATIONS = 1


@dataclass
class LatencyTargetOptions:
    """Where latency is measured and how: the target, its thread count and the timing settings; for Jetson and
    Android the runner's options (as `bench --device` takes them)."""

    target: str = "onnxruntime"
    threads: int | None = None  # default: all cores (host), the runner's own default on a device
    warmup: int = 20
    runs: int = 200
    jetson: dict[str, Any] = field(default_factory=dict)  # JetsonRunner options: host, port, precision, ...
    android: dict[str, Any] = field(default_factory=dict)  # AndroidRunner options: serial, benchmark_binary, ...

    def validate(self) -> None:
        check_target(self.target)
        if self.threads is not None and self.threads < 1:
            raise PacbEdgeError(f"--threads must be at least 1, got {self.threads}")
        if self.warmup < 0 or self.runs < 1:
            raise PacbEdgeError(f"need --warmup >= 0 and --runs >= 1, got {self.warmup} and {self.runs}")
        if self.target == "jetson" and not self.jetson.get("host") and not self.jetson.get("local"):
            raise PacbEdgeError("--target jetson needs --host user@ip (or --local on the Jetson itself)")
        if self.target == "android" and not self.android.get("benchmark_binary"):
            raise PacbEdgeError("--target android needs --benchmark-binary (TFLite's benchmark_model for the phone)")

    @property
    def host_threads(self) -> int:
        import os

        return int(self.threads or os.cpu_count() or 1)

    def precision(self) -> str:
        if self.target == "tflite-int8":
            return "int8"
        if self.target == "jetson":
            return self.jetson.get("precision") or "fp16"
        if self.target == "android":
            return self.android.get("precision") or "fp32"
        return "fp32"

    def multiple_options(self) -> dict[str, str]:
        """What `PruneConfig.target_options` needs to pick the target's channel multiple."""
        if self.target == "jetson":
            return {"precision": self.precision()}
        if self.target == "android":
            return {"precision": self.precision(), "delegate": self.android.get("delegate") or "xnnpack"}
        return {}

    def runtime_version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        package = {"onnxruntime": "onnxruntime", "tflite": "ai-edge-litert", "tflite-int8": "ai-edge-litert"}
        name = package.get(self.target)
        if name is None:
            return "as reported by the device"
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} (not installed)"

    def device(self) -> str:
        if self.target in HOST_TARGETS:
            import os

            from pacb_edge.core.runtimes import host_isa

            return f"{platform.node()} {platform.machine()} {host_isa()} {os.cpu_count()} cores"
        if self.target == "jetson":
            return f"jetson {self.jetson.get('host') or 'local'}"
        return f"android {self.android.get('serial') or 'default device'} {self.android.get('delegate') or 'xnnpack'}"

    def settings(self) -> dict[str, Any]:
        """What the table records about how it was measured (and how a later prune reaches the same device)."""
        out: dict[str, Any] = {"target": self.target, "threads": self.threads, "warmup": self.warmup, "runs": self.runs}
        if self.target == "jetson":
            out["jetson"] = {k: v for k, v in self.jetson.items() if v is not None}
        if self.target == "android":
            out["android"] = {k: str(v) for k, v in self.android.items() if v is not None}
        return out

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> LatencyTargetOptions:
        return cls(
            target=settings.get("target", "onnxruntime"),
            threads=settings.get("threads"),
            warmup=int(settings.get("warmup", 20)),
            runs=int(settings.get("runs", 200)),
            jetson=dict(settings.get("jetson") or {}),
            android=dict(settings.get("android") or {}),
        )


# ---------------------------------------------------------------------------------------------------------------
# Measuring candidate models on a target


@dataclass
class Candidate:
    """A model to measure: a label, its group widths (None for the unpruned model with all its attention), and the
    module itself with its spec."""

    label: str
    widths: list[int] | None
    model: Any
    spec: Any


class Measurer:
    """Exports candidates to the target's format in a private folder and measures their per-image latency.

    `measure` returns the p50 (ms) of each candidate. Host targets run every candidate of one call in a single
    interleaved measurement (A B C A B C ...), so their ratios are free of machine drift; device targets run the
    candidates one after the other through the bench runners."""

    def __init__(self, opts: LatencyTargetOptions, calibration_images: np.ndarray, work_dir: Path) -> None:
        self.opts = opts
        self.calibration = np.asarray(calibration_images, dtype=np.float32)
        self.work = work_dir
        self.exported = 0
        self.export_seconds = 0.0

    def artifact(self, candidate: Candidate, name: str) -> Path:
        """The candidate in the target's format (ONNX, TFLite or a Jetson bundle), written under the work folder."""
        from pacb_edge.export.onnx import deployable, export_onnx

        t0 = time.perf_counter()
        folder = self.work / name
        folder.mkdir(parents=True, exist_ok=True)
        target = self.opts.target
        opset = 17
        if target == "jetson":
            from pacb_edge.export.trt_check import get_profile

            opset = min(opset, get_profile(self.opts.jetson.get("trt")).max_opset)
        onnx_path = export_onnx(deployable(candidate.model), candidate.spec, folder / "model.onnx", opset=opset)
        if target == "onnxruntime":
            path = onnx_path
        elif target in ("tflite", "tflite-int8", "android"):
            from pacb_edge.export.tflite import convert_onnx_to_tflite, pin_input_range

            precision = "int8" if self.opts.precision() == "int8" else "fp32"
            images = pin_input_range(self.calibration, 0.0, 255.0) if precision == "int8" else self.calibration[:1]
            path = convert_onnx_to_tflite(onnx_path, folder, images, precisions=(precision,))[precision]
        else:
            path = self._jetson_bundle(candidate, onnx_path, folder, opset)
        self.exported += 1
        self.export_seconds += time.perf_counter() - t0
        return path

    def _jetson_bundle(self, candidate: Candidate, onnx_path: Path, folder: Path, opset: int) -> Path:
        from pacb_edge.export.tensorrt import write_bundle

        pixels = np.clip(np.round(self.calibration), 0, 255).astype(np.uint8)
        manifest = {
            "format": "trt-bundle",
            "precisions": [self.opts.precision()],
            "spec": candidate.spec.to_dict(),
            "opset": opset,
            "purpose": "latency profile candidate (accuracy not meaningful)",
        }
        labels = np.zeros(len(pixels), dtype=np.int64)
        return write_bundle(folder / "bundle", onnx_path, pixels, pixels, labels, manifest)

    def measure(self, paths: list[Path], copies: int = 1) -> list[dict[str, float]]:
        """Latency statistics (ms: p50, mean, std) of each artifact.

        On the host each artifact can run in `copies` sessions of its own, their samples pooled: one session of a
        model measured up to 10 % slower or faster than another session of the same file, for its whole life."""
        if self.opts.target in HOST_TARGETS:
            return self._measure_host(paths, copies)
        if self.opts.target == "jetson":
            return self._measure_jetson(paths)
        return self._measure_android(paths)

    def _measure_host(self, paths: list[Path], copies: int = 1) -> list[dict[str, float]]:
        from pacb_edge.export.runners import runner_for, time_interleaved

        # Sessions load in a shuffled order: the first one created measured ~3 % slower than a later copy of itself.
        slots = [i for i in range(len(paths)) for _ in range(copies)]
        runners: list[Any] = [None] * len(slots)
        for k in np.random.default_rng(len(slots)).permutation(len(slots)):
            runners[k] = runner_for(paths[slots[k]], self.opts.host_threads).load()
        sample = np.zeros((1, *self.calibration.shape[1:]), dtype=np.float32) + 128.0
        calls = {}
        for i, r in enumerate(runners):
            if hasattr(r, "prepare"):
                prepared = r.prepare(sample)
                calls[i] = lambda r=r, p=prepared: r.run_prepared(p)
            else:
                calls[i] = lambda r=r: r.infer_one(sample)
        try:
            samples = time_interleaved(calls, self.opts.warmup, max(1, self.opts.runs // copies))
        finally:
            for r in runners:
                r.close()
        pooled: list[list[float]] = [[] for _ in paths]
        for k, i in enumerate(slots):
            pooled[i] += samples[k]
        return [_stats(ms) for ms in pooled]

    def _measure_jetson(self, paths: list[Path]) -> list[dict[str, float]]:
        from pacb_edge.device_bench.jetson import JetsonRunner

        options = {k: v for k, v in self.opts.jetson.items() if k not in ("local", "trt")}
        runner = JetsonRunner(
            warmup=self.opts.warmup, runs=self.opts.runs, threads=self.opts.threads, eval_limit=1, **options
        )
        out = []
        for p in paths:
            rec = runner.run(p)
            if rec.status == "failed" or not rec.latency_ms:
                raise PacbEdgeError(f"the Jetson could not measure {p.parent.name}: {rec.error}")
            out.append({k: float(rec.latency_ms[k]) for k in ("p50", "mean", "std")})
        return out

    def _measure_android(self, paths: list[Path]) -> list[dict[str, float]]:
        from pacb_edge.device_bench.android import AndroidRunner

        options = {k: v for k, v in self.opts.android.items() if k not in ("precision", "eval_binary")}
        if self.opts.threads:
            options["threads"] = self.opts.threads
        runner = AndroidRunner(warmup=self.opts.warmup, runs=self.opts.runs, **options)
        out = []
        for p in paths:
            rec = runner.run(p)
            out.append({k: float(rec.latency_ms[k]) for k in ("p50", "mean", "std")})
        return out


def _stats(ms: list[float]) -> dict[str, float]:
    xs = np.asarray(ms, dtype=np.float64)
    return {"p50": float(np.median(xs)), "mean": float(xs.mean()), "std": float(xs.std())}


# ---------------------------------------------------------------------------------------------------------------
# Profiling


@dataclass
class ProfileConfig:
    """What `pacb-edge profile` measures: the pruning setting the table serves and how many widths per group."""

    criterion: str = "bn-scale"
    min_channels: int = 4
    round_to: int | str = "auto"
    models: int | None = None  # random-width models the latency model is fitted on (default: 3 per coefficient)
    held_out: int = 8  # random-width models kept out of the fit to check it
    seed: int = 0

    def validate(self) -> None:
        if self.models is not None and not 4 <= self.models <= 1000:
            raise PacbEdgeError(f"--models must be between 4 and 1000, got {self.models}")
        if not 1 <= self.held_out <= 100:
            raise PacbEdgeError(f"--held-out must be between 1 and 100, got {self.held_out}")


def reference_structure(model, spec, criterion: str):
    """The unpruned model as a prune with `criterion` leaves it structurally (SCA and SGE removed, and the
    attention an attention criterion scores), with its spec: the full-width model of a latency table."""
    from pacb_edge.pruning.pruner import ALWAYS_REMOVED, CRITERIA, remove_attention
    from pacb_edge.training.checkpoint import record_pruned_shapes

    kinds = list(ALWAYS_REMOVED)
    needs = getattr(CRITERIA[criterion], "needs_attention", None)
    if needs is not None:
        kinds.append(needs)
    model = copy.deepcopy(model).cpu().eval()
    removed = remove_attention(model, kinds)
    return model, record_pruned_shapes(model, spec, removed)


def _prune_config(profile: ProfileConfig, opts: LatencyTargetOptions, **kw: Any):
    from pacb_edge.pruning.pruner import PruneConfig

    return PruneConfig(
        criterion="l1-norm",  # which channels go does not change the latency; l1-norm needs no images
        min_channels=profile.min_channels,
        round_to=profile.round_to,
        latency_target=opts.target,
        target_options=opts.multiple_options(),
        seed=profile.seed,
        **kw,
    )


def table_key(model, spec, analysis, opts: LatencyTargetOptions) -> TableKey:
    arch = f"{spec.arch} {spec.attention or 'none'} x{spec.width_mult:g}"
    groups = [(g.root, g.channels) for g in analysis.groups]
    kwargs = {**spec.model_kwargs(), "removed": sorted(spec.removed), "layers": spec.layers}
    # The stem the model was built with: a spec that leaves it to the architecture is the same model as one that
    # names the architecture's default.
    stem = kwargs.get("input_stem") or builder_default(spec.arch, "input_stem")
    if stem is not None:
        kwargs["input_stem"] = stem
    return TableKey(
        runtime=opts.target,
        runtime_version=opts.runtime_version(),
        device=opts.device(),
        arch=arch,
        structure=structure_hash(kwargs, spec.input_size, groups),
        input_size=int(spec.input_size),
        precision=opts.precision(),
        threads=opts.host_threads if opts.target in HOST_TARGETS else int(opts.threads or 0),
        multiple=int(analysis.multiple),
    )


def expected_key(model, spec, profile: ProfileConfig, opts: LatencyTargetOptions) -> TableKey:
    """The key a table for this model, pruning setting and target must have (no measuring)."""
    from pacb_edge.pruning.pruner import analyze

    ref_model, ref_spec = reference_structure(model, spec, profile.criterion)
    return table_key(ref_model, ref_spec, analyze(ref_model, ref_spec, _prune_config(profile, opts)), opts)


def _nearest(options: list[int], width: float) -> int:
    return min(options, key=lambda w: (abs(w - width), w))


def _plan(options: list[list[int]], full: list[int], fit_models: int, held_out: int, seed: int):
    """The models a profile measures: the reference twice, uniform cuts, the floor, random widths to fit on and
    random widths held out of the fit."""
    plan: list[tuple[str, list[int]]] = [("reference", full), ("reference 2", full)]
    for f in CALIBRATION_FRACTIONS:
        plan.append((f"uniform {f:g}", [_nearest(opt, f * n) for opt, n in zip(options, full, strict=True)]))
    plan.append(("floor", [opt[0] for opt in options]))
    rng = np.random.default_rng(seed)
    for k in range(fit_models + held_out):
        # Each group keeps a random share of its channels, the shares drawn around a random overall level, so the
        # fit sees mild and deep cuts and groups cut unevenly.
        level = rng.uniform(0.15, 1.0)
        widths = [
            _nearest(opt, np.clip(rng.normal(level, 0.25), 0, 1) * n) for opt, n in zip(options, full, strict=True)
        ]
        plan.append((f"random {k + 1}" if k < fit_models else f"held out {k + 1 - fit_models}", widths))
    return plan


def profile_latency(
    model,
    spec,
    calibration_images: np.ndarray,
    profile: ProfileConfig,
    opts: LatencyTargetOptions,
    log: Callable[[str], None] = lambda _: None,
    command: str = "",
) -> LatencyTable:
    """Measure `model`'s latency table on the target (see `pacb_edge.pruning.latency`). Nothing is written: the caller
    saves the table."""
    from pacb_edge.pruning.pruner import analyze, prune_model

    profile.validate()
    opts.validate()
    t_start = time.perf_counter()
    ref_model, ref_spec = reference_structure(model, spec, profile.criterion)
    analysis = analyze(ref_model, ref_spec, _prune_config(profile, opts))
    if not analysis.groups:
        raise PacbEdgeError(f"{spec.arch} has no prunable channel groups to profile")
    options = [analysis.width_options(i) for i in range(len(analysis.groups))]
    full = analysis.full_widths()
    table = LatencyTable(
        key=table_key(ref_model, ref_spec, analysis, opts),
        reference_ms=0.0,
        unpruned_ms=0.0,
        floor_ms=0.0,
        group_roots=[g.root for g in analysis.groups],
        group_channels=full,
        min_widths=[opt[0] for opt in options],
        layers=analysis.layers,
    )
    table.feature_names = feature_names(analysis.layers)
    fit_models = profile.models or max(24, 3 * len(table.feature_names))
    plan = _plan(options, full, fit_models, profile.held_out, profile.seed)

    def build(label: str, widths: list[int]) -> Candidate:
        if widths == full:
            return Candidate(label, widths, ref_model, ref_spec)
        groups = {g.root: w for g, w in zip(analysis.groups, widths, strict=True)}
        pruned, pruned_spec, _ = prune_model(ref_model, ref_spec, _prune_config(profile, opts, group_widths=groups))
        return Candidate(label, widths, pruned, pruned_spec)

    candidates = [Candidate("unpruned", None, model, spec)] if ref_spec.removed != spec.removed else []
    candidates += [build(label, widths) for label, widths in plan]
    log(f"{len(candidates)} candidate models of {spec.arch} for {opts.target} ({len(analysis.groups)} groups)")
    with tempfile.TemporaryDirectory(prefix="pacb_profile_") as tmp:
        measurer = Measurer(opts, calibration_images, Path(tmp))
        paths = []
        for k, c in enumerate(candidates):
            paths.append(measurer.artifact(c, f"c{k:03d}"))
            if (k + 1) % 10 == 0 or k + 1 == len(candidates):
                log(f"exported {k + 1}/{len(candidates)} candidates ({measurer.export_seconds:.0f} s)")
        log(f"measuring {len(paths)} candidates on {opts.target} ({opts.runs} runs each, interleaved)")
        t_measure = time.perf_counter()
        stats = measurer.measure(paths)
        measure_seconds = time.perf_counter() - t_measure
    by_label = {c.label: s for c, s in zip(candidates, stats, strict=True)}
    table.reference_ms = (by_label["reference"]["p50"] + by_label["reference 2"]["p50"]) / 2
    table.unpruned_ms = by_label.get("unpruned", {"p50": table.reference_ms})["p50"]
    table.floor_ms = by_label["floor"]["p50"]
    fitted = [(label, w) for label, w in plan if not label.startswith("held out")]
    table.fit([(w, by_label[label]["p50"]) for label, w in fitted])
    table.samples = [
        {"label": label, "widths": w, "measured_ms": by_label[label]["p50"], "predicted_ms": table.predict(w)}
        for label, w in plan
    ]
    held = [s for s in table.samples if s["label"].startswith("held out")]
    errors = [relative_error(s["predicted_ms"], s["measured_ms"]) for s in held]
    fit_errors = [relative_error(s["predicted_ms"], s["measured_ms"]) for s in table.samples if s not in held]
    table.validation = {
        "held_out_models": len(held),
        "mean_abs_error": float(np.mean(np.abs(errors))) if errors else None,
        "max_abs_error": float(np.max(np.abs(errors))) if errors else None,
        "errors": errors,
        "fit_mean_abs_error": float(np.mean(np.abs(fit_errors))),
        "noise": relative_error(by_label["reference 2"]["p50"], by_label["reference"]["p50"]),
    }
    table.target = opts.settings()
    table.meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S%z"),
        "command": command,
        "criterion": profile.criterion,
        "min_channels": profile.min_channels,
        "round_to": profile.round_to,
        "alignment": analysis.alignment,
        "macs_full": analysis.macs(),
        "macs_floor": analysis.macs(table.min_widths),
        "candidates": [{"label": c.label, "widths": c.widths, **s} for c, s in zip(candidates, stats, strict=True)],
        "export_seconds": round(measurer.export_seconds, 1),
        "measure_seconds": round(measure_seconds, 1),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    return table


# ---------------------------------------------------------------------------------------------------------------
# Finding or making the table for a prune


def table_for(
    model,
    spec,
    calibration_images: np.ndarray,
    profile: ProfileConfig,
    opts: LatencyTargetOptions,
    table_path: Path,
    explicit: bool = False,
    log: Callable[[str], None] = lambda _: None,
    command: str = "",
) -> tuple[LatencyTable, bool]:
    """The latency table a prune uses: `table_path`'s when every key matches this model and target, else a new
    profile (not yet saved). Returns (table, whether it was newly measured). A table the user named (`explicit`)
    that does not match is an error saying which keys differ; the run's own is measured again."""
    want = expected_key(model, spec, profile, opts)
    if Path(table_path).is_file():
        table = LatencyTable.load(table_path)
        differ = table.key.mismatches(want)
        if not differ:
            log(f"reusing the latency table {table_path} (every key matches)")
            return table, False
        if explicit:
            raise PacbEdgeError(
                f"latency table {table_path} is for another setting ({'; '.join(differ[:3])}); profile again"
            )
        log(f"the latency table {table_path} is for another setting ({differ[0]}): profiling again")
    return profile_latency(model, spec, calibration_images, profile, opts, log=log, command=command), True


# ---------------------------------------------------------------------------------------------------------------
# Pruning to a latency budget


@dataclass
class LatencyBudget:
    """A latency budget: absolute (`budget_ms`) or relative to the unpruned model on the same runtime (`ratio`)."""

    budget_ms: float | None = None
    ratio: float | None = None
    rounds: int = 4

    def validate(self) -> None:
        if (self.budget_ms is None) == (self.ratio is None):
            raise PacbEdgeError("give one of --latency-budget MS or --latency-ratio R")
        if self.budget_ms is not None and not (self.budget_ms > 0 and math.isfinite(self.budget_ms)):
            raise PacbEdgeError(f"--latency-budget must be a positive number of milliseconds, got {self.budget_ms}")
        if self.ratio is not None and not 0 < self.ratio < 1:
            raise PacbEdgeError(f"--latency-ratio must be in (0, 1), got {self.ratio}")
        if not 1 <= self.rounds <= 20:
            raise PacbEdgeError(f"latency rounds must be between 1 and 20, got {self.rounds}")

    def describe(self) -> str:
        return f"{self.budget_ms:g} ms" if self.budget_ms is not None else f"{self.ratio:g} x the unpruned latency"


def check_floor(table: LatencyTable, budget: LatencyBudget) -> None:
    """Refuse a budget under what the smallest allowed model measured: one line with that floor."""
    unpruned = table.unpruned_ms
    floor_ratio = table.floor_ms / unpruned
    where = f"on {table.key.runtime} ({table.key.threads} thread{'s' if table.key.threads != 1 else ''})"
    if budget.budget_ms is not None and budget.budget_ms < table.floor_ms:
        raise PacbEdgeError(
            f"--latency-budget {budget.budget_ms:g} ms is under the floor: the smallest allowed model (every group at "
            f"its minimum width) measured {table.floor_ms:.3f} ms {where}; ask for at least that, or lower "
            "--min-channels"
        )
    if budget.ratio is not None and budget.ratio < floor_ratio:
        raise PacbEdgeError(
            f"--latency-ratio {budget.ratio:g} is under the floor: the smallest allowed model measured "
            f"{floor_ratio:.3f} x the unpruned latency {where}; ask for at least that, or lower --min-channels"
        )


def _budget_ratio(budget: LatencyBudget, unpruned_ms: float) -> float:
    return budget.ratio if budget.ratio is not None else budget.budget_ms / unpruned_ms


def _mean_p50(measurements: list[list[dict[str, float]]], index: int) -> float:
    return float(np.mean([m[index]["p50"] for m in measurements]))


def _mean_ratio(measurements: list[list[dict[str, float]]]) -> float:
    """The mean over independent measurements of the pruned model's p50 over the unpruned one's."""
    return float(np.mean([m[1]["p50"] / m[0]["p50"] for m in measurements]))


def prune_to_latency(
    model,
    spec,
    cfg,
    budget: LatencyBudget,
    table: LatencyTable,
    opts: LatencyTargetOptions,
    calibration_images: np.ndarray,
    score_images: np.ndarray | None = None,
    log: Callable[[str], None] = lambda _: None,
):
    """Prune `model` with `cfg`'s criterion to the widths that keep the most score within the budget, measured.

    Returns (pruned model, its spec, report). The report has the pruning report's fields plus `latency`: the budget,
    the table used, and every round (widths, predicted and measured latency, whether it met the budget), the round
    kept, and `met` (true only when a measurement was within the budget)."""
    from pacb_edge.pruning.pruner import analyze, prune_model

    budget.validate()
    check_floor(table, budget)
    cfg = dataclasses.replace(cfg, latency_target=opts.target, target_options=opts.multiple_options())
    analysis = analyze(model, spec, cfg, score_images)
    roots = [g.root for g in analysis.groups]
    if roots != table.group_roots:
        raise PacbEdgeError("the latency table's groups are not this model's: profile this model again")
    options = [analysis.width_options(i) for i in range(len(roots))]
    values = group_values([g.scores.numpy() for g in analysis.groups], options, normalize=analysis.scope == "layer")
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pacb_budget_") as tmp:
        measurer = Measurer(opts, calibration_images, Path(tmp))
        unpruned = measurer.artifact(Candidate("unpruned", None, model, spec), "unpruned")
        # Everything is judged as a ratio to the unpruned model measured in the same interleaved run: on a shared
        # machine the absolute speed drifts between runs far more than the ratio does.
        unpruned_ms = table.unpruned_ms
        target = AIM * _budget_ratio(budget, unpruned_ms)
        for k in range(budget.rounds):
            widths = choose_widths(table, values, options, target * table.unpruned_ms)
            if widths is None:
                widths = list(table.min_widths)
            group_widths = dict(zip(roots, widths, strict=True))
            pruned, pruned_spec, report = prune_model(
                model, spec, dataclasses.replace(cfg, group_widths=group_widths), score_images
            )
            path = measurer.artifact(Candidate(f"round {k + 1}", widths, pruned, pruned_spec), f"round{k + 1}")
            measurements = [measurer.measure([unpruned, path], COPIES)]
            while len(measurements) <= CONFIRMATIONS and _mean_ratio(measurements) <= _budget_ratio(
                budget, _mean_p50(measurements, 0)
            ):
                measurements.append(measurer.measure([unpruned, path], COPIES))
            unpruned_ms, measured = _mean_p50(measurements, 0), _mean_p50(measurements, 1)
            budget_ratio = _budget_ratio(budget, unpruned_ms)
            measured_ratio = _mean_ratio(measurements)
            predicted_ratio = table.predict(widths) / table.unpruned_ms
            met = measured_ratio <= budget_ratio
            stats = measurements[-1]
            rounds.append(
                {
                    "round": k + 1,
                    "widths": group_widths,
                    "aim_ratio": target,
                    "budget_ms": budget_ratio * unpruned_ms,
                    "unpruned_ms": unpruned_ms,
                    "predicted_ms": predicted_ratio * unpruned_ms,
                    "measured_ms": measured,
                    "measured_std_ms": stats[1]["std"],
                    "measured_ratios": [m[1]["p50"] / m[0]["p50"] for m in measurements],
                    "predicted_over_measured": predicted_ratio / measured_ratio,
                    "measured_over_budget": measured_ratio / budget_ratio,
                    "latency_ratio": measured_ratio,
                    "macs_ratio": analysis.macs(widths) / analysis.macs(),
                    "score_kept": float(sum(v[o.index(w)] for v, o, w in zip(values, options, widths, strict=True))),
                    "met": met,
                    "_result": (pruned, pruned_spec, report),
                }
            )
            log(
                f"round {k + 1}: {measured_ratio:.3f} x the unpruned latency measured ({measured:.3f} ms), "
                f"{predicted_ratio:.3f} predicted, budget {budget_ratio:.3f} x: {'met' if met else 'missed'}"
            )
            if met and measured_ratio >= LOW * budget_ratio:
                break
            target *= AIM * budget_ratio / measured_ratio
    feasible = [r for r in rounds if r["met"]]
    kept = max(feasible, key=lambda r: r["score_kept"]) if feasible else min(rounds, key=lambda r: r["latency_ratio"])
    pruned, pruned_spec, report = kept["_result"]
    for r in rounds:
        del r["_result"]
    report["latency"] = {
        "budget": dataclasses.asdict(budget),
        "target": opts.settings(),
        "runtime": table.key.runtime,
        "runtime_version": table.key.runtime_version,
        "device": table.key.device,
        "threads": table.key.threads,
        "precision": table.key.precision,
        "multiple": table.key.multiple,
        "table": {"key": table.key.to_dict(), "date": table.meta.get("date"), "validation": table.validation},
        "rounds": rounds,
        "kept_round": kept["round"],
        "met": bool(kept["met"]),
        "budget_ms": kept["budget_ms"],
        "predicted_ms": kept["predicted_ms"],
        "measured_ms": kept["measured_ms"],
        "predicted_over_measured": kept["predicted_over_measured"],
        "measured_over_budget": kept["measured_over_budget"],
        "unpruned_ms": kept["unpruned_ms"],
        "latency_ratio": kept["latency_ratio"],
        "macs_ratio": kept["macs_ratio"],
        "widths": kept["widths"],
        "floor_ms": table.floor_ms,
    }
    return pruned, pruned_spec, report


def write_profile(table: LatencyTable, path: Path) -> dict[str, Path]:
    """The table as JSON at `path`, with a CSV of every measured model and a PNG of predicted against measured
    latency beside it."""
    import csv
    import io

    from pacb_edge.core.fileio import atomic_write_text
    from pacb_edge.core.plots import plot_latency_fit

    path = Path(path)
    table.save(path)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["label", "measured_ms", "predicted_ms", "error", *table.group_roots])
    for s in table.samples:
        error = relative_error(s["predicted_ms"], s["measured_ms"])
        writer.writerow(
            [s["label"], f"{s['measured_ms']:.5f}", f"{s['predicted_ms']:.5f}", f"{error:.4f}", *s["widths"]]
        )
    csv_path = atomic_write_text(path.with_suffix(".csv"), buf.getvalue())
    key = table.key
    title = f"{key.arch} {key.input_size}px on {key.runtime} ({key.threads} thr)"
    png = plot_latency_fit(table.samples, path.with_suffix(".png"), title)
    return {"json": path, "csv": csv_path, "png": png}


def group_rows(table: LatencyTable) -> list[list[str]]:
    """Per group: root, width, smallest width, and the predicted change of the whole model when only that group is
    cut to half and to its smallest width (the look-up table HALP measures)."""
    rows = []
    for i, (root, n) in enumerate(zip(table.group_roots, table.group_channels, strict=True)):
        lo = table.min_widths[i]
        half = max(lo, min(n, int(round(n / 2 / key_multiple(table))) * key_multiple(table)))
        d_half, d_min = table.group_response(i, [half, lo])
        rows.append([root, str(n), str(lo), f"{d_half:+.4f} (at {half})", f"{d_min:+.4f}"])
    return rows


def key_multiple(table: LatencyTable) -> int:
    return max(1, int(table.key.multiple))
