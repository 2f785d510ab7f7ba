"""TFLite export: ONNX → onnx2tf → FP32 and FP16 `.tflite` plus a SavedModel, which TFLite's converter (with its
quantization debugger, `tflite_quant`) turns into INT8 calibrated on the user's own images only; and host-side
evaluation with the LiteRT interpreter.

onnx2tf is run offline in a fresh working folder: the sample file it would otherwise download (20 COCO images) is
written there from our calibration images first, our images are also passed explicitly as its input data, and its
download function is swapped for one that can only read that local file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_bytes, ensure_dir
from pacb_edge.core.runtimes import PRECISIONS
from pacb_edge.export.context import ExportContext, ExportFormat, input_info, manifest_common

if TYPE_CHECKING:
    from pacb_edge.export.tflite_quant import Int8Calibration

# The file onnx2tf reads from its working folder instead of downloading 20 MS-COCO images.
ONNX2TF_SAMPLE_DATA = "calibration_image_sample_data_20x128x128x3_float32.npy"
# What onnx2tf 1.28 names its outputs for an input file called `model.onnx` (INT8 is made here, from its SavedModel).
ONNX2TF_OUTPUTS = {"fp32": "model_float32.tflite", "fp16": "model_float16.tflite"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def convert_onnx_to_tflite(
    onnx_path: str | Path,
    out_dir: str | Path,
    calibration_images: np.ndarray,
    precisions: Sequence[str] = PRECISIONS,
    stem: str = "model",
    choose_int8: Callable[[Int8Calibration, Path], bytes] | None = None,
) -> dict[str, Path]:
    """Convert a batch-1 NCHW float32 ONNX file to TFLite with onnx2tf, offline.

    INT8 is full-integer (int8 input and output, per-channel weights) and calibrated on `calibration_images`
    (float32 N×C×H×W, exactly as the model takes them) and nothing else, once; `choose_int8(calibration, work_dir)`
    may return other INT8 bytes from that calibration (e.g. mixed precision, `tflite_quant.fit_int8_budget`), the
    default is full INT8. Writes `{stem}_{precision}.tflite` into `out_dir` atomically and returns them by
    precision; on failure raises a one-line `PacbEdgeError` and leaves no `.tflite` of this call behind.
    """
    precisions = tuple(dict.fromkeys(precisions))
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise PacbEdgeError(f"unknown TFLite precision(s) {unknown or '(none)'}; choose from {', '.join(PRECISIONS)}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise PacbEdgeError(f"ONNX file not found: {onnx_path}")
    calibration_images = np.asarray(calibration_images)
    if calibration_images.ndim != 4 or len(calibration_images) == 0:
        raise PacbEdgeError(
            f"calibration images must be a non-empty N×C×H×W array, got shape {tuple(calibration_images.shape)}"
        )
    if not np.isfinite(calibration_images).all():
        raise PacbEdgeError("calibration images contain NaN or infinite values")
    out_dir = ensure_dir(out_dir)
    input_name, dynamic_batch = _check_onnx(onnx_path, calibration_images.shape[1:])
    calibration_nhwc = np.ascontiguousarray(calibration_images.transpose(0, 2, 3, 1), dtype=np.float32)

    with tempfile.TemporaryDirectory(prefix="pacb_onnx2tf_") as tmp:
        work = Path(tmp)
        model_onnx = work / "model.onnx"  # onnx2tf rewrites its input file in place and names outputs after it
        _simplify_copy(onnx_path, model_onnx)
        calibration_npy = work / "calibration_nhwc.npy"
        np.save(calibration_npy, calibration_nhwc)
        np.save(work / ONNX2TF_SAMPLE_DATA, calibration_nhwc[:20])
        # An (empty) replacement file also turns off onnx2tf's slow "auto JSON" search after a failure.
        (work / "param_replacement.json").write_text(json.dumps({"operations": []}))
        kwargs = {
            "input_onnx_file_path": str(model_onnx),
            "output_folder_path": str(work / "saved_model"),
            # A SavedModel with its signature for TFLite's converter; no `-oiqt` (and none of its int16 variants).
            "output_signaturedefs": True,
            "custom_input_op_name_np_data_path": [[input_name, str(calibration_npy), 0.0, 1.0]],
            "not_use_onnxsim": True,
            "param_replacement_file": str(work / "param_replacement.json"),
            "verbosity": "warn",  # captured to a log; warnings carry the reason when a conversion fails
        }
        if dynamic_batch:
            kwargs["batch_size"] = 1  # TFLite for the phone is batch 1
        log = work / "onnx2tf.log"
        try:
            _run_onnx2tf(kwargs, work, log)
        except PacbEdgeError:
            raise
        except (Exception, SystemExit) as e:  # onnx2tf calls sys.exit(1) on some errors
            raise PacbEdgeError(_failure_message(onnx_path, model_onnx, e, _read_log(log))) from None

        produced = {p: work / "saved_model" / ONNX2TF_OUTPUTS[p] for p in precisions if p in ONNX2TF_OUTPUTS}
        missing = [p for p, f in produced.items() if not f.is_file()]
        if "int8" in precisions and not (work / "saved_model" / "saved_model.pb").is_file():
            missing.append("int8")
        if missing:
            text = _read_log(log)
            detail = _first_error_line(text) or _last_exception_line(text)
            raise PacbEdgeError(
                f"onnx2tf produced no {'/'.join(missing)} TFLite file for {onnx_path.name}"
                + (f": {detail}" if detail else "")
            )
        data = {p: f.read_bytes() for p, f in produced.items()}
        if "int8" in precisions:
            data["int8"] = _quantize_int8(work, calibration_nhwc, choose_int8, onnx_path.name)
        written: dict[str, Path] = {}
        try:
            for precision in precisions:
                written[precision] = atomic_write_bytes(out_dir / f"{stem}_{precision}.tflite", data[precision])
        except BaseException:
            for path in written.values():
                path.unlink(missing_ok=True)
            raise
    return written


def time_tflite(
    paths: Sequence[str | Path], num_threads: int | None = None, runs: int = 50, warmup: int = 5
) -> dict[str, float]:
    """Per-image p50 latency (ms, batch 1) of each `.tflite` file on the host, interleaved (`time_interleaved`).

    Every file gets the same thread count and a zero input of its own type; returns {path: p50 ms}.
    """
    from pacb_edge.export.runners import LiteRTRunner, time_interleaved

    runners = [LiteRTRunner(p, num_threads).load() for p in paths]
    try:
        calls = {}
        for p, r in zip(paths, runners, strict=True):
            zero = np.zeros(r.inp["shape"], dtype=r.inp["dtype"])
            calls[str(p)] = lambda r=r, zero=zero: r.run_prepared(zero)
        samples = time_interleaved(calls, warmup=warmup, runs=runs)
    finally:
        for r in runners:
            r.close()
    return {key: float(np.median(t)) for key, t in samples.items()}


def pin_input_range(images: np.ndarray, low: float, high: float) -> np.ndarray:
    """`images` whose overall min and max are `low` and `high` (a copy if a pixel had to change).

    The converter derives the INT8 input's scale and zero point from the calibration data's min and max. For
    raw 0-255 pixels we want exactly scale 1 and zero point -128 (`q = pixel - 128`, what TFLite's `run_eval`
    and any camera pipeline feed), so one calibration image gets one pixel at `low` and one at `high` when the
    data does not reach them already. Two pixels of one image barely move any activation range.
    """
    images = np.asarray(images, dtype=np.float32)
    if len(images) == 0 or (images.min() <= low and images.max() >= high):
        return images
    pinned = images.copy()
    flat = pinned[0].reshape(-1)
    if images.min() > low:
        flat[0] = low
    if images.max() < high:
        flat[-1] = high
    return pinned


def tflite_io_details(path: str | Path) -> dict[str, Any]:
    """Name, shape, layout, dtype and (scale, zero_point) of the input and output tensor of a `.tflite` file.

    Scale and zero point are None for float tensors. onnx2tf turns a 4-D NCHW input into NHWC.
    """
    interpreter = _interpreter(path)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    return {"input": _tensor_info(inp, with_layout=True), "output": _tensor_info(out)}


def evaluate_tflite(
    path: str | Path,
    x_nchw: np.ndarray,
    y: np.ndarray | None = None,
    num_threads: int | None = None,
    reference_logits: np.ndarray | None = None,
    return_logits: bool = False,
) -> dict[str, Any]:
    """Run a `.tflite` file on the host (LiteRT with its default XNNPACK delegate), one NCHW float32 image at a time.

    Images are transposed to the file's layout; quantized inputs and outputs use the file's own scale and zero
    point. Returns `n`, `predictions` and, when `y` is given, `top1`; with `reference_logits` (e.g. PyTorch FP32,
    N×K) also `top1_agreement` and `max_abs_diff` of the dequantized outputs; `logits` if `return_logits`.
    """
    x_nchw = np.asarray(x_nchw, dtype=np.float32)
    if x_nchw.ndim != 4:
        raise PacbEdgeError(f"evaluate_tflite expects N×C×H×W images, got shape {tuple(x_nchw.shape)}")
    from pacb_edge.export.runners import LiteRTRunner

    n = len(x_nchw)
    with LiteRTRunner(path, num_threads) as runner:
        logits = runner.infer(x_nchw).reshape(n, -1) if n else np.zeros((0, 0), np.float32)
    predictions = logits.argmax(1) if logits.shape[1] else np.zeros(n, np.int64)
    report: dict[str, Any] = {"n": int(n), "predictions": predictions}
    if y is not None:
        report["top1"] = float((predictions == np.asarray(y)).mean()) if n else 0.0
    if reference_logits is not None:
        from pacb_edge.export.onnx import compare_logits

        reference_logits = np.asarray(reference_logits, dtype=np.float32)
        if reference_logits.shape != logits.shape:
            raise PacbEdgeError(
                f"reference logits have shape {reference_logits.shape}, {Path(path).name} gives {logits.shape}"
            )
        report.update(compare_logits(logits, reference_logits, y))
    if return_logits:
        report["logits"] = logits
    return report


# --- helpers -----------------------------------------------------------------------------------------------------


def _check_onnx(onnx_path: Path, chw: tuple[int, ...]) -> tuple[str, bool]:
    """Name of the ONNX file's single N×C×H×W input and whether its batch is dynamic; a `PacbEdgeError` if it
    cannot be our kind of model."""
    import onnx

    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:
        raise PacbEdgeError(f"cannot read ONNX file {onnx_path}: {_one_line(e)}") from None
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise PacbEdgeError(f"{onnx_path.name} must have exactly one input, it has {len(inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or list(dims[1:]) != list(chw):
        raise PacbEdgeError(
            f"{onnx_path.name} input {inputs[0].name!r} has shape {dims}; calibration images are C×H×W {list(chw)}"
        )
    return inputs[0].name, not isinstance(dims[0], int) or dims[0] < 1


def _simplify_copy(src: Path, dst: Path) -> None:
    """Copy `src` to `dst`, simplified in-process (onnx2tf's own onnxsim step shells out to whatever is on PATH)."""
    import onnx

    shutil.copyfile(src, dst)
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(onnx.load(str(dst)))
        if ok:
            onnx.save(simplified, str(dst))
    except Exception:  # simplification is an optimization; onnx2tf reports real problems itself
        pass


@contextlib.contextmanager
def _captured_output(log: Path) -> Iterator[None]:
    """Send Python and C-level stdout/stderr to `log` (onnx2tf and the TFLite converter are very chatty)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            f.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _offline_sample_data() -> Iterator[None]:
    """Make onnx2tf's `download_test_image_data` read only the sample file in the current folder, never the network."""
    import onnx2tf.onnx2tf as onnx2tf_main
    import onnx2tf.utils.common_functions as onnx2tf_common

    original = onnx2tf_common.download_test_image_data

    def local_only() -> np.ndarray:
        path = Path.cwd() / ONNX2TF_SAMPLE_DATA
        if not path.is_file():
            raise PacbEdgeError(f"onnx2tf wanted to download its sample images: {path} is missing")
        return original()  # reads the local file when it exists

    patched = [(m, m.download_test_image_data) for m in (onnx2tf_main, onnx2tf_common)]
    for module, _ in patched:
        module.download_test_image_data = local_only
    try:
        yield
    finally:
        for module, function in patched:
            module.download_test_image_data = function


def _import_onnx2tf():
    """Import onnx2tf (and TensorFlow), loading torch's triton extension first when torch is in use.

    With torch 2.14 and TensorFlow 2.21 in one process, triton's native library segfaults when it is loaded after
    TensorFlow's, and torch loads it lazily (the first `torch.optim` optimizer, `torch.compile`, ...).
    """
    if "torch" in sys.modules and "tensorflow" not in sys.modules:
        with contextlib.suppress(Exception):
            import torch._dynamo  # noqa: F401  (imports triton when it is installed)
    import onnx2tf

    return onnx2tf


def _run_onnx2tf(kwargs: dict[str, Any], work: Path, log: Path) -> None:
    """Call `onnx2tf.convert(**kwargs)` inside `work`, quietly, offline; cwd and environment are restored."""
    if not (work / ONNX2TF_SAMPLE_DATA).is_file():
        raise PacbEdgeError(f"calibration sample file missing in {work}")
    cwd = os.getcwd()
    cuda_visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # onnx2tf sets it to -1
    try:
        os.chdir(work)
        with _captured_output(log):
            onnx2tf = _import_onnx2tf()  # inside the capture: importing TensorFlow logs to the terminal
            with _offline_sample_data():
                onnx2tf.convert(**kwargs)
    finally:
        os.chdir(cwd)
        if cuda_visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible
        with contextlib.suppress(Exception):
            import tf_keras

            tf_keras.backend.clear_session()


def _quantize_int8(
    work: Path,
    calibration_nhwc: np.ndarray,
    choose_int8: Callable[[Int8Calibration, Path], bytes] | None,
    onnx_name: str,
) -> bytes:
    """Calibrate onnx2tf's SavedModel once and return the INT8 bytes (`choose_int8`'s, or full INT8)."""
    from pacb_edge.export.tflite_quant import Int8Calibration

    log = work / "int8.log"
    try:
        with _captured_output(log):  # TensorFlow's converter logs to the C-level stderr
            calibration = Int8Calibration(work / "saved_model", calibration_nhwc)
            return choose_int8(calibration, work) if choose_int8 else calibration.quantize()
    except PacbEdgeError:
        raise
    except Exception as e:
        detail = _last_exception_line(_read_log(log)) or _one_line(e)
        raise PacbEdgeError(f"INT8 quantization of {onnx_name} failed: {detail}") from None


def _read_log(log: Path) -> str:
    try:
        return _ANSI.sub("", log.read_text(errors="replace"))
    except OSError:
        return ""


def _first_error_line(text: str) -> str:
    """The first of onnx2tf's own `ERROR:` lines (the ones after it are generic advice)."""
    for line in text.splitlines():
        message = line.strip()[len("ERROR:") :].strip() if line.strip().startswith("ERROR:") else ""
        if message and not message.startswith("The trace log is below"):
            return " ".join(message.split())[:200]
    return ""


def _last_exception_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if re.match(r"^\w+(Error|Exception): ", ln.strip())]
    return " ".join(lines[-1].split())[:200] if lines else ""


