"""TensorRT: engines are device-specific, so they are built where they run.

Where `tensorrt` imports and a CUDA GPU is present, the engine is built here with the same code the Jetson runs
(`jetson/build_engine.py`) and checked with the same harness (`jetson/bench.py`). Everywhere else `--target trt`
writes a Jetson bundle: the ONNX model, the real calibration images, the test set, the manifest and the harness.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.errors import PacbEdgeError
from pacb_edge.fileio import atomic_path, atomic_write_json, ensure_dir

BUNDLE_ONNX = "model.onnx"
BUNDLE_CALIBRATION = "calibration.npy"
BUNDLE_TESTSET = "testset.npz"
BUNDLE_MANIFEST = "manifest.json"
HARNESS_DIR = "jetson"


def tensorrt_available() -> tuple[bool, str]:
    """(True, "") when TensorRT and a CUDA GPU are usable here, else (False, why not)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "tensorrt is not installed here"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() < 1:
            return False, "no CUDA GPU found"
    except Exception as e:  # pycuda missing or no driver
        return False, f"no usable CUDA GPU ({type(e).__name__})"
    return True, ""


def harness_files() -> list[Path]:
    """The Jetson harness shipped as package data (`pacb_edge.jetson`)."""
    root = resources.files("pacb_edge.jetson")
    files = [Path(str(root / name)) for name in ("build_engine.py", "bench.py", "README.md")]
    return [f for f in files if f.is_file()]


def write_bundle(
    out_dir: str | Path,
    onnx_path: str | Path,
    calibration_images: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    manifest: dict[str, Any],
) -> Path:
    """Write a Jetson bundle folder; returns it. Every file is written atomically."""
    out_dir = ensure_dir(out_dir)
    with atomic_path(out_dir / BUNDLE_ONNX) as tmp:
        shutil.copyfile(onnx_path, tmp)
    with atomic_path(out_dir / BUNDLE_CALIBRATION) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(calibration_images, dtype=np.float32))
    with atomic_path(out_dir / BUNDLE_TESTSET) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=np.ascontiguousarray(x_test, dtype=np.float32), y=np.asarray(y_test, dtype=np.int64))
    harness = ensure_dir(out_dir / HARNESS_DIR)
    for src in harness_files():
        with atomic_path(harness / src.name) as tmp:
            shutil.copyfile(src, tmp)
    atomic_write_json(out_dir / BUNDLE_MANIFEST, manifest)
    return out_dir


def run_harness(
    bundle: str | Path,
    backend: str,
    precision: str = "fp32",
    extra_args: list[str] | None = None,
    timeout: float = 1800,
) -> dict[str, Any]:
    """Run the bundle's `jetson/bench.py` here and return its JSON result (a failed run is a `PacbEdgeError`)."""
    bundle = Path(bundle)
    argv = [
        sys.executable,
        str(bundle / HARNESS_DIR / "bench.py"),
        "--bundle",
        str(bundle),
        "--backend",
        backend,
        "--precision",
        precision,
        *(extra_args or []),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    result = parse_harness_output(proc.stdout)
    if proc.returncode != 0 or result.get("status") != "ok":
        raise PacbEdgeError(f"Jetson harness failed: {result.get('error') or proc.stderr.strip()[-300:]}")
    return result


def parse_harness_output(stdout: str) -> dict[str, Any]:
    """The harness prints exactly one JSON object as its last stdout line."""
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    if not lines:
        raise PacbEdgeError("Jetson harness printed no result")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise PacbEdgeError(f"Jetson harness printed no JSON result (last line: {lines[-1][:200]!r})") from None
    if not isinstance(result, dict):
        raise PacbEdgeError("Jetson harness result is not a JSON object")
    return result


def build_engine_here(bundle: str | Path, precision: str) -> Path:
    """Build the engine for this machine's GPU with the bundle's own `build_engine.py`; returns its path."""
    bundle = Path(bundle)
    argv = [sys.executable, str(bundle / HARNESS_DIR / "build_engine.py"), str(bundle), "--precision", precision]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise PacbEdgeError(f"TensorRT engine build failed: {tail[-1] if tail else 'no output'}")
    path = proc.stdout.strip().splitlines()[-1].strip() if proc.stdout.strip() else ""
    if not path or not Path(path).is_file():
        raise PacbEdgeError("TensorRT engine build reported no engine file")
    return Path(path)
