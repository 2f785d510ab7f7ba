"""ONNX export: eval mode, RepVGG re-parameterized, simplified with onnxsim, spec in `metadata_props`, and a parity
check with onnxruntime against PyTorch on real test images."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_path
from pacb_edge.export.context import (
    PIXEL_RANGE,
    ExportContext,
    ExportFormat,
    input_info,
    manifest_common,
)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_FP32_AGREEMENT = 0.999


# What every exported artifact's manifest says about its input: raw pixels, normalized inside the graph.


def deployable(model):
    """A copy of `model` in eval mode with RepVGG branches fused (what every exported artifact runs)."""
    import copy

    model = copy.deepcopy(model).cpu().eval()
    if hasattr(model, "reparameterize"):
        model.reparameterize()
    return model


def pixel_input(model, spec):
    """`model` behind its own preprocessing: it takes raw pixels (float 0-255, NCHW) and normalizes them itself.

    `(x / 255 - mean) / std` becomes one per-channel multiply and add in front of the network, so every exported
    artifact (ONNX, TFLite, TensorRT) is fed the camera's pixels as they are: no mean/std on the device, and the
    INT8 TFLite takes them with scale 1.
    """
    import torch
    from torch import nn

    class PixelInput(nn.Module):
        takes_raw_pixels = True

        def __init__(self, net, mean, std) -> None:
            super().__init__()
            self.net = net
            mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
            self.register_buffer("scale", 1.0 / (255.0 * std_t))
            self.register_buffer("shift", -mean_t / std_t)

        def forward(self, x):
            return self.net(x * self.scale + self.shift)

    mean, std = tuple(spec.mean), tuple(spec.std)
    if len(mean) != spec.in_chans:
        mean, std = mean[:1] * spec.in_chans, std[:1] * spec.in_chans
    return PixelInput(model, mean, std).eval()


def export_onnx(
    model, spec, path: str | Path, opset: int = 17, dynamic_batch: bool = False, simplify: bool = True
) -> Path:
    """Write `model` (already deployable) as ONNX with the spec in its metadata; returns the path.

    The file takes raw pixels (float 0-255): a model that does not yet normalize its input is wrapped with
    `pixel_input` first.
    """
    import onnx
    import torch

    if not 11 <= opset <= 21:
        raise PacbEdgeError(f"--opset must be between 11 and 21, got {opset}")
    if not getattr(model, "takes_raw_pixels", False):
        model = pixel_input(model, spec)
    path = Path(path)
    x = torch.zeros(1, spec.in_chans, spec.input_size, spec.input_size)
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with atomic_path(path) as tmp:
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )
        proto = onnx.load(str(tmp))
        if simplify:
            import onnxsim

            simplified, ok = onnxsim.simplify(proto)
            if ok:
                proto = simplified
        spec_dict = spec.to_dict()
        meta = {
            "pacb_edge.spec": json.dumps(spec_dict, sort_keys=True),
            "class_names": json.dumps(spec_dict["class_names"]),
            "mean": json.dumps(spec_dict["mean"]),
            "std": json.dumps(spec_dict["std"]),
            "input_layout": "NCHW",
            "input_pixel_range": json.dumps(list(PIXEL_RANGE)),
            "input_normalization": "in-model",
        }
        del proto.metadata_props[:]
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return path


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session. With `threads`, its pool has that many threads that sleep when idle instead of
    spinning: an interleaved bench keeps several sessions alive, and spinning pools would time each other."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise PacbEdgeError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:200]}") from None


def onnx_logits(path: str | Path, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of an ONNX file for NCHW float32 inputs (batch 1 at a time unless the file has a dynamic batch)."""
    sess = onnx_session(path)
    inp = sess.get_inputs()[0]
    fixed = isinstance(inp.shape[0], int)
    step = 1 if fixed else batch_size
    outs = [sess.run(None, {inp.name: x[i : i + step]})[0] for i in range(0, len(x), step)]
    return np.concatenate(outs, 0)


def torch_logits(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate(
            [model(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)], 0
        )


def compare_logits(got: np.ndarray, reference: np.ndarray, y: np.ndarray | None = None) -> dict[str, Any]:
    """Max abs diff, top-1 agreement with the reference, and top-1 accuracy when labels are given."""
    pred = got.argmax(1)
    result: dict[str, Any] = {
        "n": int(len(got)),
        "max_abs_diff": float(np.abs(got.astype(np.float64) - reference).max()) if len(got) else 0.0,
        "top1_agreement": float((pred == reference.argmax(1)).mean()) if len(got) else 1.0,
    }
    if y is not None:
        result["top1"] = float((pred == y).mean()) if len(y) else 0.0
        result["reference_top1"] = float((reference.argmax(1) == y).mean()) if len(y) else 0.0
    return result


def verify_onnx(path: str | Path, model, x: np.ndarray, y: np.ndarray, min_agreement: float = MIN_FP32_AGREEMENT):
    """Parity of the ONNX file with PyTorch on real images; raises `PacbEdgeError` under `min_agreement`."""
    result = compare_logits(onnx_logits(path, x), torch_logits(model, x), y)
    if result["top1_agreement"] < min_agreement:
        raise PacbEdgeError(
            f"ONNX parity check failed: top-1 agreement with PyTorch {100 * result['top1_agreement']:.2f} % "
            f"< {100 * min_agreement:.1f} % (max abs diff {result['max_abs_diff']:.2e})"
        )
    return result


# ----------------------------------------------------------------------------------------------------------------------
# The ONNX format's row


def onnx_file(ctx: ExportContext, opset: int | None = None) -> Path:
    """Export (once per opset) the ONNX file every format starts from; `--opset` unless one is given."""
    opset = ctx.opset if opset is None else opset
    if opset not in ctx.onnx_files:
        name = "model.onnx" if opset == ctx.opset else f".model_opset{opset}.onnx"
        ctx.onnx_files[opset] = export_onnx(
            ctx.model, ctx.spec, ctx.staging / name, opset=opset, dynamic_batch=ctx.dynamic_batch
        )
    return ctx.onnx_files[opset]


def export_target(ctx: ExportContext, precisions: tuple[str, ...]) -> list[dict[str, Any]]:
    from pacb_edge.export.manifest import tool_versions, write_manifest

    t0 = time.perf_counter()
    path = onnx_file(ctx)
    seconds = time.perf_counter() - t0
    verification = verify_onnx(path, ctx.model, ctx.x_test, ctx.y_test, MIN_FP32_AGREEMENT)
    verification["torch_top1"] = ctx.torch_top1
    write_manifest(
        path,
        fmt="onnx",
        precision="fp32",
        input_info=input_info(ctx.spec),
        output_info={"name": "logits", "shape": [1, ctx.spec.num_classes]},
        verification=verification,
        tools=tool_versions("torch", "onnx", "onnxsim", "onnxruntime"),
        extra={
            "export_seconds": seconds,
            "opset": ctx.opset,
            "dynamic_batch": ctx.dynamic_batch,
            "model": ctx.model_facts,
        },
        **manifest_common(ctx),
    )
    return [
        {"path": path, "format": "onnx", "precision": "fp32", "verification": verification, "export_seconds": seconds}
    ]


FORMAT = ExportFormat("onnx", ".onnx", ("fp32",), False, export_target, ("fp32",), options=("dynamic_batch",))
