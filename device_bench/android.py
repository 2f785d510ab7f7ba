"""Android runner: run TFLite's `benchmark_model` on a phone over adb and return a `BenchResult`.

Steps of `AndroidRunner.run`: pick the device (`adb devices`), read its facts (`getprop`), push the binary
when the copy on the phone differs in size, push the model, run `benchmark_model`, parse its output, report
how much of the graph a requested delegate took, and remove the pushed model in any case. The binary stays on
the phone for the next run.

The parts: the adb transport (device choice, facts, pushes, quoted `adb shell` commands, cleanup, and the quoting
and safety rules) is `adb.py`'s `AdbDevice`; run_eval's I/O (the eval set, its checks, the on-device run) is
`run_eval.py`; this module builds the benchmark_model command and turns its output into the record.

Delegates are asked for by name (cpu, xnnpack, gpu, nnapi; `delegates.py` says which flags each passes and
why): the record always names the delegate (`extra["delegate"]["requested"]`, `cpu` included) and how much of
the graph it took (`nodes_delegated` / `nodes_total`, `fraction`, `whole_graph`).

Accuracy: with `eval_binary` (TFLite's `run_eval`, see `run_eval.py`) and an `EvalSet`, top-1 is measured on the
phone with the same delegate and recorded as `accuracy_source="device"`. A number the caller measured on the host
can be passed as `host_top1`; it is recorded as `"host-evaluated"` when there is no device number, including when
on-device accuracy is refused because run_eval would feed the model wrong inputs. The two are never mixed up.

The runner calls the binary directly rather than through `android/bench.sh`: one quoted command per `adb
shell` is what the tests check, and the script would need its own quoting. The script is the documented manual
way.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pacb_edge.core.consoles import step
from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_text

from .adb import AdbDevice, shell_join
from .benchmark_model_parser import latency_from_parsed, parse_benchmark_output
from .delegates import DEFAULT_DELEGATE, DELEGATE_FLAGS, delegate_record
from .record import ACCURACY_DEVICE, ACCURACY_HOST, BenchResult
from .run_eval import EvalSet, check_eval_inputs, device_accuracy, run_eval_feed_problem, write_eval_set

__all__ = [
    "DEFAULT_DELEGATE",
    "DELEGATE_FLAGS",
    "AndroidRunner",
    "EvalSet",
    "run_eval_feed_problem",
    "shell_join",
    "write_eval_set",
]

log = logging.getLogger(__name__)

DEFAULT_REMOTE_DIR = "/data/local/tmp/pacb_edge"

_TASKSET_MASK = re.compile(r"(0x)?[0-9a-fA-F]+")


def _manifest_dict(manifest: Any) -> dict[str, Any]:
    """A manifest (dict, JSON path, or object with `to_dict`) as a dict; {} for None."""
    if manifest is None:
        return {}
    if isinstance(manifest, (str, os.PathLike)):
        try:
            manifest = json.loads(Path(manifest).read_text())
        except (OSError, ValueError) as e:
            raise PacbEdgeError(f"cannot read manifest {manifest}: {e}") from None
    if hasattr(manifest, "to_dict"):
        manifest = manifest.to_dict()
    if not isinstance(manifest, Mapping):
        raise PacbEdgeError("the manifest must be a JSON object")
    return dict(manifest)


def _spec_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The model spec dict of a manifest dict."""
    for key in ("spec", "model_spec"):
        if isinstance(manifest.get(key), Mapping):
            return dict(manifest[key])
    return dict(manifest) if "arch" in manifest else {}


