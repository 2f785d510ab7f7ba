"""What every export format shares: the format's row (`ExportFormat`), the context a format exports from
(`ExportContext`), the manifest's input record, and the error an INT8 drop ends in. Each format module
(`onnx.py`, `tflite.py`, `tensorrt.py`) owns its row and its target function; `api.py` holds the table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.export.trt_check import DEFAULT_TRT

PIXEL_RANGE = (0, 255)  # every artifact takes raw camera pixels
RAW_PIXEL_INPUT = {"pixel_range": list(PIXEL_RANGE), "normalization": "in-model"}


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
    # The export options only this format reads (`export_checkpoint`'s keyword names), beyond the common ones.
    options: tuple[str, ...] = ()


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
    onnx_files: dict[int, Path] = field(default_factory=dict)  # by opset (`onnx.onnx_file`)

    @property
    def torch_top1(self) -> float:
        return float((self.torch_logits.argmax(1) == self.y_test).mean())


def input_info(spec, layout: str = "NCHW", dtype: str = "float32", quant: dict | None = None) -> dict[str, Any]:
    """The manifest's input record: every artifact takes raw pixels 0-255 and normalizes them in its graph."""
    shape = [1, spec.in_chans, spec.input_size, spec.input_size]
    if layout == "NHWC":
        shape = [1, spec.input_size, spec.input_size, spec.in_chans]
    return {"name": "input", "shape": shape, "layout": layout, "dtype": dtype, **RAW_PIXEL_INPUT, **(quant or {})}


def manifest_common(ctx: ExportContext) -> dict[str, Any]:
    return {"spec": ctx.spec.to_dict(), "source_checkpoint": ctx.checkpoint}
