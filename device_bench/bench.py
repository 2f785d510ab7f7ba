"""`pacb-edge bench`: one result record per artifact, on the host CPU, a Jetson or an Android phone.

Per-image latency (batch 1, warm-up then timed runs) sits next to top-1 accuracy measured with that very artifact on
the test set named in its manifest. Results go to JSON and CSV, and a Pareto plot of accuracy vs latency to PNG.
A failing artifact gets a failed record; the others still run and are written.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_json, atomic_write_text, ensure_dir
from pacb_edge.device_bench.record import (
    ACCURACY_DEVICE,
    ACCURACY_HOST,
    STATUS_FAILED,
    STATUS_LOW_ACCURACY,
    STATUS_OK,
    BenchResult,
    latency_stats,
)
from pacb_edge.export.runners import runner_for, time_interleaved

DEVICES = ("cpu", "jetson", "android")


@dataclass
class BenchOptions:
    device: str = "cpu"
    baseline: str | None = None
    threads: int | None = None
    warmup: int = 20
    runs: int = 100
    min_time: float = 0.0
    min_accuracy: float = 0.0
    eval_limit: int | None = None
    data_dir: str | None = None
    dataset: str | None = None
    out_dir: Path = Path("bench")
    jetson: dict[str, Any] = field(default_factory=dict)
    android: dict[str, Any] = field(default_factory=dict)


def artifact_spec(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(spec dict, manifest dict) of an artifact: a checkpoint, an exported file with a manifest, or a Jetson bundle."""
    p = Path(path)
    if not p.exists():
        raise PacbEdgeError(f"artifact {p} does not exist")
    from pacb_edge.export.tensorrt import BUNDLE_MANIFEST, read_bundle_manifest

    if p.is_dir() and (p / BUNDLE_MANIFEST).is_file():
        manifest = read_bundle_manifest(p)
        return manifest.get("spec", {}), manifest
    if p.is_dir() or p.suffix == ".safetensors":
        from pacb_edge.training.checkpoint import read_spec

        spec = read_spec(p).to_dict()
        return spec, {"format": "torch", "spec": spec}
    from pacb_edge.export.manifest import read_manifest

    manifest = read_manifest(p)
    return manifest.get("spec", {}), manifest


def takes_raw_pixels(manifest: dict[str, Any]) -> bool:
    """Whether an artifact normalizes its input itself (every export since raw-pixel inputs; checkpoints here)."""
    if manifest.get("format") == "torch":
        return True
    return (manifest.get("input") or {}).get("normalization") == "in-model"


