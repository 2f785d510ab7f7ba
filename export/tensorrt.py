"""TensorRT: engines are device-specific, so they are built where they run.

Where `tensorrt` imports and a CUDA GPU is present, the engine is built here with the same code the Jetson runs
(`jetson/build_engine.py`) and checked with the same harness (`jetson/bench.py`). Everywhere else `--target trt`
writes a Jetson bundle: the ONNX model (it takes raw 0-255 pixels), the real calibration images, the test set
(uint8 raw pixels), the manifest and the harness.

`BundleSession` runs a bundle's harness on a Jetson over ssh (or here): it uploads the bundle once per content
hash to `<remote_dir>/<bundle name>-<hash>` and leaves device-built engines there, so the next run of the same
bundle sends nothing and builds nothing. Export (`build_and_verify`) and bench (`device_bench.jetson`) share it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np

from pacb_edge.core.consoles import step
from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_path, atomic_write_json, ensure_dir
from pacb_edge.core.remote import PYTHON, REMOTE_DIR, SSHTarget, remote_path
from pacb_edge.core.runtimes import PRECISIONS
from pacb_edge.export.context import ExportContext, ExportFormat, input_info, manifest_common

log = logging.getLogger(__name__)

BUNDLE_ONNX = "model.onnx"
BUNDLE_CALIBRATION = "calibration.npy"
BUNDLE_TESTSET = "testset.npz"
BUNDLE_MANIFEST = "manifest.json"
HARNESS_DIR = "jetson"
UPLOAD_MARKER = ".pacb_upload_complete"  # written on the device last, after every file arrived; holds the hash
DIGEST_CHARS = 16  # hex digits of the bundle hash in the remote folder name
DEVICE_BUILT = ("*.engine", "*.engine.json", "calib_*.cache", "calib_*.cache.json")  # never copied to a device
UPLOAD_SENT, UPLOAD_SKIPPED, UPLOAD_LOCAL = "sent", "skipped", "local"
_MAX_ERROR_CHARS = 500


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


def raw_pixels(images: np.ndarray, what: str, allow_fractional: bool = False) -> np.ndarray:
    """`images` as contiguous uint8 raw pixels; with `allow_fractional`, non-integral values in 0..255 stay float32.

    Raises a `PacbEdgeError` for values outside 0..255 (normalized images) or, without `allow_fractional`,
    non-integral ones."""
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise PacbEdgeError(f"{what} must be raw 0-255 pixels (uint8), got dtype {arr.dtype}")
    if arr.size:
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi <= 255):
            raise PacbEdgeError(
                f"{what} must be raw 0-255 pixels (the bundle's model normalizes inside its graph), "
                f"got {arr.dtype} values in [{lo:.3g}, {hi:.3g}]"
            )
        if not np.array_equal(arr, np.round(arr)):
            if allow_fractional:
                return np.ascontiguousarray(arr, dtype=np.float32)
            raise PacbEdgeError(f"{what} must be raw 0-255 pixels (uint8), got non-integral {arr.dtype} values")
    return np.ascontiguousarray(arr.astype(np.uint8))


def write_bundle(
    out_dir: str | Path,
    onnx_path: str | Path,
    calibration_images: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    manifest: dict[str, Any],
) -> Path:
    """Write a Jetson bundle folder; returns it. Every file is written atomically.

    The model takes raw pixels, so `x_test` must be raw 0-255 pixels (uint8, or integral values in any numeric
    dtype); it is stored as uint8. `calibration_images` are raw pixels too: stored as uint8 when integral, else as
    float32. Anything outside 0..255 (e.g. normalized images) is a `PacbEdgeError`.
    """
    x_test = raw_pixels(x_test, "test images")
    calibration = raw_pixels(calibration_images, "calibration images", allow_fractional=True)
    out_dir = ensure_dir(out_dir)
    with atomic_path(out_dir / BUNDLE_ONNX) as tmp:
        shutil.copyfile(onnx_path, tmp)
    with atomic_path(out_dir / BUNDLE_CALIBRATION) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, calibration)
    with atomic_path(out_dir / BUNDLE_TESTSET) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=x_test, y=np.asarray(y_test, dtype=np.int64))
    harness = ensure_dir(out_dir / HARNESS_DIR)
    for src in harness_files():
        with atomic_path(harness / src.name) as tmp:
            shutil.copyfile(src, tmp)
    atomic_write_json(out_dir / BUNDLE_MANIFEST, manifest)
    return out_dir


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


# Running bundles on a device


class HarnessRun(NamedTuple):
    """One run of `jetson/bench.py`: exit code, output, and where it ran (host, folder, what was uploaded)."""

    returncode: int
    stdout: str
    stderr: str
    where: dict[str, Any]


def read_bundle_manifest(bundle: str | Path) -> dict[str, Any]:
    """A bundle's `manifest.json`; invalid JSON is a one-line error."""
    path = Path(bundle) / BUNDLE_MANIFEST
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PacbEdgeError(f"bundle manifest {path} is not valid JSON: {e}") from None


