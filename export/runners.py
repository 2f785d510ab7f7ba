"""Host runners (Polygraphy's runner contract), one class per backend, and the one timing routine.

A runner is a context manager: `with runner_for(path, threads) as r: logits = r.infer(batch)` loads on entry and
closes on exit, whether or not the body raised. `load()` / `close()` stay for callers that hold many at once.
Export verification (`export.tflite.evaluate_tflite`, `time_tflite`) and the host bench use the same runners and
`time_interleaved`.

- `TorchRunner`: a checkpoint (safetensors + spec), in eval mode with RepVGG fused, as it is exported.
- `OnnxRuntimeRunner`: an .onnx file on the CPU execution provider.
- `LiteRTRunner`: a .tflite file with the ai-edge-litert Interpreter (XNNPACK), NHWC and int8 handled from the
  file's own quantization parameters.

`infer` takes NCHW float32 raw pixels (0-255) and returns float32 logits, so every runner is fed the same real test
images; each artifact normalizes them in its own graph (a checkpoint is wrapped the same way). Files exported before
raw-pixel inputs take normalized images instead (the bench reads which from the manifest).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.core.errors import PacbEdgeError


class HostRunner:
    """Base: subclasses set `fmt`, `runner` and implement `load`, `infer_one`."""

    fmt = "?"
    runner = "?"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        self.precision: str | None = None

    def load(self) -> HostRunner:
        raise NotImplementedError

    def infer_one(self, x: np.ndarray) -> np.ndarray:
        """Logits (1 x K) for one NCHW image (1 x C x H x W)."""
        raise NotImplementedError

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.concatenate([self.infer_one(batch[i : i + 1]) for i in range(len(batch))], 0)

    def close(self) -> None:
        pass

    def __enter__(self) -> HostRunner:
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()


class TorchRunner(HostRunner):
    fmt = "torch"
    runner = "torch"

    def load(self) -> TorchRunner:
        import torch

        from pacb_edge.export.onnx import deployable, pixel_input
        from pacb_edge.training.checkpoint import load_checkpoint

        model, self.spec = load_checkpoint(self.path)
        self.model = pixel_input(deployable(model), self.spec)  # raw pixels in, like every exported artifact
        self.precision = "fp32"
        if self.threads:
            torch.set_num_threads(self.threads)
        self._torch = torch
        return self

    def infer_one(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(x)).numpy()


class OnnxRuntimeRunner(HostRunner):
    fmt = "onnx"
    runner = "onnxruntime"

    def load(self) -> OnnxRuntimeRunner:
        from pacb_edge.export.onnx import onnx_session

        self.session = onnx_session(self.path, self.threads)
        self.input_name = self.session.get_inputs()[0].name
        self.precision = "fp32"
        return self

    def infer_one(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class LiteRTRunner(HostRunner):
    fmt = "tflite"
    runner = "litert"

    def load(self) -> LiteRTRunner:
        from ai_edge_litert.interpreter import Interpreter

        if not self.path.is_file():
            raise PacbEdgeError(f"TFLite file not found: {self.path}")
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
            self.interpreter.allocate_tensors()
        except Exception as e:  # LiteRT raises ValueError, RuntimeError or its own types for a bad file
            lines = str(e).strip().splitlines() or [type(e).__name__]
            raise PacbEdgeError(f"LiteRT cannot load {self.path}: {lines[0][:200]}") from None
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]
        dtype = np.dtype(self.inp["dtype"])
        if np.issubdtype(dtype, np.integer) and not self.inp["quantization"][0]:
            raise PacbEdgeError(f"{self.path.name} has an {dtype.name} input without quantization parameters")
        self.precision = "int8" if dtype == np.int8 else ("fp16" if "fp16" in self.path.name else "fp32")
        return self

    def layout(self, x: np.ndarray) -> str:
        """NHWC or NCHW: which of the two the file's input shape is for these NCHW images."""
        shape = tuple(int(s) for s in self.inp["shape"])
        n, c, h, w = x.shape
        if shape[1:] == (h, w, c):
            return "NHWC"
        if shape[1:] == (c, h, w):
            return "NCHW"
        raise PacbEdgeError(f"{self.path.name} expects input shape {list(shape)}, images are {[n, c, h, w]} (NCHW)")

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """NCHW float -> the file's own input layout and dtype (quantized with its scale and zero point)."""
        if self.layout(x) == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        dtype = np.dtype(self.inp["dtype"])
        if dtype in (np.int8, np.uint8):
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return np.ascontiguousarray(x.astype(dtype))

    def run_prepared(self, prepared: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.inp["index"], prepared)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.out["index"])
        if np.dtype(self.out["dtype"]) in (np.int8, np.uint8):
            scale, zero = self.out["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out.astype(np.float32)

    def infer_one(self, x: np.ndarray) -> np.ndarray:
        return self.run_prepared(self.prepare(x))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The whole batch brought to the file's layout and dtype once, then run one image at a time."""
        prepared = self.prepare(batch)
        return np.concatenate([self.run_prepared(prepared[i : i + 1]) for i in range(len(batch))], 0)


RUNNERS: dict[str, type[HostRunner]] = {
    ".onnx": OnnxRuntimeRunner,
    ".tflite": LiteRTRunner,
    ".safetensors": TorchRunner,
}


def runner_for(path: str | Path, threads: int | None = None) -> HostRunner:
    """The host runner for an artifact, chosen by its suffix (a run or stage folder means a torch checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise PacbEdgeError(f"artifact {p} does not exist")
    if p.is_dir():
        return TorchRunner(p, threads)
    cls = RUNNERS.get(p.suffix.lower())
    if cls is None:
        raise PacbEdgeError(f"artifact {p.name} has an unknown format; expected one of {', '.join(RUNNERS)}")
    return cls(p, threads)


BLOCK = 4  # runs of one artifact in a row per round; the first is untimed (see `time_interleaved`)


def time_interleaved(
    calls: dict[str, Callable[[], Any]], warmup: int, runs: int, min_time: float = 0.0, block: int = BLOCK
) -> dict[str, list[float]]:
    """Per-call latencies in ms, the calls interleaved round by round so machine drift cancels in their ratios.

    Each call gets `warmup` untimed runs. Then every round runs each call `block` times in a row and times all but
    the first (with `block=1`, the one run is timed), until each call has at least `runs` samples and `min_time`
    seconds passed; each round starts one call further on, so every call takes every position equally often.

    Why blocks: a model run right after another model pays for cold caches and waking threads. At 32x32 on a 2-core
    VM that first run took up to twice the steady-state time (onnxruntime, MobileNetV3-L x0.5), which squeezes the
    ratios between artifacts towards 1; a deployed model runs back to back. Why the rotation: in a fixed order the
    first call of a round measured up to 8 % slower than the last one, for the same model.
    """
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    keys = list(calls)
    timed = max(1, block - 1) if block > 1 else 1
    samples: dict[str, list[float]] = {k: [] for k in keys}
    start = time.perf_counter()
    rounds = 0
    while rounds * timed < runs or (time.perf_counter() - start) < min_time:
        shift = rounds % len(keys) if keys else 0
        for key in keys[shift:] + keys[:shift]:
            fn = calls[key]
            for j in range(block):
                t0 = time.perf_counter()
                fn()
                if block == 1 or j > 0:
                    samples[key].append((time.perf_counter() - t0) * 1e3)
        rounds += 1
    if min_time <= 0:  # exactly `runs` samples each, as asked (the last round may time a few more)
        samples = {k: v[:runs] for k, v in samples.items()}
    return samples
