"""Android runner: run TFLite's `benchmark_model` on a phone over adb and return a `BenchResult`.

Steps of `AndroidRunner.run`: pick the device (`adb devices`), read its facts (`getprop`), push the binary
when the copy on the phone differs in size, push the model, run `benchmark_model`, parse its output, report
how much of the graph a requested delegate took, and remove the pushed model in any case. The binary stays on
the phone for the next run.

Safety: every host command is an argument list (never `shell=True`), and every `adb shell` command string is
built by `shell_join`, which quotes each word with `shlex.quote`, so a file or folder name holding spaces,
`;`, `$()` or backticks reaches the phone's shell as one literal word.

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
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pacb_edge.errors import PacbEdgeError
from pacb_edge.fileio import atomic_write_text

from .benchmark_model_parser import latency_from_parsed, parse_benchmark_output, parse_run_eval_output
from .delegates import DEFAULT_DELEGATE, DELEGATE_FLAGS, delegate_record
from .record import ACCURACY_DEVICE, ACCURACY_HOST, BenchResult
from .run_eval import (
    RUN_EVAL_DELEGATE_FLAGS,
    EvalSet,
    check_eval_inputs,
    run_eval_feed_problem,
    unconsumed_flags,
    write_eval_set,
)

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

# What each `getprop` key is recorded as in `device_facts`.
DEVICE_PROPS: dict[str, str] = {
    "model": "ro.product.model",
    "board": "ro.board.platform",
    "android": "ro.build.version.release",
    "abi": "ro.product.cpu.abi",
    "abilist": "ro.product.cpu.abilist",
}

# `adb devices` state -> what the user should do.
_STATE_HELP: dict[str, str] = {
    "unauthorized": "accept the 'Allow USB debugging?' prompt on the phone, then retry",
    "authorizing": "accept the 'Allow USB debugging?' prompt on the phone, then retry",
    "offline": "it does not answer adb: replug the cable or run `adb reconnect`, then retry",
    "no permissions": "this user may not open the USB device: add a udev rule for the phone, then replug it",
    "connecting": "adb is still connecting to it: retry in a few seconds",
    "recovery": "it is in recovery mode: boot it normally",
    "sideload": "it is in sideload mode: boot it normally",
    "bootloader": "it is in bootloader mode: boot it normally",
}

# ELF e_machine -> Android ABI, to catch an arm64 binary pushed to a 32-bit phone before it fails cryptically.
_ELF_ABI = {0xB7: "arm64-v8a", 0x28: "armeabi-v7a", 0x3E: "x86_64", 0x03: "x86"}
_TASKSET_MASK = re.compile(r"(0x)?[0-9a-fA-F]+")


def shell_join(argv: Sequence[str]) -> str:
    """One `adb shell` command string from words, each quoted for a POSIX shell (mksh/toybox on the phone)."""
    return " ".join(shlex.quote(str(a)) for a in argv)


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


def _elf_abi(path: Path) -> str | None:
    """The Android ABI an ELF binary is built for, or None if it is not an ELF file (e.g. a script)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    return _ELF_ABI.get(int.from_bytes(head[18:20], order))