def _failure_message(onnx_path: Path, model_onnx: Path, exc: BaseException, log_text: str) -> str:
    """One line: which ONNX op onnx2tf failed on (when known) and why."""
    op_name = getattr(exc, "onnx_op_name", None)
    if op_name is None:
        names = re.findall(r"onnx_op_name: (\S+)", log_text)
        op_name = names[-1] if names else None
    where = ""
    if op_name:
        op_name = re.sub("^wa/", "/", op_name)
        op_type = _op_type(model_onnx, op_name)
        where = f" at ONNX op {op_type} {op_name!r}" if op_type else f" at ONNX op {op_name!r}"
    else:
        types = re.findall(r"(\w+) OP is not yet implemented", log_text)
        if types:
            where = f" at ONNX op {types[-1]} (not supported by onnx2tf)"
    if isinstance(exc, SystemExit) or not str(exc).strip():
        reason = _first_error_line(log_text) or type(exc).__name__
    elif isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("onnx2tf.ops."):
        reason = f"onnx2tf has no converter for {exc.name.rsplit('.', 1)[-1]}"
    else:
        reason = f"{type(exc).__name__}: {_one_line(exc)}"
    return f"onnx2tf could not convert {onnx_path.name}{where}: {reason}"[:400]


def _op_type(model_onnx: Path, op_name: str) -> str | None:
    with contextlib.suppress(Exception):
        import onnx

        for node in onnx.load(str(model_onnx), load_external_data=False).graph.node:
            if node.name in (op_name, re.sub("^/", "wa/", op_name)):
                return node.op_type
    return None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] or type(e).__name__