def check_bundle(bundle: str | Path) -> Path:
    """`bundle` as a Path, or a `PacbEdgeError` when it is not a bundle folder with model.onnx."""
    path = Path(bundle)
    if not (path.is_dir() and (path / BUNDLE_ONNX).is_file()):
        raise PacbEdgeError(
            f"{path} is not a Jetson bundle (a folder with {BUNDLE_ONNX}); "
            "export it with `pacb-edge export --target trt`"
        )
    return path


def upload_plan(bundle: str | Path) -> dict[str, Path]:
    """What goes to the device: every bundle file but device-built engines/caches and the bundle's own `jetson/`,
    plus the harness installed with this package in `jetson/` (a bundle never runs a stale harness)."""
    bundle = Path(bundle)
    files: dict[str, Path] = {}
    for path in sorted(bundle.rglob("*")):
        rel = PurePosixPath(*path.relative_to(bundle).parts)
        if path.is_dir() or rel.parts[0] in (HARNESS_DIR, UPLOAD_MARKER) or "__pycache__" in rel.parts:
            continue
        if any(rel.match(p) for p in DEVICE_BUILT):
            continue
        files[str(rel)] = path
    harness = harness_files()
    if not any(f.name == "bench.py" for f in harness):
        raise PacbEdgeError("the installed package has no Jetson harness (pacb_edge/jetson/bench.py); reinstall")
    for src in harness:
        files[f"{HARNESS_DIR}/{src.name}"] = src
    return files


def bundle_digest(files: Mapping[str, str | Path]) -> str:
    """SHA-256 (hex) over the sorted (relative path, file SHA-256) pairs of an upload plan."""
    from pacb_edge.export.manifest import sha256

    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{sha256(files[name])}\n".encode())
    return digest.hexdigest()


def remote_bundle_name(bundle: str | Path, digest: str) -> str:
    """`<bundle folder name>-<first 16 hex of the digest>`: a changed bundle never overwrites another's folder."""
    return f"{Path(bundle).resolve().name}-{digest[:DIGEST_CHARS]}"


def installed_bench() -> Path:
    """bench.py of the harness installed with this package."""
    bench = next((f for f in harness_files() if f.name == "bench.py"), None)
    if bench is None:
        raise PacbEdgeError("the installed package has no Jetson harness (pacb_edge/jetson/bench.py); reinstall")
    return bench