def _last_line(*texts: str | None) -> str:
    for text in texts:
        lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:300]
    return ""


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

    # adb plumbing

    def _adb_path(self) -> str:
        found = shutil.which(self.adb)
        if not found:
            raise PacbEdgeError(
                f"adb not found ({self.adb!r} is not on PATH): install Android platform-tools "
                "(Debian/Ubuntu: apt-get install adb) or pass the path to adb"
            )
        return found

    def _adb(
        self,
        args: Sequence[str],
        what: str,
        timeout: float | None = None,
        check: bool = True,
        serial: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self._adb_path()]
        if serial:
            cmd += ["-s", serial]
        cmd += list(args)
        limit = timeout or self.adb_timeout_s
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            raise PacbEdgeError(f"adb {what} timed out after {limit:g} s") from None
        except OSError as e:
            raise PacbEdgeError(f"cannot run adb ({self.adb}): {e.strerror or e}") from None
        if check and done.returncode != 0:
            detail = _last_line(done.stderr, done.stdout) or f"exit code {done.returncode}"
            raise PacbEdgeError(f"adb {what} failed: {detail}")
        return done

    def _shell(
        self,
        serial: str,
        argv: Sequence[str],
        what: str,
        timeout: float | None = None,
        check: bool = True,
        merge_stderr: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run one quoted command on the phone. `merge_stderr` appends a literal `2>&1` (not user input)."""
        command = shell_join(argv) + (" 2>&1" if merge_stderr else "")
        return self._adb(["shell", command], what, timeout=timeout, check=check, serial=serial)

    def _remote(self, name: str) -> str:
        return posixpath.join(self.remote_dir, name)

    # steps

    def select_device(self) -> str:
        """The serial to use: the only attached device, or `serial`; a clear error for every other case."""
        out = self._adb(["devices"], "devices").stdout
        devices: list[tuple[str, str]] = []
        for line in out.splitlines():
            line = line.strip()
            if not line or line.startswith("*") or line.startswith("List of devices"):
                continue
            parts = line.split(None, 1)
            state = parts[1].strip() if len(parts) > 1 else "unknown"
            state = "no permissions" if state.startswith("no permissions") else state.split()[0]
            devices.append((parts[0], state))
        listed = ", ".join(f"{s} ({st})" if st != "device" else s for s, st in devices)
        if self.serial:
            states = dict(devices)
            if self.serial not in states:
                raise PacbEdgeError(f"device {self.serial} is not attached (adb devices lists: {listed or 'none'})")
            serial, state = self.serial, states[self.serial]
        elif not devices:
            raise PacbEdgeError(
                "no Android device attached (adb devices lists none): connect a phone with USB debugging on"
            )
        elif len(devices) > 1:
            raise PacbEdgeError(f"several devices attached ({listed}): pass --serial")
        else:
            serial, state = devices[0]
        if state != "device":
            help_text = _STATE_HELP.get(state, "it is not ready for adb")
            raise PacbEdgeError(f"device {serial} is {state}: {help_text}")
        return serial

    def device_facts(self, serial: str) -> dict[str, Any]:
        """Model, SoC platform, Android release and ABIs from `getprop` (one `adb shell` for all of them)."""
        command = " ; ".join(shell_join(["getprop", prop]) for prop in DEVICE_PROPS.values())
        done = self._adb(["shell", command], "shell getprop", check=False, serial=serial)
        values = [ln.strip() for ln in done.stdout.splitlines()] if done.returncode == 0 else []
        facts: dict[str, Any] = {"serial": serial}
        for i, key in enumerate(DEVICE_PROPS):
            facts[key] = (values[i] if i < len(values) else "") or None
        return facts

    def _check_abi(self, binary: Path, facts: Mapping[str, Any]) -> None:
        abi = _elf_abi(binary)
        supported = [a for a in str(facts.get("abilist") or facts.get("abi") or "").split(",") if a]
        if abi and supported and abi not in supported:
            raise PacbEdgeError(
                f"{binary.name} is built for {abi} but the device runs {', '.join(supported)}: use a matching build"
            )

    def _push_binary(self, serial: str, binary: Path) -> str:
        """Push `binary` unless the phone already has a file of the same size there; make it executable."""
        remote = self._remote(binary.name)
        done = self._shell(serial, ["stat", "-c", "%s", remote], "shell stat", check=False)
        if done.returncode != 0 or done.stdout.strip() != str(binary.stat().st_size):
            self._adb(["push", str(binary), remote], f"push {binary.name}", timeout=self.timeout_s, serial=serial)
        self._shell(serial, ["chmod", "755", remote], "shell chmod")
        return remote

    def benchmark_command(self, remote_bin: str, remote_model: str) -> list[str]:
        """The words of the benchmark_model invocation (optionally under taskset)."""
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
        if self.enable_op_profiling:
            argv.append("--enable_op_profiling=true")
        return argv

    def _device_accuracy(self, serial: str, remote_model: str, eval_set: EvalSet) -> dict[str, Any]:
        """Push the eval set, run run_eval on the phone, return {"top1", "n", ...}."""
        assert self.eval_binary is not None
        remote_eval = self._remote("eval_set")
        remote_images = posixpath.join(remote_eval, "images")
        self._shell(serial, ["rm", "-rf", remote_eval], "shell rm")
        self._shell(serial, ["mkdir", "-p", remote_images], "shell mkdir")
        files = [str(p) for p in eval_set.image_files()]
        for start in range(0, len(files), 200):  # several files per push, few enough for any argv limit
            chunk = files[start : start + 200]
            self._adb(
                ["push", *chunk, remote_images + "/"],
                "push eval images",
                timeout=self.timeout_s,
                serial=serial,
            )
        remote_gt = posixpath.join(remote_eval, "ground_truth_labels.txt")
        remote_labels = posixpath.join(remote_eval, "model_output_labels.txt")
        remote_metrics = posixpath.join(remote_eval, "metrics.txt")
        self._adb(["push", str(eval_set.ground_truth_labels), remote_gt], "push labels", serial=serial)
        self._adb(["push", str(eval_set.model_output_labels), remote_labels], "push labels", serial=serial)
        remote_run_eval = self._push_binary(serial, self.eval_binary)
        argv = ["taskset", self.taskset] if self.taskset else []
        argv += [
            remote_run_eval,
            f"--model_file={remote_model}",
            f"--ground_truth_images_path={remote_images}",
            f"--ground_truth_labels={remote_gt}",
            f"--model_output_labels={remote_labels}",
            f"--output_file_path={remote_metrics}",
            "--num_images=0",
            f"--num_interpreter_threads={self.threads}",
        ]
        argv += RUN_EVAL_DELEGATE_FLAGS[self.delegate]
        done = self._shell(serial, argv, "shell run_eval", timeout=self.timeout_s, check=False, merge_stderr=True)
        result = parse_run_eval_output(done.stdout)
        if result is None:  # older run_eval: metrics only in the text proto it writes
            cat = self._shell(serial, ["cat", remote_metrics], "shell cat", check=False)
            result = parse_run_eval_output(cat.stdout) if cat.returncode == 0 else None
        if result is None:
            errors = [ln for ln in done.stdout.splitlines() if "ERROR" in ln]
            detail = _last_line("\n".join(errors), done.stdout) or f"exit code {done.returncode}"
            raise PacbEdgeError(f"run_eval gave no top-1 accuracy: {detail}")
        result["command"] = shell_join(argv)
        result["unconsumed_flags"] = unconsumed_flags(done.stdout)
        return result

    def _cleanup(self, serial: str, paths: Sequence[str]) -> bool:
        """Remove what this run pushed (the binaries stay); returns False if the phone did not confirm it."""
        ok = True
        for path in paths:
            try:
                done = self._shell(serial, ["rm", "-rf", path], "shell rm", check=False)
                ok = ok and done.returncode == 0
            except PacbEdgeError as e:  # never hide the run's own error behind a cleanup error
                log.warning("could not remove %s from %s: %s", path, serial, e)
                ok = False
        return ok

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
        if not tflite.is_file():
            raise PacbEdgeError(f"model file not found: {tflite}")
        if self.benchmark_binary is None:
            raise PacbEdgeError("no benchmark_model binary given: pass the Android build of TFLite's benchmark_model")
        if not self.benchmark_binary.is_file():
            raise PacbEdgeError(f"benchmark_model binary not found: {self.benchmark_binary}")
        manifest_dict = _manifest_dict(manifest)
        spec, precision = _spec_of(manifest_dict), manifest_dict.get("precision")
        on_device_eval = self.eval_binary is not None and eval_set is not None
        warnings: list[str] = []
        extra: dict[str, Any] = {}
        if self.eval_binary is not None and eval_set is None:
            warnings.append("eval binary given but no eval set: accuracy was not measured on the device")
        n_eval_expected = None
        if on_device_eval:
            assert eval_set is not None and self.eval_binary is not None
            if not self.eval_binary.is_file():
                raise PacbEdgeError(f"run_eval binary not found: {self.eval_binary}")
            check = check_eval_inputs(tflite, eval_set, manifest_dict)
            warnings += check.warnings
            n_eval_expected = check.n_images
            if check.feed_problem and host_top1 is None:
                raise PacbEdgeError(
                    f"{check.feed_problem}: its on-device accuracy would be wrong; drop the eval binary "
                    "to use the host accuracy"
                )
            if check.feed_problem:
                warnings.append(f"on-device accuracy refused ({check.feed_problem}); top-1 is host-evaluated")
                extra["device_eval_refused"] = check.feed_problem
                on_device_eval = False

        serial = self.select_device()
        facts = self.device_facts(serial)
        self._check_abi(self.benchmark_binary, facts)
        if on_device_eval:
            assert self.eval_binary is not None
            self._check_abi(self.eval_binary, facts)
        self._shell(serial, ["mkdir", "-p", self.remote_dir], "shell mkdir")
        remote_bin = self._push_binary(serial, self.benchmark_binary)
        remote_model = self._remote(tflite.name)
        pushed = [remote_model]
        if on_device_eval:
            pushed.append(self._remote("eval_set"))
        accuracy: dict[str, Any] | None = None
        try:
            self._adb(
                ["push", str(tflite), remote_model],
                f"push {tflite.name}",
                timeout=self.timeout_s,
                serial=serial,
            )
            argv = self.benchmark_command(remote_bin, remote_model)
            done = self._shell(
                serial, argv, "shell benchmark_model", timeout=self.timeout_s, check=False, merge_stderr=True
            )
            output = done.stdout + (done.stderr or "")
            if log_path is not None:
                atomic_write_text(log_path, output)
            parsed = parse_benchmark_output(output)  # raises with the tool's own error line
            if done.returncode != 0:
                warnings.append(f"benchmark_model exited with code {done.returncode} but printed timings")
            if on_device_eval:
                assert eval_set is not None
                accuracy = self._device_accuracy(serial, remote_model, eval_set)
        finally:
            cleaned = self._cleanup(serial, pushed)

        latency, latency_from = latency_from_parsed(parsed)
        delegate_info, delegate_warnings = delegate_record(parsed, self.delegate)
        warnings += delegate_warnings
        top1 = accuracy_source = n_eval = None
        if accuracy is not None:
            top1, n_eval, accuracy_source = accuracy["top1"], accuracy["n"], ACCURACY_DEVICE
            extra["device_eval"] = {k: v for k, v in accuracy.items() if k != "top1"}
            if n_eval_expected is not None and n_eval is not None and n_eval != n_eval_expected:
                warnings.append(f"run_eval scored {n_eval} images of {n_eval_expected}")
            if accuracy["unconsumed_flags"]:
                warnings.append(
                    f"run_eval ignored {' '.join(accuracy['unconsumed_flags'])}: its accuracy was measured with "
                    f"run_eval's default (XNNPACK), not {self.delegate}"
                )
            if host_top1 is not None:
                extra["host_top1"] = host_top1  # kept for comparison, never as the record's accuracy
        elif host_top1 is not None:
            top1, n_eval, accuracy_source = float(host_top1), host_n_eval, ACCURACY_HOST

        if not cleaned:
            warnings.append(f"could not confirm removal of {', '.join(pushed)} from the device")
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
            benchmark_command=shell_join(argv),
            requested={"warmup": self.warmup, "runs": self.runs, "threads": self.threads},
            taskset=self.taskset,
            remote_dir=self.remote_dir,
        )
        return BenchResult(
            artifact=str(tflite),
            format="tflite",
            device="android",
            runner="benchmark_model",
            precision=precision,
            latency_ms=latency,
            throughput_ips=1000.0 / mean_ms if mean_ms else None,
            top1=top1,
            accuracy_source=accuracy_source,
            n_eval=n_eval,
            size_bytes=tflite.stat().st_size,
            threads=parsed["threads"] if parsed["threads"] is not None else self.threads,
            warmup=int(parsed["warmup"]["count"]) if parsed["warmup"] else None,
            runs=int(parsed["inference"]["count"]),
            device_facts=facts,
            extra=extra,
            spec=spec,
        )