class AndroidRunner:
    """Bench .tflite files on an Android phone over adb with TFLite's `benchmark_model`, one `run` each.

    `delegate` is one of `DELEGATE_FLAGS` (cpu, xnnpack, gpu, nnapi); None means the default, xnnpack.
    """

    def __init__(
        self,
        adb: str = "adb",
        serial: str | None = None,
        benchmark_binary: str | os.PathLike | None = None,
        remote_dir: str = DEFAULT_REMOTE_DIR,
        threads: int = 4,
        delegate: str | None = DEFAULT_DELEGATE,
        taskset: str | None = None,
        warmup: int = 10,
        runs: int = 100,
        min_secs: float | None = None,
        warmup_min_secs: float | None = None,
        enable_op_profiling: bool = False,
        eval_binary: str | os.PathLike | None = None,
        timeout_s: float = 600.0,
        adb_timeout_s: float = 60.0,
    ) -> None:
        delegate = DEFAULT_DELEGATE if delegate is None else str(delegate).strip().lower()
        if delegate not in DELEGATE_FLAGS:
            raise PacbEdgeError(f"unknown delegate {delegate!r}; use one of: {', '.join(DELEGATE_FLAGS)}")
        if int(threads) < 1:
            raise PacbEdgeError(f"threads must be at least 1, got {threads}")
        if int(warmup) < 0 or int(runs) < 1:
            raise PacbEdgeError(f"need warmup >= 0 and runs >= 1, got warmup={warmup} runs={runs}")
        if taskset is not None and not _TASKSET_MASK.fullmatch(str(taskset)):
            raise PacbEdgeError(f"taskset mask must be hexadecimal (e.g. f0), got {taskset!r}")
        remote_dir = posixpath.normpath(str(remote_dir))
        if not remote_dir.startswith("/") or remote_dir == "/":
            raise PacbEdgeError(f"remote_dir must be an absolute folder on the phone, got {remote_dir!r}")
        self.adb = adb
        self.serial = serial
        self.benchmark_binary = Path(benchmark_binary) if benchmark_binary else None
        self.remote_dir = remote_dir
        self.threads = int(threads)
        self.delegate = delegate
        self.taskset = str(taskset) if taskset is not None else None
        self.warmup = int(warmup)
        self.runs = int(runs)
        self.min_secs = min_secs
        self.warmup_min_secs = warmup_min_secs
        self.enable_op_profiling = enable_op_profiling
        self.eval_binary = Path(eval_binary) if eval_binary else None
        self.timeout_s = float(timeout_s)
        self.adb_timeout_s = float(adb_timeout_s)
        self.device = AdbDevice(adb, remote_dir, self.timeout_s, self.adb_timeout_s)

    def benchmark_command(self, remote_bin: str, remote_model: str, *, op_profiling: bool = False) -> list[str]:
        """The words of the benchmark_model invocation (optionally under taskset).

        The timed run never profiles: with `--enable_op_profiling=true` benchmark_model times every operator inside
        the timed runs, so their latency would include the profiler's overhead. `op_profiling=True` gives the
        separate run that prints the per-operator tables.
        """
        argv = ["taskset", self.taskset] if self.taskset else []
        argv += [
            remote_bin,
            f"--graph={remote_model}",
            f"--num_threads={self.threads}",
            f"--warmup_runs={self.warmup}",
            f"--num_runs={self.runs}",
        ]
        if self.warmup_min_secs is not None:
            argv.append(f"--warmup_min_secs={self.warmup_min_secs:g}")
        if self.min_secs is not None:
            argv.append(f"--min_secs={self.min_secs:g}")
        argv += DELEGATE_FLAGS[self.delegate]
        if op_profiling:
            argv.append("--enable_op_profiling=true")
        return argv

    def _op_profile(self, device, serial, remote_bin, remote_model, tflite: Path, log_path) -> dict[str, Any]:
        """A second benchmark_model run with `--enable_op_profiling=true`, for its per-operator tables only: the
        latency of the record comes from the unprofiled run. Its output goes beside `log_path` (`*.ops.txt`)."""
        argv = self.benchmark_command(remote_bin, remote_model, op_profiling=True)
        with step(f"benchmark_model {tflite.name} on {serial} (op profiling, a separate run)"):
            done = device.shell(
                serial, argv, "shell benchmark_model", timeout=self.timeout_s, check=False, merge_stderr=True
            )
        output = done.stdout + (done.stderr or "")
        ops_log = None
        if log_path is not None:
            ops_log = Path(log_path).with_suffix(".ops.txt")
            atomic_write_text(ops_log, output)
        return {
            "command": shell_join(argv),
            "log": str(ops_log) if ops_log else None,
            "returncode": done.returncode,
            "note": "a separate run: the record's latency was measured without the profiler",
        }

    def run(
        self,
        tflite_path: str | os.PathLike,
        manifest: Any = None,
        *,
        eval_set: EvalSet | None = None,
        host_top1: float | None = None,
        host_n_eval: int | None = None,
        log_path: str | os.PathLike | None = None,
    ) -> BenchResult:
        """Bench one .tflite on the phone and return its `BenchResult` (times in ms, per image, batch 1).

        Accuracy: measured on the phone when the runner has an `eval_binary` and `eval_set` is given
        (`accuracy_source="device"`); otherwise `host_top1` (measured by the caller on the host) is recorded
        as `"host-evaluated"`, or no accuracy at all. When the manifest shows run_eval would feed the model
        wrong inputs, on-device accuracy is refused: with `host_top1` the run goes on with the host number and a
        warning, without it that is an error. `log_path` keeps benchmark_model's raw output.
        """
        tflite = Path(tflite_path)
        manifest_dict = _manifest_dict(manifest)
        plan = self._plan(tflite, manifest_dict, eval_set, host_top1)
        measured = self._measure(tflite, plan, eval_set, log_path)
        return self._record(tflite, manifest_dict, plan, measured, host_top1, host_n_eval)

    def _plan(
        self, tflite: Path, manifest: dict[str, Any], eval_set: EvalSet | None, host_top1: float | None
    ) -> dict[str, Any]:
        """Check the files and the eval set before anything touches the phone: whether accuracy is measured there,
        how many images it should score, and the warnings and extra facts so far."""
        if not tflite.is_file():
            raise PacbEdgeError(f"model file not found: {tflite}")
        if self.benchmark_binary is None:
            raise PacbEdgeError("no benchmark_model binary given: pass the Android build of TFLite's benchmark_model")
        if not self.benchmark_binary.is_file():
            raise PacbEdgeError(f"benchmark_model binary not found: {self.benchmark_binary}")
        plan: dict[str, Any] = {"on_device_eval": False, "n_eval_expected": None, "warnings": [], "extra": {}}
        if self.eval_binary is None:
            return plan
        if eval_set is None:
            plan["warnings"].append("eval binary given but no eval set: accuracy was not measured on the device")
            return plan
        if not self.eval_binary.is_file():
            raise PacbEdgeError(f"run_eval binary not found: {self.eval_binary}")
        check = check_eval_inputs(tflite, eval_set, manifest)
        plan["warnings"] += check.warnings
        plan["n_eval_expected"] = check.n_images
        if check.feed_problem and host_top1 is None:
            raise PacbEdgeError(
                f"{check.feed_problem}: its on-device accuracy would be wrong; drop the eval binary "
                "to use the host accuracy"
            )
        if check.feed_problem:
            plan["warnings"].append(f"on-device accuracy refused ({check.feed_problem}); top-1 is host-evaluated")
            plan["extra"]["device_eval_refused"] = check.feed_problem
        else:
            plan["on_device_eval"] = True
        return plan

    def _measure(
        self, tflite: Path, plan: dict[str, Any], eval_set: EvalSet | None, log_path: str | os.PathLike | None
    ) -> dict[str, Any]:
        """Push, run benchmark_model (and run_eval), and always remove what was pushed."""
        device, on_device_eval, warnings = self.device, plan["on_device_eval"], plan["warnings"]
        serial = device.select_device(self.serial)
        facts = device.device_facts(serial)
        device.check_abi(self.benchmark_binary, facts)
        if on_device_eval:
            device.check_abi(self.eval_binary, facts)
        device.shell(serial, ["mkdir", "-p", self.remote_dir], "shell mkdir")
        remote_bin = device.push_binary(serial, self.benchmark_binary)
        remote_model = device.remote(tflite.name)
        pushed = [remote_model] + ([device.remote("eval_set")] if on_device_eval else [])
        accuracy: dict[str, Any] | None = None
        try:
            push = ["push", str(tflite), remote_model]
            device.run(push, f"push {tflite.name}", timeout=self.timeout_s, serial=serial)
            argv = self.benchmark_command(remote_bin, remote_model)
            with step(f"benchmark_model {tflite.name} on {serial} ({self.delegate}, {self.runs} runs)"):
                done = device.shell(
                    serial, argv, "shell benchmark_model", timeout=self.timeout_s, check=False, merge_stderr=True
                )
            output = done.stdout + (done.stderr or "")
            if log_path is not None:
                atomic_write_text(log_path, output)
            parsed = parse_benchmark_output(output)  # raises with the tool's own error line
            if done.returncode != 0:
                warnings.append(f"benchmark_model exited with code {done.returncode} but printed timings")
            if self.enable_op_profiling:
                plan["extra"]["op_profile"] = self._op_profile(
                    device, serial, remote_bin, remote_model, tflite, log_path
                )
            if on_device_eval:
                with step(f"run_eval {tflite.name} on {serial} ({plan['n_eval_expected']} images, pushed first)"):
                    accuracy = device_accuracy(
                        device,
                        serial,
                        self.eval_binary,
                        remote_model,
                        eval_set,
                        self.threads,
                        self.delegate,
                        self.taskset,
                        self.timeout_s,
                    )
        finally:
            cleaned = device.cleanup(serial, pushed)
        if not cleaned:
            warnings.append(f"could not confirm removal of {', '.join(pushed)} from the device")
        return {"facts": facts, "argv": argv, "parsed": parsed, "accuracy": accuracy}

    def _record(
        self,
        tflite: Path,
        manifest: dict[str, Any],
        plan: dict[str, Any],
        measured: dict[str, Any],
        host_top1: float | None,
        host_n_eval: int | None,
    ) -> BenchResult:
        """The record: latency from benchmark_model, accuracy from the phone or the host, every warning logged."""
        parsed, accuracy, warnings, extra = measured["parsed"], measured["accuracy"], plan["warnings"], plan["extra"]
        latency, latency_from = latency_from_parsed(parsed)
        delegate_info, delegate_warnings = delegate_record(parsed, self.delegate)
        warnings += delegate_warnings
        top1 = accuracy_source = n_eval = None
        if accuracy is not None:
            top1, n_eval, accuracy_source = accuracy["top1"], accuracy["n"], ACCURACY_DEVICE
            extra["device_eval"] = {k: v for k, v in accuracy.items() if k != "top1"}
            expected = plan["n_eval_expected"]
            if expected is not None and n_eval is not None and n_eval != expected:
                warnings.append(f"run_eval scored {n_eval} images of {expected}")
            if accuracy["unconsumed_flags"]:
                warnings.append(
                    f"run_eval ignored {' '.join(accuracy['unconsumed_flags'])}: its accuracy was measured with "
                    f"run_eval's default (XNNPACK), not {self.delegate}"
                )
            if host_top1 is not None:
                extra["host_top1"] = host_top1  # kept for comparison, never as the record's accuracy
        elif host_top1 is not None:
            top1, n_eval, accuracy_source = float(host_top1), host_n_eval, ACCURACY_HOST
        for w in warnings:
            log.warning("%s: %s", tflite.name, w)
        mean_ms = latency["mean"]
        extra.update(
            latency_from=latency_from,
            delegate=delegate_info,
            warnings=warnings,
            init_ms=parsed["init_ms"],
            first_inference_ms=parsed["first_inference_ms"],
            warmup_ms=parsed["warmup"],
            memory_mb=parsed["memory_mb"],
            model_size_mb=parsed["model_size_mb"],
            benchmark_command=shell_join(measured["argv"]),
            requested={"warmup": self.warmup, "runs": self.runs, "threads": self.threads},
            taskset=self.taskset,
            remote_dir=self.remote_dir,
        )
        return BenchResult(
            artifact=str(tflite),
            format="tflite",
            device="android",
            runner="benchmark_model",
            precision=manifest.get("precision"),
            latency_ms=latency,
            throughput_ips=1000.0 / mean_ms if mean_ms else None,
            top1=top1,
            accuracy_source=accuracy_source,
            n_eval=n_eval,
            size_bytes=tflite.stat().st_size,
            threads=parsed["threads"] if parsed["threads"] is not None else self.threads,
            warmup=int(parsed["warmup"]["count"]) if parsed["warmup"] else None,
            runs=int(parsed["inference"]["count"]),
            device_facts=measured["facts"],
            extra=extra,
            spec=_spec_of(manifest),
        )
