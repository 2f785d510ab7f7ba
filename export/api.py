"""`pacb-edge export`: the formats table (Ultralytics' `export_formats()` habit) and the export driver.

Every artifact is verified against PyTorch on real test images and gets a manifest; all of one export's files are
staged in a temp folder inside the output directory and moved into place only when everything succeeded, so a
failure leaves no partial artifact behind.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_bytes, atomic_write_json, ensure_dir
from pacb_edge.export.trt_check import DEFAULT_TRT

log = logging.getLogger(__name__)

REPORT_NAME = "export_report.json"
INT8_REPORT_NAME = "model_int8_quant_report.json"  # beside model_int8.tflite, with a .png of the worst layers
DEBUG_IMAGES = 64  # calibration images the per-layer INT8 report runs on
BUDGET_VAL_IMAGES = 2000  # validation images (class-balanced) each mixed-precision candidate is judged on
LATENCY_RUNS = 50  # interleaved timed runs of the mixed and the full-INT8 model


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
    x_test: np.ndarray  # raw pixels as float32 NCHW 0-255: what every artifact takes
    x_test_raw: np.ndarray  # the same pixels as uint8 (what a device is fed)
    y_test: np.ndarray
    torch_logits: np.ndarray
    calibration: Callable[[], np.ndarray]
    staging: Path
    opset: int = 17
    trt_version: str = DEFAULT_TRT
    dynamic_batch: bool = False
    max_int8_drop: float = 1.0
    allow_drop: bool = False
    int8_budget: float = 0.5
    int8_float_ops: tuple[str, ...] = ()  # TFLite operator types kept in float in every INT8 candidate
    # Raw-pixel validation images and labels: mixed precision is chosen on them, never on the test split.
    validation: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    notes: list[str] = field(default_factory=list)
    # The INT8 drop beyond --max-int8-drop that --allow-drop did not accept: the export fails with it, after writing.
    refused_drop: str | None = None
    model_facts: dict[str, Any] = field(default_factory=dict)
    ssh: dict[str, Any] = field(default_factory=dict)
    _onnx: dict[int, Path] = field(default_factory=dict)

    @property
    def torch_top1(self) -> float:
        return float((self.torch_logits.argmax(1) == self.y_test).mean())

    def onnx_file(self, opset: int | None = None) -> Path:
        """Export (once per opset) the ONNX file the other formats start from; `--opset` unless one is given."""
        opset = self.opset if opset is None else opset
        if opset not in self._onnx:
            from pacb_edge.export.onnx import export_onnx

            name = "model.onnx" if opset == self.opset else f".model_opset{opset}.onnx"
            self._onnx[opset] = export_onnx(
                self.model, self.spec, self.staging / name, opset=opset, dynamic_batch=self.dynamic_batch
            )
        return self._onnx[opset]


def _input_info(spec, layout: str = "NCHW", dtype: str = "float32", quant: dict | None = None) -> dict[str, Any]:
    """The manifest's input record: every artifact takes raw pixels 0-255 and normalizes them in its graph."""
    from pacb_edge.export.onnx import RAW_PIXEL_INPUT

    shape = [1, spec.in_chans, spec.input_size, spec.input_size]
    if layout == "NHWC":
        shape = [1, spec.input_size, spec.input_size, spec.in_chans]
    return {"name": "input", "shape": shape, "layout": layout, "dtype": dtype, **RAW_PIXEL_INPUT, **(quant or {})}


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
    from pacb_edge.export.tflite import convert_onnx_to_tflite, evaluate_tflite, pin_input_range, tflite_io_details

    calibration = ctx.calibration() if "int8" in precisions else ctx.x_test[:1]
    calibration = pin_input_range(calibration, 0.0, 255.0)  # the INT8 input then takes pixels with scale 1
    onnx_path = ctx.onnx_file()
    int8_record: dict[str, Any] = {}
    choose = _int8_chooser(ctx, calibration, int8_record) if "int8" in precisions else None
    t0 = time.perf_counter()
    files = convert_onnx_to_tflite(
        onnx_path, ctx.staging, calibration, precisions=precisions, stem="model", choose_int8=choose
    )
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
            scale, zero_point = io["input"].get("scale"), io["input"].get("zero_point")
            if not (scale and abs(scale - 1.0) < 1e-6 and zero_point == -128):
                ctx.notes.append(
                    f"{path.name}: INT8 input has scale {scale} and zero point {zero_point}, not 1 and -128: feed it "
                    "through its own quantization parameters (TFLite's run_eval would feed it wrongly)"
                )
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
        int8 = by_precision["int8"]
        fp32_top1 = by_precision["fp32"]["verification"]["top1"] if "fp32" in by_precision else ctx.torch_top1
        int8["verification"]["drop_vs_fp32_pp"] = 100 * (fp32_top1 - int8["verification"]["top1"])
        int8["int8"] = _int8_summary(ctx, int8_record, int8["verification"], fp32_top1)
    for r in results:
        inp = r["io"]["input"]
        quant = {"scale": inp.get("scale"), "zero_point": inp.get("zero_point")} if r["precision"] == "int8" else {}
        extra = {"export_seconds": r["export_seconds"], "model": ctx.model_facts}
        if r["precision"] == "int8":
            extra["int8_quantization"] = r["int8"]
        write_manifest(
            r["path"],
            fmt="tflite",
            precision=r["precision"],
            input_info=_input_info(ctx.spec, inp.get("layout", "NHWC"), inp.get("dtype", "float32"), quant),
            output_info=r["io"]["output"],
            verification=r["verification"],
            tools=tool_versions("torch", "onnx", "onnx2tf", "tensorflow", "ai-edge-litert"),
            extra=extra,
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
                ctx.refused_drop = message
            else:
                ctx.notes.append(message + " — allowed by --allow-drop")
    return results


def _int8_chooser(ctx: ExportContext, calibration_nchw: np.ndarray, record: dict[str, Any]):
    """`convert_onnx_to_tflite`'s INT8 step: the per-layer report, then mixed precision to `ctx.int8_budget` on the
    validation split. Fills `record` (layers, budget result, latency and test figures of full INT8); refuses with
    one line when the budget cannot be met, unless `ctx.allow_drop`."""

    def choose(calibration, work: Path) -> bytes:
        import torch

        from pacb_edge.export.onnx import torch_logits
        from pacb_edge.export.tflite import evaluate_tflite, time_tflite
        from pacb_edge.export.tflite_quant import fit_int8_budget

        step = max(1, len(calibration_nchw) // DEBUG_IMAGES)
        debug = calibration_nchw[::step][:DEBUG_IMAGES].transpose(0, 2, 3, 1)
        record["layers"] = calibration.layer_report(debug)
        keep = None
        if ctx.int8_float_ops:
            nodes = calibration.ops_of_types(ctx.int8_float_ops)
            if nodes:
                keep = ("ops " + ",".join(ctx.int8_float_ops), nodes)
            else:
                ctx.notes.append(f"--int8-float-ops: the model has no {', '.join(ctx.int8_float_ops)} operator")
        x_val, y_val = ctx.validation() if ctx.validation else (np.empty((0,)), np.empty((0,)))
        if len(x_val) == 0:
            ctx.notes.append("no validation images: INT8 was not checked against --int8-budget")
            return calibration.quantize(keep[1] if keep else ())
        x_val = x_val.astype(np.float32)
        fp32_top1 = float((torch_logits(ctx.model, x_val).argmax(1) == y_val).mean())
        result = fit_int8_budget(
            calibration,
            record["layers"],
            lambda path: evaluate_tflite(path, x_val, y_val)["top1"],
            fp32_top1,
            ctx.int8_budget,
            work,
            keep_float=keep,
        )
        record.update(result=result, val_n=int(len(x_val)), val_fp32_top1=fp32_top1)
        if not result.met:
            message = (
                f"INT8 misses --int8-budget {ctx.int8_budget:.2f} pp on the validation split: the best of "
                f"{len(result.steps)} tries drops {result.drop_pp:.2f} pp with {len(result.float_layers)} layer "
                f"group(s) in float (full INT8: {result.full_int8_drop_pp:.2f} pp)"
            )
            message += int8_hint(ctx.spec)
            if not ctx.allow_drop:
                raise PacbEdgeError(message + "; pass --allow-drop to keep it")
            ctx.notes.append(message + " — kept by --allow-drop")
        if result.float_nodes:
            mixed = atomic_write_bytes(work / "int8_mixed.tflite", result.model)
            full = atomic_write_bytes(work / "int8_full.tflite", result.full_int8)
            threads = torch.get_num_threads()
            ms = time_tflite([mixed, full], num_threads=threads, runs=LATENCY_RUNS)
            record["latency"] = {
                "threads": threads,
                "runs": LATENCY_RUNS,
                "mixed_ms": ms[str(mixed)],
                "full_int8_ms": ms[str(full)],
                "ratio": ms[str(mixed)] / ms[str(full)],
            }
            record["full_int8_test_top1"] = evaluate_tflite(full, ctx.x_test, ctx.y_test)["top1"]
        return result.model

    return choose


def int8_hint(spec) -> str:
    """What to change when the budget is missed, where the cause is known: RepVGG with attention (its identity BNs
    blow up the activation range; see benchmarks/RESULTS.md, INT8 section)."""
    if spec.arch.startswith("repvgg_") and (spec.attention or "none").lower() != "none":
        qarep = spec.arch.replace("repvgg_", "qarepvgg_", 1)
        return f" (RepVGG with attention: train the QARep block, --model {qarep}, for INT8)"
    return ""


def _int8_summary(ctx: ExportContext, record: dict[str, Any], verification: dict[str, Any], fp32_top1: float):
    """The INT8 file's quantization record for its manifest and the export report; writes the per-layer report
    (JSON and PNG) beside it in the staging folder."""
    from pacb_edge.export.tflite_quant import op_counts, write_quant_report

    layers = record.get("layers") or []
    result = record.get("result")
    summary: dict[str, Any] = {
        "report": INT8_REPORT_NAME,
        "worst_layers": [
            {k: r[k] for k in ("name", "op_type", "tensor_name", "channel_error", "rmse/scale")} for r in layers[:3]
        ],
        "budget_pp": ctx.int8_budget,
    }
    if result is not None:
        full_test = record.get("full_int8_test_top1", verification["top1"])
        summary.update(
            met=result.met,
            float_layers=result.float_layers,
            float_nodes=result.float_nodes,
            n_float_ops=len(result.float_nodes),
            dequantize_ops=op_counts(result.model).get("DEQUANTIZE", 0),
            full_int8_dequantize_ops=op_counts(result.full_int8).get("DEQUANTIZE", 0),
            size_bytes=len(result.model),
            full_int8_size_bytes=len(result.full_int8),
            val={
                "n": record["val_n"],
                "fp32_top1": record["val_fp32_top1"],
                "top1": result.val_top1,
                "drop_pp": result.drop_pp,
                "full_int8_drop_pp": result.full_int8_drop_pp,
            },
            test={
                "top1": verification["top1"],
                "drop_pp": verification["drop_vs_fp32_pp"],
                "full_int8_top1": full_test,
                "full_int8_drop_pp": 100 * (fp32_top1 - full_test),
            },
            latency=record.get("latency"),
            steps=result.steps,
        )
    write_quant_report(ctx.staging / INT8_REPORT_NAME, layers, result, extra={"summary": summary})
    return summary


def export_trt_target(ctx: ExportContext, precisions: tuple[str, ...]) -> list[dict[str, Any]]:
    """A Jetson bundle at the target TensorRT's opset, checked against its parser before anything is written;
    with `--host` (or TensorRT here) the engine is built where it runs and its accuracy verified like any artifact."""
    from pacb_edge.export.manifest import tool_versions
    from pacb_edge.export.tensorrt import BundleSession, build_and_verify, tensorrt_available, write_bundle
    from pacb_edge.export.trt_check import get_profile, preflight, profile_for_device

    profile = get_profile(ctx.trt_version)
    session = None
    if ctx.ssh.get("host"):  # ask the device which parser it has before anything is built or sent
        session = BundleSession(**ctx.ssh)
        profile, differs = profile_for_device(session.tensorrt_version(), ctx.trt_version)
        if differs:
            log.warning("%s", differs)
            ctx.notes.append(differs)
    opset = min(ctx.opset, profile.max_opset)
    onnx_path = ctx.onnx_file(opset)
    preflight(onnx_path, profile.version)  # refuse here, before the bundle is written or sent anywhere
    calibration = ctx.calibration()  # always the full set: the bundle may be built as INT8 on the device later
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
        "opset": opset,
        "tensorrt_profile": {"version": profile.version, "jetpack": profile.jetpack, "max_opset": profile.max_opset},
        "preflight": "ok",
        "tools": tool_versions("torch", "onnx"),
        "model": ctx.model_facts,
    }
    manifest["source_checkpoint"] = str(ctx.checkpoint)
    t0 = time.perf_counter()
    bundle = write_bundle(ctx.staging / "jetson_bundle", onnx_path, calibration, ctx.x_test_raw, ctx.y_test, manifest)
    ok, why = tensorrt_available()
    if not (ctx.ssh.get("host") or ok):
        ctx.notes.append(
            f"TensorRT engines are device-specific and {why}: wrote a Jetson bundle for {profile.label} instead; "
            "build and verify it on the Jetson with `pacb-edge export --target trt --host USER@JETSON` or "
            "`pacb-edge bench --device jetson`"
        )
        return [
            {
                "path": bundle,
                "format": "trt-bundle",
                "precision": ",".join(precisions),
                "verification": {},
                "export_seconds": time.perf_counter() - t0,
                "tensorrt_profile": profile.version,
                "opset": opset,
            }
        ]
    results: list[dict[str, Any]] = []
    for precision in precisions:
        if session is not None:
            result = build_and_verify(bundle, precision, session=session, eval_limit=None)
        else:
            result = build_and_verify(bundle, precision, eval_limit=None, **ctx.ssh)
        verification = {
            "top1": result["top1"],
            "torch_top1": ctx.torch_top1,
            "n": result.get("n_eval"),
            "drop_vs_torch_pp": 100 * (ctx.torch_top1 - result["top1"]) if result.get("top1") is not None else None,
            "engine": result.get("engine"),
            "engine_cache": result.get("engine_cache"),
            "where": ctx.ssh.get("host") or "here",
        }
        ctx.notes.append(
            f"built the {precision} engine on {ctx.ssh.get('host') or 'this machine'}: {result.get('engine')} "
            f"(top-1 {100 * (result['top1'] or 0):.2f} %)"
        )
        results.append(
            {
                "path": bundle,
                "format": "trt",
                "precision": precision,
                "verification": verification,
                "export_seconds": time.perf_counter() - t0,
                "tensorrt_profile": profile.version,
                "opset": opset,
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
    from pacb_edge.training.checkpoint import resolve_checkpoint

    return resolve_checkpoint(checkpoint).parent / "export"


def export_checkpoint(
    checkpoint: str | Path,
    targets: list[str],
    precision: str | None = None,
    out_dir: str | Path | None = None,
    calibration_images: int = 300,
    opset: int = 17,
    trt_version: str = DEFAULT_TRT,
    dynamic_batch: bool = False,
    max_int8_drop: float = 1.0,
    allow_drop: bool = False,
    int8_budget: float = 0.5,
    int8_float_ops: Sequence[str] = (),
    data_dir: str | None = None,
    eval_limit: int | None = None,
    ssh: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export a checkpoint to each target and verify every artifact; returns the report (also written as JSON).

    Verification uses the test split the checkpoint was trained with (`rebuild_dataset`). Every artifact takes raw
    pixels. INT8 TFLite keeps the fewest layers in float that hold its validation-split drop to `int8_budget` pp
    (a `PacbEdgeError`, and no file written, when it cannot, unless `allow_drop`), with the operator types in
    `int8_float_ops` (e.g. HARD_SWISH) in float in every candidate. `ssh` (host, port, ssh_config,
    identity_file, remote_dir, python) sends a TensorRT bundle to a Jetson to build and verify its engines there.
    """
    from pacb_edge.data.datasets import rebuild_dataset
    from pacb_edge.export.onnx import deployable, pixel_input, torch_logits
    from pacb_edge.export.trt_check import get_profile
    from pacb_edge.training.checkpoint import load_checkpoint, resolve_checkpoint

    formats = [get_format(t) for t in targets]
    precisions = {f.name: parse_precisions(f, precision, lenient=len(formats) > 1) for f in formats}
    if int8_budget < 0 or max_int8_drop < 0:
        raise PacbEdgeError(
            f"--int8-budget and --max-int8-drop are top-1 drops in pp and must be >= 0, got {int8_budget:g} and "
            f"{max_int8_drop:g}"
        )
    if calibration_images < 1 and any("int8" in p for p in precisions.values()):
        raise PacbEdgeError("INT8 needs calibration data: --calibration-images must be at least 1")
    if "trt" in precisions:
        get_profile(trt_version)  # an unknown version is refused before any work
    if int8_float_ops:
        if "int8" not in precisions.get("tflite", ()):
            raise PacbEdgeError("--int8-float-ops applies to INT8 TFLite only: add --target tflite with int8")
        from pacb_edge.export.tflite_quant import check_op_types

        int8_float_ops = check_op_types(int8_float_ops)
    weights = resolve_checkpoint(checkpoint)
    model, spec = load_checkpoint(weights)
    out = ensure_dir(out_dir or default_out_dir(weights))
    if not spec.dataset:
        raise PacbEdgeError(f"checkpoint {weights} does not name its dataset; cannot verify the export")
    data = rebuild_dataset(spec, data_dir=data_dir)
    x_test_raw, y_test = data.arrays("test", limit=eval_limit, raw=True)
    from pacb_edge.models import count_flops, count_params

    model = deployable(model)
    model_facts = {"params": count_params(model), **count_flops(model, spec.input_size, spec.in_chans)}
    model = pixel_input(model, spec)
    x_test = x_test_raw.astype(np.float32)

    def calibration() -> np.ndarray:
        if len(data.train) == 0:
            raise PacbEdgeError("INT8 needs calibration data, but the training split is empty")
        return data.calibration_images(calibration_images, seed=0, raw=True).astype(np.float32)

    def validation() -> tuple[np.ndarray, np.ndarray]:
        from pacb_edge.data.datasets import balanced_choice

        positions = balanced_choice(data.val.labels, BUDGET_VAL_IMAGES, seed=0) if len(data.val) else []
        return data.val.arrays_at(np.asarray(positions, dtype=np.int64), raw=True)

    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    ctx = ExportContext(
        checkpoint=weights,
        model=model,
        spec=spec,
        x_test=x_test,
        x_test_raw=x_test_raw,
        y_test=y_test,
        torch_logits=torch_logits(model, x_test),
        calibration=calibration,
        staging=staging,
        opset=opset,
        trt_version=trt_version,
        dynamic_batch=dynamic_batch,
        max_int8_drop=max_int8_drop,
        allow_drop=allow_drop,
        int8_budget=int8_budget,
        int8_float_ops=tuple(int8_float_ops),
        validation=validation,
        ssh=dict(ssh or {}),
        model_facts=model_facts,
    )
    artifacts: list[dict[str, Any]] = []
    try:
        for fmt in formats:
            artifacts.extend(fmt.function(ctx, precisions[fmt.name]))
        moved: dict[Path, Path] = {}
        for item in sorted(staging.iterdir()):
            if item.name.startswith("."):  # working files (e.g. the ONNX at another opset)
                continue
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
        "split": dict(spec.split),
        "out_dir": str(out),
        "torch_top1": ctx.torch_top1,
        "n_test": int(len(x_test)),
        "artifacts": artifacts,
        "notes": ctx.notes,
    }
    atomic_write_json(out / REPORT_NAME, report)
    if ctx.refused_drop is not None:
        raise AccuracyDropError(ctx.refused_drop + "; pass --allow-drop to accept it")
    return report


def int8_line(name: str, q: dict) -> str:
    """One line per INT8 file: its three worst layers, what was kept in float, and the validation drop."""
    worst = ", ".join(
        f"{w['name']} ({w['channel_error']:.2f})" if w.get("channel_error") is not None else w["name"]
        for w in q.get("worst_layers", [])
    )
    line = f"{name}: worst INT8 layers {worst or '-'}"
    if "val" in q:
        kept = f"{q['n_float_ops']} op(s) in float" if q["n_float_ops"] else "full INT8"
        line += (
            f"; {kept}, validation drop {q['val']['drop_pp']:.2f} pp (full INT8 {q['val']['full_int8_drop_pp']:.2f}, "
            f"budget {q['budget_pp']:.2f})"
        )
        if q.get("latency"):
            line += f", latency x{q['latency']['ratio']:.2f} of full INT8"
    return line


def _relocate(path: Path, staging: Path, out: Path) -> Path:
    try:
        return out / path.relative_to(staging)
    except ValueError:
        return path
