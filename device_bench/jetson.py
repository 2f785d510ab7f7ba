"""Jetson runner: bench a TensorRT/ONNX bundle on a Jetson over ssh (or on this machine) and return a `BenchResult`.

Steps of `JetsonRunner.run(bundle)`: copy the bundle to `<remote_dir>/<bundle name>/` on the device, with its
`jetson/` harness replaced by the one installed with this package (a bundle exported by an older version never
runs a stale harness), run `python3 jetson/bench.py --bundle ...` there, and turn the one JSON line it prints into
a `BenchResult`. Engines the device built earlier stay in the remote folder and are reused while the ONNX is
unchanged; engines in the local bundle are never copied (they belong to the GPU that built them).

A failed harness (bad bundle, TensorRT error, missing backend) is a failed record, not an exception, so the other
artifacts still get measured. A connection failure (unreachable host, refused key, host key mismatch) is a
`PacbEdgeError` from `run`; `run_safely` turns it into a failed record too.

Safety: the copy and the command go through `SSHTarget`, which quotes every word with `shlex.quote` for the
remote shell, so folder and bundle names holding spaces, `;`, `$()` or backticks stay literal names.
"""

from __future__ import annotations

import logging
import posixpath
import subprocess
import sys
from pathlib import Path
from typing import Any

from pacb_edge.errors import PacbEdgeError
from pacb_edge.remote import SSHTarget, remote_path

from .record import ACCURACY_DEVICE, STATUS_FAILED, STATUS_OK, BenchResult

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "onnxruntime")
PRECISIONS = ("fp32", "fp16", "int8")
FORMAT_OF_BACKEND = {"tensorrt": "trt", "onnxruntime": "onnx"}
HARNESS_DIR = "jetson"  # as export.tensorrt.HARNESS_DIR (not imported here: that module imports numpy)
_DEVICE_BUILT = ("*.engine", "*.engine.json", "calib_*.cache", "calib_*.cache.json")  # never copied to a device
_MAX_ERROR_CHARS = 500


