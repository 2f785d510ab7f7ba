"""`pacb-edge export`: the formats table (Ultralytics' `export_formats()` habit) and the export driver.

Every artifact is verified against PyTorch on real test images and gets a manifest; all of one export's files are
staged in a temp folder inside the output directory and moved into place only when everything succeeded, so a
failure leaves no partial artifact behind.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.errors import PacbEdgeError
from pacb_edge.fileio import atomic_write_json, ensure_dir

REPORT_NAME = "export_report.json"


class AccuracyDropError(PacbEdgeError):
    """INT8 lost more accuracy than allowed; the artifacts are kept, the exit code is non-zero."""

    exit_code = 3


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    needs_gpu: bool
    function: Callable[..., list[dict[str, Any]]]
    default_precisions: tuple[str, ...]


@dataclass
class ExportContext:
    """What every format needs: the deployable model, its spec, and the real data to verify with."""

    checkpoint: Path
    model: Any
    spec: Any
    x_test: np.ndarray
    y_test: np.ndarray
    torch_logits: np.ndarray
    calibration: Callable[[], np.ndarray]
    staging: Path
    opset: int = 17
    dynamic_batch: bool = False
    max_int8_drop: float = 1.0
    allow_drop: bool = False
    host: str | None = None
    port: int | None = None
    remote_dir: str = "~/pacb_edge"
    notes: list[str] = field(default_factory=list)
    model_facts: dict[str, Any] = field(default_factory=dict)
    _onnx: Path | None = None

    @property
    def torch_top1(self) -> float:
        return float((self.torch_logits.argmax(1) == self.y_test).mean())

    def onnx_file(self) -> Path:
        """Export (once) the ONNX file every other format starts from."""
        if self._onnx is None:
            from pacb_edge.export.onnx import export_onnx

            self._onnx = export_onnx(
                self.model, self.spec, self.staging / "model.onnx", opset=self.opset, dynamic_batch=self.dynamic_batch
            )
        return self._onnx


def _input_info(spec, layout: str = "NCHW", dtype: str = "float32", quant: dict | None = None) -> dict[str, Any]:
    shape = [1, spec.in_chans, spec.input_size, spec.input_size]
    if layout == "NHWC":
        shape = [1, spec.input_size, spec.input_size, spec.in_chans]
    return {"name": "input", "shape": shape, "layout": layout, "dtype": dtype, **(quant or {})}


def _manifest_common(ctx: ExportContext) -> dict[str, Any]:
    return {"spec": ctx.spec.to_dict(), "source_checkpoint": ctx.checkpoint}


def export_onnx_target(ctx: ExportContext, precisions: tuple[str, ...]) -> list[dict[str, Any]]:
    from pacb_edge.export.manifest import tool_versions, write_manifest
    from pacb_edge.export.onnx import MIN_FP32_AGREEMENT, verify_onnx

    t0 = time.perf_counter()
    path = ctx.onnx_file()
    seconds = time.perf_counter() - t0
    verification = verify_onnx(path, ctx.model, ctx.x_test, ctx.y_test, MIN_FP32_AGREEMENT)
    verification["torch_top1"] = ctx.torch_top1
    write_manifest(
        path,
        fmt="onnx",
        precision="fp32",
        input_info=_input_info(ctx.spec),
        output_info={"name": "logits", "shape": [1, ctx.spec.num_classes]},
        verification=verification,
        tools=tool_versions("torch", "onnx", "onnxsim", "onnxruntime"),
        extra={
            "export_seconds": seconds,
            "opset": ctx.opset,
            "dynamic_batch": ctx.dynamic_batch,
            "model": ctx.model_facts,
        },
        **_manifest_common(ctx),
    )
    return [
        {"path": path, "format": "onnx", "precision": "fp32", "verification": verification, "export_seconds": seconds}
    ]


def export_tflite_target(ctx: ExportContext, precisions: tuple[str, ...]) -> list[dict[str, Any]]:
    from pacb_edge.export.manifest import tool_versions, write_manifest
    from pacb_edge.export.tflite import convert_onnx_to_tflite, evaluate_tflite, tflite_io_details

    calibration = ctx.calibration() if "int8" in precisions else ctx.x_test[:1]
    onnx_path = ctx.onnx_file()
    t0 = time.perf_counter()
    files = convert_onnx_to_tflite(onnx_path, ctx.staging, calibration, precisions=precisions, stem="model")
    seconds = time.perf_counter() - t0
    results = []
    for precision in precisions:
        path = Path(files[precision])
        io = tflite_io_details(path)
        verification = evaluate_tflite(path, ctx.x_test, ctx.y_test, reference_logits=ctx.torch_logits)
        verification.pop("predictions", None)
        verification["torch_top1"] = ctx.torch_top1
        verification["drop_vs_torch_pp"] = 100 * (ctx.torch_top1 - verification["top1"])
        if precision == "int8":
            verification["calibration_images"] = int(len(calibration))
        results.append(
            {
                "path": path,
                "format": "tflite",
                "precision": precision,
                "verification": verification,
                "export_seconds": seconds / len(precisions),
                "io": io,
            }
        )
    by_precision = {r["precision"]: r for r in results}
    if "int8" in by_precision:
        int8 = by_precision["int8"]["verification"]
        fp32_top1 = by_precision["fp32"]["verification"]["top1"] if "fp32" in by_precision else ctx.torch_top1
        int8["drop_vs_fp32_pp"] = 100 * (fp32_top1 - int8["top1"])
    for r in results:
        inp = r["io"]["input"]
        quant = {"scale": inp.get("scale"), "zero_point": inp.get("zero_point")} if r["precision"] == "int8" else {}
        write_manifest(
            r["path"],
            fmt="tflite",
            precision=r["precision"],
            input_info=_input_info(ctx.spec, inp.get("layout", "NHWC"), inp.get("dtype", "float32"), quant),
            output_info=r["io"]["output"],
            verification=r["verification"],
            tools=tool_versions("torch", "onnx", "onnx2tf", "tensorflow", "ai-edge-litert"),
            extra={"export_seconds": r["export_seconds"], "model": ctx.model_facts},
            **_manifest_common(ctx),
        )
        r.pop("io")
    if "int8" in by_precision:
        drop = by_precision["int8"]["verification"]["drop_vs_fp32_pp"]
        if drop > ctx.max_int8_drop:
            message = (
                f"INT8 accuracy drop {drop:.2f} pp exceeds --max-int8-drop {ctx.max_int8_drop:.2f} pp "
                f"(INT8 {100 * by_precision['int8']['verification']['top1']:.2f} %)"
            )
            if not ctx.allow_drop:
                ctx.notes.append(message)
            else:
                ctx.notes.append(message + " — allowed by --allow-drop")
    return results


def export_trt_target(ctx: ExportContext, precisions: tuple[str, ...]) -> list[dict[str, Any]]:
    from pacb_edge.export.manifest import tool_versions
    from pacb_edge.export.tensorrt import build_engine_here, run_harness, tensorrt_available, write_bundle

    calibration = ctx.calibration()  # always the full set: the bundle may be built as INT8 on the device later
    onnx_path = ctx.onnx_file()
    manifest = {
        "format": "trt-bundle",
        "precisions": list(precisions),
        **_manifest_common(ctx),
        "input": _input_info(ctx.spec),
        "output": {"name": "logits", "shape": [1, ctx.spec.num_classes]},
        "mean": list(ctx.spec.mean),
        "std": list(ctx.spec.std),
        "class_names": list(ctx.spec.class_names),
        "calibration_images": int(len(calibration)),
        "test_images": int(len(ctx.x_test)),
        "torch_top1": ctx.torch_top1,
        "tools": tool_versions("torch", "onnx"),
        "model": ctx.model_facts,
    }
    manifest["source_checkpoint"] = str(ctx.checkpoint)
    t0 = time.perf_counter()
    bundle = write_bundle(ctx.staging / "jetson_bundle", onnx_path, calibration, ctx.x_test, ctx.y_test, manifest)
    results: list[dict[str, Any]] = []
    ok, why = tensorrt_available()
    if ctx.host:
        from pacb_edge.remote import SSHTarget

        target = SSHTarget(ctx.host, port=ctx.port)
        remote = ctx.remote_dir.rstrip("/") + "/jetson_bundle"
        target.copy_to([str(p) for p in sorted(bundle.iterdir())], remote)
        for precision in precisions:
            proc = target.run(
                ["python3", f"{remote}/jetson/build_engine.py", remote, "--precision", precision], timeout=3600
            )
            engine = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "?"
            ctx.notes.append(f"built {precision} engine on {ctx.host}: {engine}")
            results.append(
                {
                    "path": bundle,
                    "format": "trt",
                    "precision": precision,
                    "remote_engine": engine,
                    "verification": {},
                    "export_seconds": time.perf_counter() - t0,
                }
            )
    elif ok:
        for precision in precisions:
            engine = build_engine_here(bundle, precision)
            result = run_harness(bundle, "tensorrt", precision, ["--warmup", "5", "--runs", "20"])
            verification = {
                "top1": result["top1"],
                "torch_top1": ctx.torch_top1,
                "n": result.get("n_eval"),
                "drop_vs_torch_pp": 100 * (ctx.torch_top1 - result["top1"]),
            }
            results.append(
                {
                    "path": engine,
                    "format": "trt",
                    "precision": precision,
                    "verification": verification,
                    "export_seconds": time.perf_counter() - t0,
                }
            )
    else:
        ctx.notes.append(
            f"TensorRT engines are device-specific and {why}: wrote a Jetson bundle instead; build it on "
            f"the Jetson with `python3 jetson/build_engine.py BUNDLE --precision P` or pass --host"
        )
        results.append(
            {
                "path": bundle,
                "format": "trt-bundle",
                "precision": ",".join(precisions),
                "verification": {},
                "export_seconds": time.perf_counter() - t0,
            }
        )
    return results


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("onnx", ".onnx", ("fp32",), False, export_onnx_target, ("fp32",)),
        ExportFormat(
            "tflite", ".tflite", ("fp32", "fp16", "int8"), False, export_tflite_target, ("fp32", "fp16", "int8")
        ),
        ExportFormat("trt", ".engine", ("fp32", "fp16", "int8"), True, export_trt_target, ("fp16",)),
    )
}


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise PacbEdgeError(f"unknown export target {name!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[name]


def parse_precisions(fmt: ExportFormat, precision: str | None, lenient: bool = False) -> tuple[str, ...]:
    """The precisions to produce for `fmt`. With several targets (`lenient`), each keeps the ones it supports."""
    if not precision:
        return fmt.default_precisions
    wanted = tuple(p.strip().lower() for p in precision.split(",") if p.strip())
    if lenient:
        wanted = tuple(p for p in wanted if p in fmt.precisions)
    bad = [p for p in wanted if p not in fmt.precisions]
    if bad or not wanted:
        raise PacbEdgeError(
            f"precision {precision!r} is not available for {fmt.name}; choose from {', '.join(fmt.precisions)}"
        )
    return wanted


def default_out_dir(checkpoint: Path) -> Path:
    from pacb_edge.checkpoint import resolve_checkpoint

    return resolve_checkpoint(checkpoint).parent / "export"


def export_checkpoint(
    checkpoint: str | Path,
    targets: list[str],
    precision: str | None = None,
    out_dir: str | Path | None = None,
    calibration_images: int = 200,
    opset: int = 17,
    dynamic_batch: bool = False,
    max_int8_drop: float = 1.0,
    allow_drop: bool = False,
    data_dir: str | None = None,
    eval_limit: int | None = None,
    host: str | None = None,
    port: int | None = None,
    remote_dir: str = "~/pacb_edge",
) -> dict[str, Any]:
    """Export a checkpoint to each target and verify every artifact; returns the report (also written as JSON)."""
    from pacb_edge.checkpoint import load_checkpoint, resolve_checkpoint
    from pacb_edge.data import load_dataset
    from pacb_edge.export.onnx import deployable, torch_logits

    formats = [get_format(t) for t in targets]
    precisions = {f.name: parse_precisions(f, precision, lenient=len(formats) > 1) for f in formats}
    if calibration_images < 1 and any("int8" in p for p in precisions.values()):
        raise PacbEdgeError("INT8 needs calibration data: --calibration-images must be at least 1")
    weights = resolve_checkpoint(checkpoint)
    model, spec = load_checkpoint(weights)
    out = ensure_dir(out_dir or default_out_dir(weights))
    if not spec.dataset:
        raise PacbEdgeError(f"checkpoint {weights} does not name its dataset; cannot verify the export")
    data = load_dataset(
        spec.dataset,
        data_dir=data_dir,
        input_size=spec.input_size,
        grayscale_to_rgb=spec.in_chans == 3 and spec.dataset in ("digits", "fashion-mnist"),
    )
    if len(data.class_names) != spec.num_classes:
        raise PacbEdgeError(
            f"dataset {spec.dataset} has {len(data.class_names)} classes, the checkpoint {spec.num_classes}"
        )
    x_test, y_test = data.arrays("test", limit=eval_limit)
    if x_test.shape[1] != spec.in_chans:
        raise PacbEdgeError(f"test images have {x_test.shape[1]} channels, the model expects {spec.in_chans}")
    model = deployable(model)
    from pacb_edge.models import count_flops, count_params

    model_facts = {"params": count_params(model), **count_flops(model, spec.input_size, spec.in_chans)}

    def calibration() -> np.ndarray:
        if len(data.train) == 0:
            raise PacbEdgeError("INT8 needs calibration data, but the training split is empty")
        return data.calibration_images(calibration_images, seed=0)

    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    ctx = ExportContext(
        checkpoint=weights,
        model=model,
        spec=spec,
        x_test=x_test,
        y_test=y_test,
        torch_logits=torch_logits(model, x_test),
        calibration=calibration,
        staging=staging,
        opset=opset,
        dynamic_batch=dynamic_batch,
        max_int8_drop=max_int8_drop,
        allow_drop=allow_drop,
        host=host,
        port=port,
        remote_dir=remote_dir,
        model_facts=model_facts,
    )
    artifacts: list[dict[str, Any]] = []
    try:
        for fmt in formats:
            artifacts.extend(fmt.function(ctx, precisions[fmt.name]))
        moved: dict[Path, Path] = {}
        for item in sorted(staging.iterdir()):
            dest = out / item.name
            if dest.is_dir() and item.is_dir():
                shutil.rmtree(dest)
            item.replace(dest)
            moved[item] = dest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for a in artifacts:
        a["path"] = str(_relocate(Path(a["path"]), staging, out))
        a["size_bytes"] = Path(a["path"]).stat().st_size if Path(a["path"]).is_file() else None
    report = {
        "checkpoint": str(weights),
        "out_dir": str(out),
        "torch_top1": ctx.torch_top1,
        "n_test": int(len(x_test)),
        "artifacts": artifacts,
        "notes": ctx.notes,
    }
    atomic_write_json(out / REPORT_NAME, report)
    drops = [n for n in ctx.notes if "exceeds --max-int8-drop" in n and "allowed" not in n]
    if drops:
        raise AccuracyDropError(drops[0] + "; pass --allow-drop to accept it")
    return report


def _relocate(path: Path, staging: Path, out: Path) -> Path:
    try:
        return out / path.relative_to(staging)
    except ValueError:
        return path