def _interpreter(path: str | Path, num_threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    if not path.is_file():
        raise PacbEdgeError(f"TFLite file not found: {path}")
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except Exception as e:
        raise PacbEdgeError(f"LiteRT cannot load {path}: {_one_line(e)}") from None
    return interpreter


def _scale_zero_point(detail: dict[str, Any]) -> tuple[float | None, int | None]:
    scale, zero_point = detail["quantization"]
    if not scale:
        return None, None
    return float(scale), int(zero_point)


def _tensor_info(detail: dict[str, Any], with_layout: bool = False) -> dict[str, Any]:
    shape = [int(s) for s in detail["shape"]]
    info: dict[str, Any] = {"name": detail["name"], "shape": shape}
    if with_layout and len(shape) == 4:
        info["layout"] = "NHWC" if shape[3] <= shape[1] else "NCHW"
    scale, zero_point = _scale_zero_point(detail)
    info.update({"dtype": np.dtype(detail["dtype"]).name, "scale": scale, "zero_point": zero_point})
    return info


# ----------------------------------------------------------------------------------------------------------------------
# The TFLite format's row: FP32, FP16 and INT8 files, INT8 with the per-layer report and the mixed-precision budget

INT8_REPORT_NAME = "model_int8_quant_report.json"  # beside model_int8.tflite, with a .png of the worst layers
DEBUG_IMAGES = 64  # calibration images the per-layer INT8 report runs on
LATENCY_RUNS = 50  # interleaved timed runs of the mixed and the full-INT8 model


def export_target(ctx: ExportContext, precisions: tuple[str, ...]) -> list[dict[str, Any]]:
    from pacb_edge.export.manifest import tool_versions, write_manifest
    from pacb_edge.export.onnx import onnx_file

    calibration = ctx.calibration() if "int8" in precisions else ctx.x_test[:1]
    calibration = pin_input_range(calibration, 0.0, 255.0)  # the INT8 input then takes pixels with scale 1
    onnx_path = onnx_file(ctx)
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
            input_info=input_info(ctx.spec, inp.get("layout", "NHWC"), inp.get("dtype", "float32"), quant),
            output_info=r["io"]["output"],
            verification=r["verification"],
            tools=tool_versions("torch", "onnx", "onnx2tf", "tensorflow", "ai-edge-litert"),
            extra=extra,
            **manifest_common(ctx),
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


FORMAT = ExportFormat(
    "tflite",
    ".tflite",
    PRECISIONS,
    False,
    export_target,
    PRECISIONS,
    options=("int8_budget", "int8_float_ops", "max_int8_drop", "allow_drop"),
)