class BundleSession:
    """Where Jetson bundles run: a device over ssh (`host`, honouring ~/.ssh/config) or this machine (`host=None`).

    Over ssh a bundle goes to `<remote_dir>/<bundle name>-<hash>` (`remote_bundle_name`) unless that folder
    already holds a complete upload of it, and the harness runs there with `python`, so engines the device built
    earlier are reused. Here the installed harness runs on the bundle in place with `python` (on JetPack the
    system `python3`, the one with TensorRT's bindings).
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        ssh_config: str | None = None,
        identity_file: str | None = None,
        remote_dir: str = REMOTE_DIR,
        python: str = PYTHON,
        timeout: float = 1800,
    ) -> None:
        if not python or not str(python).strip():
            raise PacbEdgeError("the python command for the Jetson harness is empty")
        self.host = host
        self.python = str(python)
        self.timeout = float(timeout)
        self.remote_dir = remote_dir
        self.target: SSHTarget | None = None
        if host is not None:
            self.remote_dir = remote_path(remote_dir)
            self.target = SSHTarget(host, port=port, identity_file=identity_file, config_file=ssh_config)

    def tensorrt_version(self) -> str | None:
        """The TensorRT version `python` imports on the device (or here), read before anything is built; None when
        it cannot import tensorrt (the harness then fails with its own message)."""
        argv = [self.python, "-c", "import tensorrt; print(tensorrt.__version__)"]
        if self.target is not None:
            proc = self.target.run(argv, timeout=min(self.timeout, 120), check=False)
        else:
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired):
                return None
        lines = (proc.stdout or "").strip().splitlines()
        return lines[-1].strip() if proc.returncode == 0 and lines else None

    def upload(self, bundle: str | Path) -> dict[str, Any]:
        """Put `bundle` on the device unless an identical complete upload is there (one ssh command asks).

        Returns {"host", "remote_bundle", "bundle_sha256", "upload": "sent" | "skipped", "upload_bytes"}."""
        if self.target is None:
            raise PacbEdgeError("no --host to upload the bundle to")
        plan = upload_plan(check_bundle(bundle))
        digest = bundle_digest(plan)
        remote = posixpath.join(self.remote_dir, remote_bundle_name(bundle, digest))
        where: dict[str, Any] = {"host": self.target.host, "remote_bundle": remote, "bundle_sha256": digest}
        if self.target.marker_matches(remote, UPLOAD_MARKER, digest, timeout=self.timeout):
            where.update(upload=UPLOAD_SKIPPED, upload_bytes=0)
        else:
            size = sum(Path(p).stat().st_size for p in plan.values()) / 1e6
            with step(f"upload {Path(bundle).name} ({size:.1f} MB) to {self.target.host}"):
                sent = self.target.upload(plan, remote, timeout=self.timeout, marker=(UPLOAD_MARKER, digest))
            where.update(upload=UPLOAD_SENT, upload_bytes=sent)
        return where

    def run_harness(self, bundle: str | Path, harness_args: Sequence[str]) -> HarnessRun:
        """Run `bench.py --bundle <bundle as the harness sees it> *harness_args`; a connection failure or (here)
        a python that cannot start is a `PacbEdgeError`, a failing harness is a non-zero `returncode`."""
        bundle = check_bundle(bundle)
        if self.target is None:
            return self._run_here(bundle, harness_args)
        where = self.upload(bundle)
        remote = where["remote_bundle"]
        argv = [self.python, posixpath.join(remote, HARNESS_DIR, "bench.py"), "--bundle", remote, *harness_args]
        with step(f"run {bundle.name} on {self.target.host} (engine build when not cached, then the harness)"):
            proc = self.target.run(argv, timeout=self.timeout, check=False)
        return HarnessRun(proc.returncode, proc.stdout, proc.stderr, where)

    def run_json(self, bundle: str | Path, harness_args: Sequence[str]) -> dict[str, Any]:
        """`run_harness` and its JSON result, with `where` added; a failed harness is a one-line `PacbEdgeError`."""
        run = self.run_harness(bundle, harness_args)
        result = harness_result(run.returncode, run.stdout, run.stderr)
        result["where"] = run.where
        return result

    def _run_here(self, bundle: Path, harness_args: Sequence[str]) -> HarnessRun:
        bundle = bundle.resolve()
        argv = [self.python, str(installed_bench()), "--bundle", str(bundle), *harness_args]
        where = {"host": None, "bundle": str(bundle), "upload": UPLOAD_LOCAL, "upload_bytes": 0}
        try:
            with step(f"run {bundle.name} here with {self.python} (engine build when not cached, then the harness)"):
                proc = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=self.timeout,
                    stdin=subprocess.DEVNULL,
                )
        except subprocess.TimeoutExpired:
            raise PacbEdgeError(f"Jetson harness gave no result within {self.timeout:.0f} s") from None
        except OSError as e:
            raise PacbEdgeError(f"cannot run the Jetson harness with {self.python}: {e.strerror or e}") from None
        return HarnessRun(proc.returncode, proc.stdout, proc.stderr, where)


def harness_result(returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The harness's JSON result of a successful run, else a one-line `PacbEdgeError` saying why it failed."""
    try:
        result = parse_harness_output(stdout or "")
    except PacbEdgeError as e:
        detail = last_line(stderr) or str(e)
        message = f"Jetson harness exited with {returncode} and printed no result: {detail}"
        raise PacbEdgeError(one_line(message)) from None
    if returncode != 0 or result.get("status") != "ok":
        why = result.get("error") or last_line(stderr) or f"exit {returncode}"
        raise PacbEdgeError(one_line(f"Jetson harness failed: {why}"))
    return result