class JetsonRunner:
    """Bench Jetson bundles with the harness `jetson/bench.py`, over ssh (`host`) or here (`host=None`)."""

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        remote_dir: str = "pacb_edge",
        backend: str = "tensorrt",
        precision: str | None = "fp16",
        warmup: int = 20,
        runs: int = 200,
        min_time: float = 0.0,
        threads: int | None = None,
        eval_limit: int | None = None,
        python: str = "python3",
        ssh_config: str | None = None,
        identity_file: str | None = None,
        timeout: float = 1800,
    ) -> None:
        """`precision=None` picks the backend's own: fp16 for TensorRT, fp32 for onnxruntime (fp32 only)."""
        if backend not in BACKENDS:
            raise PacbEdgeError(f"unknown Jetson backend {backend!r}; use one of: {', '.join(BACKENDS)}")
        if precision is None:
            precision = "fp16" if backend == "tensorrt" else "fp32"
        if precision not in PRECISIONS:
            raise PacbEdgeError(f"unknown precision {precision!r}; use one of: {', '.join(PRECISIONS)}")
        if backend == "onnxruntime" and precision != "fp32":
            raise PacbEdgeError(
                f"the onnxruntime backend runs the fp32 model only, not {precision}; "
                "use --precision fp32 or --backend tensorrt"
            )
        if int(warmup) < 0 or int(runs) < 1 or float(min_time) < 0:
            raise PacbEdgeError(f"need warmup >= 0, runs >= 1 and min_time >= 0, got {warmup}, {runs}, {min_time}")
        if threads is not None and int(threads) < 1:
            raise PacbEdgeError(f"threads must be at least 1, got {threads}")
        if eval_limit is not None and int(eval_limit) < 0:
            raise PacbEdgeError(f"eval_limit must be >= 0, got {eval_limit}")
        if not python or not str(python).strip():
            raise PacbEdgeError("the remote python command is empty")
        self.host = host
        self.remote_dir = remote_dir
        self.backend = backend
        self.precision = precision
        self.warmup = int(warmup)
        self.runs = int(runs)
        self.min_time = float(min_time)
        self.threads = int(threads) if threads is not None else None
        self.eval_limit = int(eval_limit) if eval_limit is not None else None
        self.python = str(python)
        self.timeout = float(timeout)
        self.target: SSHTarget | None = None
        if host is not None:
            self.remote_dir = remote_path(remote_dir)
            self.target = SSHTarget(host, port=port, identity_file=identity_file, config_file=ssh_config)

    # the pieces

    def harness_args(self, bundle: str) -> list[str]:
        """bench.py's arguments for a bundle folder as the harness will see it."""
        args = [
            "--bundle",
            bundle,
            "--backend",
            self.backend,
            "--precision",
            self.precision,
            "--warmup",
            str(self.warmup),
            "--runs",
            str(self.runs),
            "--min-time",
            repr(self.min_time),
        ]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        if self.eval_limit is not None:
            args += ["--eval-limit", str(self.eval_limit)]
        return args

    def remote_bundle(self, bundle_dir: str | Path) -> str:
        """Where a bundle goes on the device: `<remote_dir>/<bundle name>`."""
        return posixpath.join(self.remote_dir, Path(bundle_dir).resolve().name)

    def upload_plan(self, bundle_dir: str | Path) -> dict[str, Path]:
        """What is copied: every bundle file but device-built engines, with the installed harness in `jetson/`."""
        from pacb_edge.export.tensorrt import harness_files

        bundle = Path(bundle_dir)
        files: dict[str, Path] = {}
        for path in sorted(bundle.rglob("*")):
            rel = path.relative_to(bundle)
            if path.is_dir() or "__pycache__" in rel.parts or any(rel.match(p) for p in _DEVICE_BUILT):
                continue
            files[rel.as_posix()] = path
        harness = harness_files()
        if not any(f.name == "bench.py" for f in harness):
            raise PacbEdgeError("the installed package has no Jetson harness (pacb_edge/jetson/bench.py); reinstall")
        for src in harness:
            files[f"{HARNESS_DIR}/{src.name}"] = src
        return files

    # running

    def run(self, bundle_dir: str | Path) -> BenchResult:
        """Bench one bundle; a harness failure is a failed record, a connection failure a `PacbEdgeError`."""
        bundle = Path(bundle_dir)
        if not (bundle.is_dir() and (bundle / "model.onnx").is_file()):
            raise PacbEdgeError(
                f"{bundle} is not a Jetson bundle (a folder with model.onnx); "
                "export it with `pacb-edge export --target trt`"
            )
        if self.target is None:
            return self._run_here(bundle)
        remote = self.remote_bundle(bundle)
        log.info("copying %s to %s:%s", bundle, self.target.host, remote)
        self.target.upload(self.upload_plan(bundle), remote, timeout=self.timeout)
        argv = [self.python, posixpath.join(remote, HARNESS_DIR, "bench.py"), *self.harness_args(remote)]
        proc = self.target.run(argv, timeout=self.timeout, check=False)
        return self._record(
            bundle, proc.returncode, proc.stdout, proc.stderr, {"host": self.target.host, "remote_bundle": remote}
        )

    def run_safely(self, bundle_dir: str | Path) -> BenchResult:
        """`run`, with a `PacbEdgeError` (unreachable device, refused key, not a bundle) as a failed record."""
        try:
            return self.run(bundle_dir)
        except PacbEdgeError as e:
            rec = self._empty(bundle_dir)
            rec.status, rec.error = STATUS_FAILED, _one_line(str(e))
            return rec

    def _run_here(self, bundle: Path) -> BenchResult:
        """On the Jetson itself: the installed harness, with this Python, on the bundle in place."""
        from pacb_edge.export.tensorrt import harness_files

        bench = next((f for f in harness_files() if f.name == "bench.py"), bundle / HARNESS_DIR / "bench.py")
        argv = [sys.executable, str(bench), *self.harness_args(str(bundle.resolve()))]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, errors="replace", timeout=self.timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            rec = self._empty(bundle)
            rec.status, rec.error = STATUS_FAILED, f"Jetson harness gave no result within {self.timeout:.0f} s"
            return rec
        except OSError as e:
            rec = self._empty(bundle)
            rec.status, rec.error = STATUS_FAILED, f"cannot run the Jetson harness: {e.strerror or e}"
            return rec
        return self._record(bundle, proc.returncode, proc.stdout, proc.stderr, {"host": None})

    # the record

    def _empty(self, bundle_dir: str | Path) -> BenchResult:
        return BenchResult(
            artifact=str(bundle_dir),
            format=FORMAT_OF_BACKEND[self.backend],
            device="jetson",
            runner=self.backend,
            precision=self.precision,
            threads=self.threads,
            warmup=self.warmup,
            runs=self.runs,
        )

    def _record(self, bundle: Path, returncode: int, stdout: str, stderr: str, where: dict[str, Any]) -> BenchResult:
        """The `BenchResult` of one harness run from its exit code and its last stdout line."""
        from pacb_edge.export.tensorrt import parse_harness_output

        rec = self._empty(bundle)
        rec.extra.update(where)
        rec.extra["harness_exit_code"] = returncode
        try:
            result = parse_harness_output(stdout or "")
        except PacbEdgeError as e:
            detail = _last_line(stderr) or str(e)
            rec.status = STATUS_FAILED
            rec.error = _one_line(f"Jetson harness exited with {returncode} and printed no result: {detail}")
            return rec
        rec.runner = result.get("runner") or self.backend
        rec.precision = result.get("precision") or self.precision
        rec.latency_ms = dict(result.get("latency_ms") or {})
        rec.throughput_ips = result.get("throughput_ips")
        rec.top1 = result.get("top1")
        rec.n_eval = result.get("n_eval")
        rec.accuracy_source = ACCURACY_DEVICE if rec.top1 is not None else None
        rec.warmup = result.get("warmup", self.warmup)
        rec.runs = result.get("runs") or self.runs
        rec.threads = result.get("threads", self.threads)
        rec.device_facts = dict(result.get("device_facts") or {})
        rec.spec = dict(result.get("spec") or {})
        rec.extra.update(result.get("extra") or {})
        rec.extra["gpu_compute_ms"] = result.get("gpu_compute_ms")
        if returncode == 0 and result.get("status") == STATUS_OK:
            rec.status = STATUS_OK
        else:
            rec.status = STATUS_FAILED
            rec.error = _one_line(
                result.get("error") or _last_line(stderr) or f"Jetson harness exited with {returncode}"
            )
        return rec


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _one_line(message: str) -> str:
    """A message on one line, cut to a readable length (a harness error can carry a multi-line native message)."""
    text = " ".join(str(message).split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."
