"""On-device accuracy with TFLite's `run_eval` (tools/evaluation/tasks/imagenet_image_classification).

The eval set: `write_eval_set` writes test images as raw `.rgb8` files plus the two label files run_eval reads.

What run_eval feeds: its preprocessing is fixed (ImagePreprocessingConfigBuilder::AddDefaultNormalizationStep): a
float32 input gets (pixel - 127.5) / 127.5, an int8 input pixel - 128 and a uint8 input the pixel itself.
`run_eval_feed_problem` decides from the artifact's manifest whether that is what the model expects:

- in-model normalization (`manifest["input"]["normalization"] == "in-model"`, pixel range [0, 255]): the model takes
  raw pixels, so an int8 input with scale 1 and zero point -128 (q = pixel - 128) or a uint8 input with scale 1 and
  zero point 0 matches. A float32 raw-pixel input would get (pixel - 127.5) / 127.5 instead of the pixel: refused.
- older manifests (no such key): the model takes (pixel / 255 - mean) / std, quantized with its input scale and zero
  point; that is compared with what run_eval feeds, within one quantization step.

Delegates (`RUN_EVAL_DELEGATE_FLAGS`): `--delegate=gpu|nnapi` picks run_eval's delegate. XNNPACK is asked for with the
delegate-provider flag `--use_xnnpack=true`, as benchmark_model is, not with `--delegate=xnnpack`: for that one run_eval
also sets `xnnpack_force_fp16` (LiteRT tflite/tools/evaluation/evaluation_delegate_provider.cc,
`DelegateProviders::GetAllParams`, case XNNPACK), so a float model's top-1 would be an FP16 figure beside an FP32
benchmark_model latency (`xnnpack_force_fp16` defaults to false, tools/delegates/xnnpack_delegate_provider.cc). With
none, run_eval still applies XNNPACK: its TfliteInferenceStage builds the interpreter with the default op resolver,
which applies XNNPACK lazily, unless the delegate-provider flag `--use_xnnpack=false` was given
(tflite_inference_stage.cc; the flags are parsed by tasks/task_executor.cc). So "cpu" passes `--use_xnnpack=false`. A
run_eval built before those flags existed ignores it and prints "Unconsumed cmdline flags"; `unconsumed_flags` finds
that line so the runner can say the accuracy was measured with XNNPACK.

On the phone: `device_accuracy` pushes an eval set and run_eval over an `AdbDevice` (`adb.py`), runs it and returns
its top-1; all of run_eval's I/O lives here, `android.py` only calls it.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.core.errors import PacbEdgeError

from .adb import AdbDevice, last_line, shell_join
from .benchmark_model_parser import parse_run_eval_output

log = logging.getLogger(__name__)

RUN_EVAL_TOPK = 10  # run_eval always scores top-10, so it needs at least 10 classes
IN_MODEL = "in-model"
PIXEL_RANGE = [0, 255]
# Raw-pixel quantized inputs run_eval feeds correctly: dtype -> (scale, zero point).
RAW_PIXEL_QUANT: dict[str, tuple[float, int]] = {"int8": (1.0, -128), "uint8": (1.0, 0)}
# Delegate name -> run_eval flags (see the module docstring for "cpu").
RUN_EVAL_DELEGATE_FLAGS: dict[str, tuple[str, ...]] = {
    "cpu": ("--use_xnnpack=false",),
    "xnnpack": ("--use_xnnpack=true",),  # not --delegate=xnnpack, which forces FP16 (see the module docstring)
    "gpu": ("--delegate=gpu",),
    "nnapi": ("--delegate=nnapi",),
}
_UNCONSUMED = re.compile(r"Unconsumed cmdline flags:\s*(?P<flags>.*)$", re.MULTILINE)


@dataclass(frozen=True)
class EvalSet:
    """Test images and labels in the layout `run_eval` reads.

    `images_dir` holds the images (`.rgb8` raw or `.jpg`), evaluated in sorted file-name order; line i of
    `ground_truth_labels` is the label of the i-th image; `model_output_labels` lists the labels in the order
    of the model's output vector (run_eval matches labels as strings).
    """

    images_dir: Path
    ground_truth_labels: Path
    model_output_labels: Path

    def image_files(self) -> list[Path]:
        return sorted(p for p in Path(self.images_dir).iterdir() if p.is_file())


@dataclass
class EvalCheck:
    """What `check_eval_inputs` found: the image count, warnings, and why run_eval would feed wrong inputs."""

    n_images: int
    warnings: list[str] = field(default_factory=list)
    feed_problem: str | None = None


def write_eval_set(
    x: np.ndarray,
    y: np.ndarray,
    out_dir: str | os.PathLike,
    num_classes: int | None = None,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> EvalSet:
    """Write a test array as an `EvalSet`: one `.rgb8` raw image per sample plus the two label files.

    `x` is uint8 raw pixels, N x C x H x W or N x H x W x C (what the bench passes for in-model artifacts), or,
    for legacy artifacts, float N x C x H x W normalized with `mean`/`std`, turned back into pixels. Raw `.rgb8`
    is lossless and already at the model's input size, so run_eval skips its centre crop and resize for it.
    Grayscale is repeated to 3 channels, which run_eval requires. Labels are written as class indices.
    """
    x = np.asarray(x)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if x.ndim != 4 or len(x) != len(y):
        raise PacbEdgeError(f"eval images must be N x C x H x W with one label each, got {x.shape} and {len(y)} labels")
    if len(y) == 0:
        raise PacbEdgeError("the eval set is empty")
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    if k < RUN_EVAL_TOPK:
        raise PacbEdgeError(f"run_eval scores top-{RUN_EVAL_TOPK} and needs at least 10 classes; this set has {k}")
    if y.min() < 0 or y.max() >= k:
        raise PacbEdgeError(f"labels must lie in 0..{k - 1}")
    channels_last = x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
    nhwc = x if channels_last else x.transpose(0, 2, 3, 1)
    if np.issubdtype(nhwc.dtype, np.floating):
        c = nhwc.shape[-1]
        m = np.asarray(mean, dtype=np.float64)[:c] if len(mean) >= c else np.full(c, mean[0])
        s = np.asarray(std, dtype=np.float64)[:c] if len(std) >= c else np.full(c, std[0])
        pixels = np.clip(np.rint((nhwc * s + m) * 255.0), 0, 255).astype(np.uint8)
    else:
        pixels = np.clip(nhwc, 0, 255).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    if pixels.shape[-1] != 3:
        raise PacbEdgeError(f"run_eval needs 1- or 3-channel images, got {pixels.shape[-1]} channels")
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(y) - 1)))
    for i, img in enumerate(pixels):
        (images / f"{i:0{width}d}.rgb8").write_bytes(np.ascontiguousarray(img).tobytes())
    gt = out / "ground_truth_labels.txt"
    gt.write_text("".join(f"{int(v)}\n" for v in y))
    labels = out / "model_output_labels.txt"
    labels.write_text("".join(f"{i}\n" for i in range(k)))
    return EvalSet(images, gt, labels)


def takes_raw_pixels(manifest: Mapping[str, Any]) -> bool:
    """Whether the manifest says the artifact folds its normalization in and takes raw pixel values."""
    inp = manifest.get("input")
    return isinstance(inp, Mapping) and inp.get("normalization") == IN_MODEL


def _mean_std(manifest: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    spec = manifest.get("spec") if isinstance(manifest.get("spec"), Mapping) else {}
    mean = spec.get("mean") or manifest.get("mean")
    std = spec.get("std") or manifest.get("std")
    return (list(mean), list(std)) if mean and std else None


def _feed_mismatch(
    input_dtype: str, scale: float, zero_point: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> str | None:
    """Why run_eval's feed differs from what the model expects; `mean`/`std` None means raw pixels 0..255."""
    p = np.arange(256, dtype=np.float64)[:, None]
    if mean is None or std is None:
        expected = p
        wants = "raw pixels 0..255 (normalization in the model)"
    else:
        expected = (p / 255.0 - np.asarray(mean, dtype=np.float64)[None, :]) / np.asarray(std, dtype=np.float64)[None]
        wants = f"mean={list(mean)} std={list(std)}"
    if input_dtype == "float32":
        if np.abs(expected - (p - 127.5) / 127.5).max() <= 1e-3:
            return None
        return f"run_eval feeds (pixel - 127.5) / 127.5 to a float32 input, but this model expects {wants}"
    if input_dtype in ("int8", "uint8"):
        if not scale or scale <= 0:
            return f"the model's {input_dtype} input has no quantization scale"
        lo, hi = (-128, 127) if input_dtype == "int8" else (0, 255)
        q = np.clip(np.rint(expected / scale) + zero_point, lo, hi)
        fed = p - 128 if input_dtype == "int8" else p
        if np.abs(q - fed).max() <= 1:
            return None
        return (
            f"run_eval feeds {'pixel - 128' if input_dtype == 'int8' else 'the raw pixel'} "
            f"to the model's {input_dtype} input, but this model expects {wants} "
            f"quantized with scale={scale:g} zero_point={zero_point}"
        )
    return f"run_eval supports float32, int8 and uint8 inputs, not {input_dtype}"


