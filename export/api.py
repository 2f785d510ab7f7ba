"""`pacb-edge export`: the formats table (Ultralytics' `export_formats()` habit) and the export driver.

Every artifact is verified against PyTorch on real test images and gets a manifest; all of one export's files are
staged in a temp folder inside the output directory and moved into place only when everything succeeded, so a
failure leaves no partial artifact behind.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_json, ensure_dir
from pacb_edge.export import onnx, tensorrt, tflite
from pacb_edge.export.context import AccuracyDropError, ExportContext, ExportFormat
from pacb_edge.export.trt_check import DEFAULT_TRT

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "REPORT_NAME", "AccuracyDropError", "ExportContext", "export_checkpoint", "get_format"]

REPORT_NAME = "export_report.json"
BUDGET_VAL_IMAGES = 2000  # validation images (class-balanced) each mixed-precision candidate is judged on


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (onnx.FORMAT, tflite.FORMAT, tensorrt.FORMAT)}


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise PacbEdgeError(f"unknown export target {name!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[name]


FLAGS = {"trt_version": "--trt", "ssh": "--host"}  # the command-line names that differ from the keyword's


def validate_args(formats: list[ExportFormat], values: dict[str, Any]) -> None:
    """Refuse, in one line and before any work, an option set away from its default (`ExportContext`'s; for `ssh`,
    a host named) that no chosen format reads (each format's row lists its own options)."""
    taken = {o for f in formats for o in f.options}
    defaults = {f.name: f.default for f in dataclasses.fields(ExportContext)}
    for name, value in values.items():
        given = bool((value or {}).get("host")) if name == "ssh" else value != defaults[name]
        if given and name not in taken:
            owners = "/".join(f.name for f in FORMATS.values() if name in f.options)
            flag = FLAGS.get(name, "--" + name.replace("_", "-"))
            raise PacbEdgeError(f"{flag} applies to --target {owners} only")


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
    validate_args(
        formats,
        {
            "trt_version": trt_version,
            "ssh": ssh,
            "allow_drop": allow_drop,
            "int8_budget": int8_budget,
            "max_int8_drop": max_int8_drop,
        },
    )
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


def _relocate(path: Path, staging: Path, out: Path) -> Path:
    try:
        return out / path.relative_to(staging)
    except ValueError:
        return path