def build_and_verify(
    bundle: str | Path,
    precision: str,
    session: BundleSession | None = None,
    eval_limit: int | None = None,
    warmup: int = 5,
    runs: int = 20,
    allow_slow_precision: bool = False,
    **session_options: Any,
) -> dict[str, Any]:
    """Build (or reuse) the bundle's TensorRT engine where `session` runs and measure its top-1 on the bundle's
    test set (the first `eval_limit` images) and its latency; a failure is a one-line `PacbEdgeError`.

    Without `session`, one is made from `session_options` (`BundleSession`'s: host, port, ssh_config,
    identity_file, remote_dir, python, timeout); with no host and no python given, the harness runs here with
    this interpreter, the one `tensorrt_available()` checked.

    Returns {"top1", "n_eval", "precision", "engine" (its path on the device), "engine_cache" ("hit" | "built"),
    "engine_build_s", "engine_key", "latency_ms", "gpu_compute_ms", "throughput_ips", "device_facts", "where"}
    (`where`: host, remote_bundle or bundle, bundle_sha256, upload "sent" | "skipped" | "local", upload_bytes).
    """
    if session is None:
        options = dict(session_options)
        if options.get("host") is None and not options.get("python"):
            options["python"] = sys.executable
        session = BundleSession(**options)
    elif session_options:
        raise TypeError(f"give either a session or its options, not both: {sorted(session_options)}")
    if precision not in PRECISIONS:
        raise PacbEdgeError(f"unknown precision {precision!r}; use one of: {', '.join(PRECISIONS)}")
    args = ["--backend", "tensorrt", "--precision", precision, "--warmup", str(int(warmup)), "--runs", str(int(runs))]
    if eval_limit is not None:
        args += ["--eval-limit", str(int(eval_limit))]
    if allow_slow_precision:
        args.append("--allow-slow-precision")
    result = session.run_json(bundle, args)
    extra = result.get("extra") or {}
    return {
        "top1": result.get("top1"),
        "n_eval": result.get("n_eval"),
        "precision": result.get("precision") or precision,
        "engine": extra.get("engine"),
        "engine_cache": extra.get("engine_cache"),
        "engine_build_s": extra.get("engine_build_s"),
        "engine_key": extra.get("engine_key"),
        "latency_ms": result.get("latency_ms") or {},
        "gpu_compute_ms": result.get("gpu_compute_ms"),
        "throughput_ips": result.get("throughput_ips"),
        "device_facts": result.get("device_facts") or {},
        "where": result["where"],
    }


def one_line(message: str) -> str:
    """A message on one line, cut to a readable length (a harness error can carry a multi-line native message)."""
    text = " ".join(str(message).split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def last_line(text: str | None) -> str:
    """The last non-empty line of `text`, stripped ("" when none)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ----------------------------------------------------------------------------------------------------------------------
# The TensorRT format's row


def export_target(ctx: ExportContext, precisions: tuple[str, ...]) -> list[dict[str, Any]]:
    """A Jetson bundle at the target TensorRT's opset, checked against its parser before anything is written;
    with `--host` (or TensorRT here) the engine is built where it runs and its accuracy verified like any artifact."""
    from pacb_edge.export.manifest import tool_versions
    from pacb_edge.export.onnx import onnx_file
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
    onnx_path = onnx_file(ctx, opset)
    preflight(onnx_path, profile.version)  # refuse here, before the bundle is written or sent anywhere
    calibration = ctx.calibration()  # always the full set: the bundle may be built as INT8 on the device later
    manifest = {
        "format": "trt-bundle",
        "precisions": list(precisions),
        **manifest_common(ctx),
        "input": input_info(ctx.spec),
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


FORMAT = ExportFormat("trt", ".engine", PRECISIONS, True, export_target, ("fp16",), options=("trt_version", "ssh"))