def run_eval_feed_problem(manifest: Mapping[str, Any], model_input: Mapping[str, Any] | None = None) -> str | None:
    """Why run_eval's fixed preprocessing would feed this artifact wrong numbers; None when it matches.

    The contract (raw pixels or legacy mean/std) comes from the manifest; the input dtype, scale and zero point
    from `model_input` (read from the .tflite itself, keys input_dtype/input_scale/input_zero_point) when given,
    else from `manifest["input"]`. Raises PacbEdgeError when neither says the input dtype.
    """
    inp = manifest.get("input") if isinstance(manifest.get("input"), Mapping) else {}
    if model_input is not None:
        dtype, scale, zp = model_input["input_dtype"], model_input["input_scale"], model_input["input_zero_point"]
    else:
        dtype, scale, zp = inp.get("dtype"), inp.get("scale"), inp.get("zero_point")
    if not dtype:
        raise PacbEdgeError("neither the model nor its manifest says the input dtype: run_eval's feed is unverified")
    scale, zp = float(scale or 0.0), int(zp or 0)
    if takes_raw_pixels(manifest):
        pixel_range = list(inp.get("pixel_range") or PIXEL_RANGE)
        if pixel_range != PIXEL_RANGE:
            return f"run_eval feeds pixels 0..255, but this model takes pixel values in {pixel_range}"
        return _feed_mismatch(str(dtype), scale, zp, None, None)
    mean_std = _mean_std(manifest)
    if mean_std is None:
        raise PacbEdgeError("no mean/std in the manifest: run_eval's preprocessing is unverified")
    return _feed_mismatch(str(dtype), scale, zp, *mean_std)


