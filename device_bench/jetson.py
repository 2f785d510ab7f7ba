"""Jetson runner: bench a TensorRT/ONNX bundle on a Jetson over ssh (or on this machine) and return a `BenchResult`.

`JetsonRunner.run(bundle)` hands the bundle to `export.tensorrt.BundleSession`, the runner export uses too: it
copies the bundle (with the harness installed with this package in `jetson/`, and without engines built
elsewhere) to `<remote_dir>/<bundle name>-<content hash>/` unless the device already holds that exact upload,
runs `python3 jetson/bench.py --bundle ...` there, and the one JSON line it prints becomes a `BenchResult`.
Engines built on the device stay in that folder and are reused while their cache key (ONNX hash, precision,
TensorRT version, GPU) matches, so a second bench of the same bundle sends nothing and builds nothing:
`extra["upload"]` is "sent" or "skipped" (`extra["upload_bytes"]`), `extra["engine_cache"]` "built" or "hit".
With `host=None` (on the Jetson itself) the installed harness runs in place with `python`, the system `python3`
by default: on JetPack only that interpreter has TensorRT's bindings.

A failed harness (bad bundle, TensorRT error, missing backend) is a failed record, not an exception, so the other
artifacts still get measured. A connection failure (unreachable host, refused key, host key mismatch) is a
`PacbEdgeError` from `run`; `run_safely` turns it into a failed record too.

Safety: the copy and the command go through `SSHTarget`, which quotes every word with `shlex.quote` for the
remote shell, so folder and bundle names holding spaces, `;`, `$()` or backticks stay literal names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.remote import PYTHON, REMOTE_DIR
from pacb_edge.core.runtimes import PRECISIONS
from pacb_edge.export.tensorrt import (
    BUNDLE_MANIFEST,
    HARNESS_DIR,  # noqa: F401 - part of this module's interface (the folder the harness runs from)
    BundleSession,
    check_bundle,
    last_line,
    one_line,
    parse_harness_output,
    read_bundle_manifest,
    upload_plan,
)

from .record import ACCURACY_DEVICE, STATUS_FAILED, STATUS_OK, BenchResult

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "onnxruntime")
FORMAT_OF_BACKEND = {"tensorrt": "trt", "onnxruntime": "onnx"}


class JetsonRunner:
    """Bench Jetson bundles with the harness `jetson/bench.py`, over ssh (`host`) or here (`host=None`)."""

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        remote_dir: str = REMOTE_DIR,
        backend: str = "tensorrt",
        precision: str | None = "fp16",
        warmup: int = 20,
        runs: int = 200,
        min_time: float = 0.0,
        threads: int | None = None,
        eval_limit: int | None = None,
        python: str = PYTHON,
        ssh_config: str | None = None,
        identity_file: str | None = None,
        timeout: float = 1800,
    ) -> None:
        """`precision=None` picks the backend's own: fp16 for TensorRT, fp32 for onnxruntime (fp32 only).
        `python` runs the harness on the device, or here with `host=None`."""
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
        self.session = BundleSession(
            host,
            port=port,
            ssh_config=ssh_config,
            identity_file=identity_file,
            remote_dir=remote_dir,
            python=python,
            timeout=timeout,
        )
        self.host = host
        self.remote_dir = self.session.remote_dir
        self.backend = backend
        self.precision = precision
        self.warmup = int(warmup)
        self.runs = int(runs)
        self.min_time = float(min_time)
        self.threads = int(threads) if threads is not None else None
        self.eval_limit = int(eval_limit) if eval_limit is not None else None
        self.python = self.session.python
        self.timeout = self.session.timeout
        self.target = self.session.target

    # the pieces

    def harness_args(self, bundle: str) -> list[str]:
        """bench.py's arguments for a bundle folder as the harness will see it."""
        return ["--bundle", bundle, *self.bench_args()]

    def bench_args(self) -> list[str]:
        """bench.py's arguments but `--bundle`."""
        args = [
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

    def upload_plan(self, bundle_dir: str | Path) -> dict[str, Path]:
        """What is copied: every bundle file but device-built engines, with the installed harness in `jetson/`."""
        return upload_plan(bundle_dir)

    # running

    def device_parser_check(self, bundle: Path) -> dict[str, Any]:
        """Before anything is built: the device's TensorRT version, and the bundle's ONNX checked against that
        version's parser profile (a refusal is a one-line `PacbEdgeError`). Returns what the record keeps."""
        from pacb_edge.export.trt_check import preflight, profile_for_device

        manifest = read_bundle_manifest(bundle) if (bundle / BUNDLE_MANIFEST).is_file() else {}
        exported_for = (manifest.get("tensorrt_profile") or {}).get("version")
        version = self.session.tensorrt_version()
        profile, differs = profile_for_device(version, exported_for)
        if differs:
            log.warning("%s: %s", bundle.name, differs)
        preflight(bundle / "model.onnx", profile.version)
        return {"device_tensorrt": version, "checked_profile": profile.version, "profile_note": differs}

    def run(self, bundle_dir: str | Path) -> BenchResult:
        """Bench one bundle; a harness failure is a failed record, a connection failure a `PacbEdgeError`."""
        bundle = check_bundle(bundle_dir)
        if self.target is not None:
            log.info("benching %s on %s", bundle, self.target.host)
            checked = self.device_parser_check(bundle) if self.backend == "tensorrt" else {}
            run = self.session.run_harness(bundle, self.bench_args())
            rec = self._record(bundle, run.returncode, run.stdout, run.stderr, run.where)
            rec.extra.update(checked)
            return rec
        try:  # here there is no connection to fail: a python that cannot start is a failed harness
            run = self.session.run_harness(bundle, self.bench_args())
        except PacbEdgeError as e:
            rec = self._empty(bundle)
            rec.status, rec.error = STATUS_FAILED, one_line(str(e))
            rec.extra["host"] = None
            return rec
        return self._record(bundle, run.returncode, run.stdout, run.stderr, run.where)

    def run_safely(self, bundle_dir: str | Path) -> BenchResult:
        """`run`, with a `PacbEdgeError` (unreachable device, refused key, not a bundle) as a failed record."""
        try:
            return self.run(bundle_dir)
        except PacbEdgeError as e:
            rec = self._empty(bundle_dir)
            rec.status, rec.error = STATUS_FAILED, one_line(str(e))
            return rec

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
        rec = self._empty(bundle)
        rec.extra.update(where)
        rec.extra["harness_exit_code"] = returncode
        try:
            result = parse_harness_output(stdout or "")
        except PacbEdgeError as e:
            detail = last_line(stderr) or str(e)
            rec.status = STATUS_FAILED
            rec.error = one_line(f"Jetson harness exited with {returncode} and printed no result: {detail}")
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
            rec.error = one_line(result.get("error") or last_line(stderr) or f"Jetson harness exited with {returncode}")
        return rec