def _test_arrays(
    spec: dict[str, Any], opts: BenchOptions, cache: dict, manifest: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The test images of the split the artifact was trained with: uint8 raw pixels for artifacts that normalize
    their input themselves, normalized float32 for older exports; and the labels."""
    from pacb_edge.data.datasets import rebuild_dataset

    name = spec.get("dataset")
    if not name:
        raise PacbEdgeError("the artifact's manifest names no dataset; cannot measure accuracy")
    if opts.dataset and opts.dataset != name:
        raise PacbEdgeError(f"dataset mismatch: --dataset {opts.dataset} but the artifact was trained on {name}")
    raw = takes_raw_pixels(manifest or {})
    split = spec.get("split") or {}
    key = (name, spec["input_size"], spec["in_chans"], split.get("test_sha256"), split.get("seed"), raw)
    if key not in cache:
        bundle = rebuild_dataset(spec, data_dir=opts.data_dir)
        cache[key] = bundle.arrays("test", limit=opts.eval_limit, raw=raw)  # channels checked by rebuild_dataset
    return cache[key]


def _counts(spec: dict[str, Any], manifest: dict[str, Any]) -> dict[str, int | None]:
    facts = manifest.get("model", {})
    if "params" in facts:
        return {k: facts.get(k) for k in ("params", "macs", "flops")}
    try:
        from pacb_edge.models import ModelSpec, count_flops, count_params
        from pacb_edge.training.checkpoint import build_model

        s = ModelSpec.from_dict(spec)
        model = build_model(s)
        return {"params": count_params(model), **count_flops(model, s.input_size, s.in_chans)}
    except Exception:  # counting is informative only; never fail a benchmark on it
        return {"params": None, "macs": None, "flops": None}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".onnx"))
    return path.stat().st_size


def default_threads() -> int:
    """The thread count a bench pins for every host runner unless told otherwise: all cores."""
    import os

    return os.cpu_count() or 1


def host_device_facts(threads: int | None) -> dict[str, Any]:
    import os

    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
    }


def _bench_host(
    items: list[tuple[str, dict, dict]], opts: BenchOptions, cache: dict, results: dict[str, BenchResult]
) -> None:
    with contextlib.ExitStack() as open_runners:  # every loaded runner is closed, whatever fails
        loaded = {}
        for path, spec, manifest in items:
            rec = results[path]
            try:
                runner = open_runners.enter_context(runner_for(path, opts.threads))
                x, y = _test_arrays(spec, opts, cache, manifest)
                x = x.astype(np.float32, copy=False)  # raw pixels as float 0-255 (the float artifacts' input type)
                logits = runner.infer(x)
                rec.top1, rec.n_eval, rec.accuracy_source = (
                    float((logits.argmax(1) == y).mean()),
                    int(len(y)),
                    ACCURACY_DEVICE,
                )
                rec.format, rec.runner, rec.precision = runner.fmt, runner.runner, runner.precision
                rec.extra["input"] = "raw pixels 0-255" if takes_raw_pixels(manifest) else "normalized"
                sample = x[:1]
                if hasattr(runner, "prepare"):
                    prepared = runner.prepare(sample)
                    loaded[path] = (runner, lambda r=runner, p=prepared: r.run_prepared(p))
                else:
                    loaded[path] = (runner, lambda r=runner, s=sample: r.infer_one(s))
            except PacbEdgeError as e:
                rec.status, rec.error = STATUS_FAILED, str(e)
        if loaded:
            samples = time_interleaved({k: fn for k, (_, fn) in loaded.items()}, opts.warmup, opts.runs, opts.min_time)
            for path, ms in samples.items():
                rec = results[path]
                rec.latency_ms = latency_stats(ms)
                rec.throughput_ips = 1000.0 / rec.latency_ms["mean"]
                rec.extra["interleaved_with"] = len(samples)


def _bench_jetson(items, opts: BenchOptions, cache: dict, results: dict[str, BenchResult]) -> None:
    from pacb_edge.device_bench.jetson import JetsonRunner

    runner = JetsonRunner(
        warmup=opts.warmup,
        runs=opts.runs,
        min_time=opts.min_time,
        threads=opts.threads,
        eval_limit=opts.eval_limit,
        **opts.jetson,
    )
    for path, _spec, _manifest in items:
        p = Path(path)
        if not (p.is_dir() and (p / "manifest.json").is_file() and (p / "model.onnx").is_file()):
            results[path].status = STATUS_FAILED
            results[path].error = f"{p.name} is not a Jetson bundle; export it with `pacb-edge export --target trt`"
            continue
        rec = runner.run_safely(p)
        rec.artifact = path
        results[path] = _merge(results[path], rec)


def _bench_android(items, opts: BenchOptions, cache: dict, results: dict[str, BenchResult]) -> None:
    """Each .tflite on the phone (benchmark_model, and run_eval when given) plus its top-1 on the host.

    The test images are uint8 raw pixels for artifacts that normalize inside the graph and normalized float for
    older exports; the eval set written for run_eval holds raw pixels either way.
    """
    import tempfile

    from pacb_edge.device_bench.android import AndroidRunner, write_eval_set
    from pacb_edge.export.runners import LiteRTRunner

    runner = AndroidRunner(warmup=opts.warmup, runs=opts.runs, threads=opts.threads or 4, **opts.android)
    for path, spec, manifest in items:
        try:
            if Path(path).suffix != ".tflite":
                raise PacbEdgeError(f"{Path(path).name}: Android runs .tflite files only")
            x, y = _test_arrays(spec, opts, cache, manifest)
            with LiteRTRunner(path) as host:
                host_top1 = float((host.infer(x).argmax(1) == y).mean())
            with tempfile.TemporaryDirectory(prefix="pacb_eval_") as eval_dir:
                eval_set = None
                if runner.eval_binary is not None:
                    mean, std = spec.get("mean") or (0.5,), spec.get("std") or (0.5,)  # used for float x only
                    eval_set = write_eval_set(x, y, eval_dir, spec.get("num_classes"), mean, std)
                rec = runner.run(path, manifest, eval_set=eval_set, host_top1=host_top1, host_n_eval=int(len(y)))
            rec.artifact = path
            results[path] = _merge(results[path], rec)
        except PacbEdgeError as e:
            results[path].status, results[path].error = STATUS_FAILED, str(e)


# One row per device: each fills the records of the artifacts it was given, the same BenchResult for all three.
DEVICE_BENCHES = {"cpu": _bench_host, "jetson": _bench_jetson, "android": _bench_android}


def _merge(base: BenchResult, measured: BenchResult) -> BenchResult:
    """Keep the manifest facts (size, counts, spec) of `base`, take the measurement from `measured`."""
    for key in ("size_bytes", "params", "macs", "flops", "spec"):
        if getattr(measured, key) in (None, {}, []):
            setattr(measured, key, getattr(base, key))
    return measured


def run_bench(artifacts: list[str], opts: BenchOptions) -> list[BenchResult]:
    """Bench every artifact (the baseline first, if any); returns their records in the order given."""
    if opts.device not in DEVICES:
        raise PacbEdgeError(f"unknown device {opts.device!r}; choose one of {', '.join(DEVICES)}")
    if opts.runs < 1 or opts.warmup < 0:
        raise PacbEdgeError("--runs must be >= 1 and --warmup >= 0")
    if opts.threads is not None and opts.threads < 1:
        raise PacbEdgeError(f"--threads must be at least 1, got {opts.threads}")
    if opts.device == "cpu" and opts.threads is None:
        # One thread count for every runner, so torch, onnxruntime and LiteRT are compared on equal terms.
        opts = dataclasses.replace(opts, threads=default_threads())
    paths = list(dict.fromkeys(([opts.baseline] if opts.baseline else []) + [str(a) for a in artifacts]))
    if not paths:
        raise PacbEdgeError("no artifacts to bench")
    results: dict[str, BenchResult] = {}
    items = []
    fmt_of = {".onnx": "onnx", ".tflite": "tflite"}
    for path in paths:
        p = Path(path)
        rec = BenchResult(
            artifact=path,
            format=fmt_of.get(p.suffix, "trt" if (p / "model.onnx").exists() else "torch"),
            device=opts.device,
            runner="?",
            threads=opts.threads,
            warmup=opts.warmup,
            runs=opts.runs,
        )
        results[path] = rec
        try:
            spec, manifest = artifact_spec(p)
            rec.spec = {
                k: spec.get(k)
                for k in (
                    "arch",
                    "attention",
                    "dataset",
                    "input_size",
                    "in_chans",
                    "num_classes",
                    "width_mult",
                    "mean",
                    "std",
                    "class_names",
                )
            }
            rec.size_bytes = _size(p)
            rec.precision = manifest.get("precision")
            rec.__dict__.update(_counts(spec, manifest))
            items.append((path, spec, manifest))
        except PacbEdgeError as e:
            rec.status, rec.error = STATUS_FAILED, str(e)
    DEVICE_BENCHES[opts.device](items, opts, {}, results)
    if opts.device == "cpu":
        for rec in results.values():
            rec.device_facts = host_device_facts(opts.threads)
    ordered = [results[p] for p in paths]
    base = results.get(opts.baseline) if opts.baseline else None
    for rec in ordered:
        if rec.status != STATUS_FAILED and rec.top1 is not None and rec.top1 < opts.min_accuracy:
            rec.status = STATUS_LOW_ACCURACY
        if base is not None and base.per_image_ms and rec.per_image_ms:
            rec.speedup_vs_baseline = base.per_image_ms / rec.per_image_ms
        if rec.accuracy_source is None and rec.top1 is not None:
            rec.accuracy_source = ACCURACY_HOST
    return ordered


CSV_FIELDS = (
    "artifact",
    "format",
    "precision",
    "device",
    "runner",
    "status",
    "per_image_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "min_ms",
    "throughput_ips",
    "top1",
    "accuracy_source",
    "n_eval",
    "size_bytes",
    "params",
    "macs",
    "flops",
    "speedup_vs_baseline",
    "error",
)


def write_reports(results: list[BenchResult], out_dir: str | Path, meta: dict[str, Any] | None = None) -> dict:
    """bench.json, bench.csv and pareto.png in `out_dir`; returns their paths."""
    out = ensure_dir(out_dir)
    paths = {"json": out / "bench.json", "csv": out / "bench.csv", "png": out / "pareto.png"}
    atomic_write_json(paths["json"], {"meta": meta or {}, "results": [r.to_dict() for r in results]})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for r in results:
        lat = r.latency_ms or {}
        writer.writerow(
            {
                "artifact": r.artifact,
                "format": r.format,
                "precision": r.precision,
                "device": r.device,
                "runner": r.runner,
                "status": r.status,
                "per_image_ms": r.per_image_ms,
                "p90_ms": lat.get("p90"),
                "p99_ms": lat.get("p99"),
                "mean_ms": lat.get("mean"),
                "std_ms": lat.get("std"),
                "min_ms": lat.get("min"),
                "throughput_ips": r.throughput_ips,
                "top1": r.top1,
                "accuracy_source": r.accuracy_source,
                "n_eval": r.n_eval,
                "size_bytes": r.size_bytes,
                "params": r.params,
                "macs": r.macs,
                "flops": r.flops,
                "speedup_vs_baseline": r.speedup_vs_baseline,
                "error": r.error,
            }
        )
    atomic_write_text(paths["csv"], buf.getvalue())
    plot_pareto(results, paths["png"])
    return paths


def short_label(artifact: str) -> str:
    """A readable label: the two folders above `export/` (run and stage) plus the file name."""
    p = Path(artifact)
    parts = p.parts
    if "export" in parts:
        i = len(parts) - 1 - parts[::-1].index("export")
        return "/".join(parts[max(0, i - 2) : i]) + ":" + p.name
    return "/".join(parts[-2:])


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(latency, accuracy) points that no other point beats on both (faster and at least as accurate)."""
    front, best = [], -float("inf")
    for ms, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((ms, acc))
            best = acc
    return front


def plot_pareto(results: list[BenchResult], path: str | Path) -> Path:
    """Accuracy vs per-image latency, with the Pareto front."""
    from pacb_edge.core.plots import pyplot, save_figure

    plt = pyplot()
    pts = [r for r in results if r.status != STATUS_FAILED and r.per_image_ms and r.top1 is not None]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    markers = {"onnx": "o", "tflite": "s", "torch": "^", "trt": "D"}
    for r in pts:
        ax.scatter(r.per_image_ms, 100 * r.top1, marker=markers.get(r.format, "o"))
        ax.annotate(
            f"{short_label(r.artifact)}",
            (r.per_image_ms, 100 * r.top1),
            fontsize=6,
            xytext=(4, 3),
            textcoords="offset points",
        )
    front = pareto_front([(r.per_image_ms, 100 * r.top1) for r in pts])
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), "--", color="grey", label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xlabel("per-image latency, p50 (ms, batch 1); o ONNX, s TFLite, ^ PyTorch, D TensorRT")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"accuracy vs latency ({results[0].device if results else ''})")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def status_icon(status: str) -> str:
    return {STATUS_OK: "✅", STATUS_LOW_ACCURACY: "❎", STATUS_FAILED: "❌"}.get(status, "?")