def _model_io(tflite_path: Path) -> dict[str, Any] | None:
    """Input dtype/quantization/shape and output shape of a .tflite, read on the host; None if unreadable."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # lazy: heavy, and only needed for device accuracy

        interp = Interpreter(model_path=str(tflite_path))
        inp = interp.get_input_details()
        outp = interp.get_output_details()
    except Exception as e:  # noqa: BLE001 - any failure only means "could not verify"
        log.debug("could not read %s on the host: %s", tflite_path, e)
        return None
    scale, zero_point = inp[0].get("quantization", (0.0, 0))
    return {
        "n_inputs": len(inp),
        "n_outputs": len(outp),
        "input_dtype": np.dtype(inp[0]["dtype"]).name,
        "input_shape": [int(d) for d in inp[0]["shape"]],
        "input_scale": float(scale),
        "input_zero_point": int(zero_point),
        "output_shape": [int(d) for d in outp[0]["shape"]],
    }


def check_eval_inputs(tflite: Path, eval_set: EvalSet, manifest: Mapping[str, Any]) -> EvalCheck:
    """Validate the eval set against the model (raises on a broken set) and whether run_eval feeds it right."""
    for p in (eval_set.images_dir, eval_set.ground_truth_labels, eval_set.model_output_labels):
        if not Path(p).exists():
            raise PacbEdgeError(f"eval set file not found: {p}")
    n_images = len(eval_set.image_files())
    n_labels = len(Path(eval_set.ground_truth_labels).read_text().splitlines())
    n_classes = len(Path(eval_set.model_output_labels).read_text().splitlines())
    if n_images == 0 or n_images != n_labels:
        raise PacbEdgeError(f"eval set has {n_images} images but {n_labels} ground-truth labels")
    if n_classes < RUN_EVAL_TOPK:
        raise PacbEdgeError(f"run_eval scores top-{RUN_EVAL_TOPK} and needs at least 10 classes, got {n_classes}")
    check = EvalCheck(n_images)
    io = _model_io(tflite)
    if io is None:
        check.warnings.append("could not read the model on the host: its input shape and type are unverified")
    else:
        if io["n_inputs"] != 1 or io["n_outputs"] != 1 or len(io["input_shape"]) != 4 or io["input_shape"][-1] != 3:
            raise PacbEdgeError(
                f"run_eval needs one NHWC 3-channel input and one output; this model has input {io['input_shape']}"
            )
        first = eval_set.image_files()[0]
        _, height, width, _ = io["input_shape"]
        if first.suffix.lower() == ".rgb8" and first.stat().st_size != height * width * 3:
            raise PacbEdgeError(
                f"{first.name} holds {first.stat().st_size} bytes but the model takes {height}x{width}x3: "
                "raw .rgb8 images must already be at the model's input size"
            )
        if io["output_shape"][-1] != n_classes:
            raise PacbEdgeError(
                f"the model has {io['output_shape'][-1]} outputs but model_output_labels lists {n_classes} classes"
            )
    try:
        check.feed_problem = run_eval_feed_problem(manifest, io)
    except PacbEdgeError as e:  # the contract cannot be checked: measure, but say so
        check.warnings.append(str(e))
    return check


def unconsumed_flags(output: str) -> list[str]:
    """The flags run_eval reported it did not understand ("Unconsumed cmdline flags: ...")."""
    return [flag for m in _UNCONSUMED.finditer(output) for flag in m.group("flags").split()]


def device_accuracy(
    adb: AdbDevice,
    serial: str,
    eval_binary: Path,
    remote_model: str,
    eval_set: EvalSet,
    threads: int,
    delegate: str,
    taskset: str | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Push the eval set, run run_eval on the phone, return {"top1", "n", ..., "command", "unconsumed_flags"}.

    `remote_model` is already on the phone; `delegate` is a key of `RUN_EVAL_DELEGATE_FLAGS`; `timeout_s` bounds
    the image pushes and run_eval itself (default: the device's `timeout_s`).
    """
    limit = adb.timeout_s if timeout_s is None else timeout_s
    remote_eval = adb.remote("eval_set")
    remote_images = posixpath.join(remote_eval, "images")
    adb.shell(serial, ["rm", "-rf", remote_eval], "shell rm")
    adb.shell(serial, ["mkdir", "-p", remote_images], "shell mkdir")
    files = [str(p) for p in eval_set.image_files()]
    for start in range(0, len(files), 200):  # several files per push, few enough for any argv limit
        chunk = files[start : start + 200]
        adb.run(["push", *chunk, remote_images + "/"], "push eval images", timeout=limit, serial=serial)
    remote_gt = posixpath.join(remote_eval, "ground_truth_labels.txt")
    remote_labels = posixpath.join(remote_eval, "model_output_labels.txt")
    remote_metrics = posixpath.join(remote_eval, "metrics.txt")
    adb.run(["push", str(eval_set.ground_truth_labels), remote_gt], "push labels", serial=serial)
    adb.run(["push", str(eval_set.model_output_labels), remote_labels], "push labels", serial=serial)
    remote_run_eval = adb.push_binary(serial, Path(eval_binary))
    argv = ["taskset", taskset] if taskset else []
    argv += [
        remote_run_eval,
        f"--model_file={remote_model}",
        f"--ground_truth_images_path={remote_images}",
        f"--ground_truth_labels={remote_gt}",
        f"--model_output_labels={remote_labels}",
        f"--output_file_path={remote_metrics}",
        "--num_images=0",
        f"--num_interpreter_threads={threads}",
    ]
    argv += RUN_EVAL_DELEGATE_FLAGS[delegate]
    done = adb.shell(serial, argv, "shell run_eval", timeout=limit, check=False, merge_stderr=True)
    result = parse_run_eval_output(done.stdout)
    if result is None:  # older run_eval: metrics only in the text proto it writes
        cat = adb.shell(serial, ["cat", remote_metrics], "shell cat", check=False)
        result = parse_run_eval_output(cat.stdout) if cat.returncode == 0 else None
    if result is None:
        errors = [ln for ln in done.stdout.splitlines() if "ERROR" in ln]
        detail = last_line("\n".join(errors), done.stdout) or f"exit code {done.returncode}"
        raise PacbEdgeError(f"run_eval gave no top-1 accuracy: {detail}")
    result["command"] = shell_join(argv)
    result["unconsumed_flags"] = unconsumed_flags(done.stdout)
    return result
