"""Android runner: run TFLite's `benchmark_model` on a phone over adb and return a `BenchResult`.

Steps of `AndroidRunner.run`: pick the device (`adb devices`), read its facts (`getprop`), push the binary
when the copy on the phone differs in size, push the model, run `benchmark_model`, parse its output, report
how much of the graph a requested delegate took, and remove the pushed model in any case. The binary stays on
the phone for the next run.

Safety: every host command is an argument list (never `shell=True`), and every `adb shell` command string is
built by `shell_join`, which quotes each word with `shlex.quote`, so a file or folder name holding spaces,
`;`, `$()` or backticks reaches the phone's shell as one literal word.

Accuracy: with `eval_binary` (TFLite's `run_eval` from tools/evaluation/tasks/imagenet_image_classification)
and an `EvalSet`, top-1 is measured on the phone and recorded as `accuracy_source="device"`. Otherwise a
number the caller measured on the host can be passed as `host_top1` and is recorded as `"host-evaluated"`; the
two are never mixed up.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.errors import PacbEdgeError
from pacb_edge.fileio import atomic_write_text

from .benchmark_model_parser import latency_from_parsed, parse_benchmark_output, parse_run_eval_output
from .record import ACCURACY_DEVICE, ACCURACY_HOST, BenchResult

log = logging.getLogger(__name__)

DEFAULT_REMOTE_DIR = "/data/local/tmp/pacb_edge"

# Delegate name -> benchmark_model flags (tools/benchmark/README.md, "TFLite delegate parameters").
DELEGATE_FLAGS: dict[str, tuple[str, ...]] = {
    "gpu": ("--use_gpu=true",),
    "nnapi": ("--use_nnapi=true",),
    "xnnpack": ("--use_xnnpack=true",),
}

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
_RUN_EVAL_TOPK = 10  # run_eval always scores top-10, so it needs at least 10 classes


def shell_join(argv: Sequence[str]) -> str:
    """One `adb shell` command string from words, each quoted for a POSIX shell (mksh/toybox on the phone)."""
    return " ".join(shlex.quote(str(a)) for a in argv)


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


def write_eval_set(
    x: np.ndarray,
    y: np.ndarray,
    out_dir: str | os.PathLike,
    num_classes: int | None = None,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> EvalSet:
    """Write a test array as an `EvalSet`: one `.rgb8` raw image per sample plus the two label files.

    `x` is either float N x C x H x W normalized with `mean`/`std` (what `DataBundle.arrays` returns), or
    uint8 pixels N x H x W x C or N x C x H x W. Raw `.rgb8` is lossless and already at the model's input
    size, so run_eval skips its ImageNet centre crop and resize for it (it reads only `.rgb8`, `.jpg` and
    `.jpeg`; PNG is not read). Grayscale is repeated to 3 channels, which run_eval requires. Labels are
    written as class indices.
    """
    x = np.asarray(x)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if x.ndim != 4 or len(x) != len(y):
        raise PacbEdgeError(f"eval images must be N x C x H x W with one label each, got {x.shape} and {len(y)} labels")
    if len(y) == 0:
        raise PacbEdgeError("the eval set is empty")
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    if k < _RUN_EVAL_TOPK:
        raise PacbEdgeError(f"run_eval scores top-{_RUN_EVAL_TOPK} and needs at least 10 classes; this set has {k}")
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


def run_eval_feed_problem(
    input_dtype: str, scale: float, zero_point: int, mean: Sequence[float], std: Sequence[float]
) -> str | None:
    """Why run_eval's fixed preprocessing would feed this model wrong numbers, or None when it matches.

    run_eval feeds a float32 input (pixel - 127.5) / 127.5, an int8 input pixel - 128 and a uint8 input the
    pixel (ImagePreprocessingConfigBuilder::AddDefaultNormalizationStep). The model expects (pixel / 255 -
    mean) / std, quantized with its input scale and zero point. Agreement within one quantization step is
    accepted.
    """
    p = np.arange(256, dtype=np.float64)[:, None]
    m = np.asarray(mean, dtype=np.float64)[None, :]
    s = np.asarray(std, dtype=np.float64)[None, :]
    expected = (p / 255.0 - m) / s
    if input_dtype == "float32":
        fed = (p - 127.5) / 127.5
        if np.abs(expected - fed).max() <= 1e-3:
            return None
        return (
            "run_eval feeds (pixel - 127.5) / 127.5 to a float32 input, "
            f"but this model expects mean={list(mean)} "
            f"std={list(std)}"
        )
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
            f"to the model's {input_dtype} input, "
            f"but this model expects mean={list(mean)} std={list(std)} quantized with scale={scale:g} "
            f"zero_point={zero_point}"
        )
    return f"run_eval supports float32, int8 and uint8 inputs, not {input_dtype}"


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


def _spec_and_precision(manifest: Any) -> tuple[dict[str, Any], str | None]:
    """The model spec dict and precision from a manifest (dict, JSON path, or object with `to_dict`)."""
    if manifest is None:
        return {}, None
    if isinstance(manifest, (str, os.PathLike)):
        try:
            manifest = json.loads(Path(manifest).read_text())
        except (OSError, ValueError) as e:
            raise PacbEdgeError(f"cannot read manifest {manifest}: {e}") from None
    if hasattr(manifest, "to_dict"):
        manifest = manifest.to_dict()
    if not isinstance(manifest, Mapping):
        raise PacbEdgeError("the manifest must be a JSON object")
    for key in ("spec", "model_spec"):
        if isinstance(manifest.get(key), Mapping):
            return dict(manifest[key]), manifest.get("precision")
    spec = dict(manifest) if "arch" in manifest else {}
    return spec, manifest.get("precision")


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


def _coverage_for(parsed: dict[str, Any], requested: str | None) -> dict[str, Any] | None:
    """The coverage entry of the requested delegate (matched by name), else the last one the tool reported."""
    entries = list(parsed.get("delegates") or [])
    if parsed.get("delegate") and parsed["delegate"] not in entries:
        entries.append(parsed["delegate"])
    if requested:
        token = requested.lower()
        named = [d for d in entries if token in str(d.get("name", "")).lower().replace("_", "")]
        named += [d for d in entries if token in str(d.get("applied_as", "")).lower()]
        return named[-1] if named else None
    return parsed.get("delegate")


class AndroidRunner:
    """Bench .tflite files on an Android phone over adb with TFLite's `benchmark_model`, one `run` each."""

    def __init__(
        self,
        adb: str = "adb",
        serial: str | None = None,
        benchmark_binary: str | os.PathLike | None = None,
        remote_dir: str = DEFAULT_REMOTE_DIR,
        threads: int = 4,
        delegate: str | None = None,
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
        if delegate in (None, "", "cpu"):
            delegate = None
        elif delegate not in DELEGATE_FLAGS:
            raise PacbEdgeError(f"unknown delegate {delegate!r}; use one of: cpu, {', '.join(DELEGATE_FLAGS)}")
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
        if self.delegate:
            argv += DELEGATE_FLAGS[self.delegate]
        if self.enable_op_profiling:
            argv.append("--enable_op_profiling=true")
        return argv

    def _check_eval_inputs(self, tflite: Path, eval_set: EvalSet, spec: Mapping[str, Any]) -> tuple[int, list[str]]:
        """Validate the eval set and that run_eval will feed this model correctly; returns (n, warnings)."""
        assert self.eval_binary is not None
        if not self.eval_binary.is_file():
            raise PacbEdgeError(f"run_eval binary not found: {self.eval_binary}")
        for p in (eval_set.images_dir, eval_set.ground_truth_labels, eval_set.model_output_labels):
            if not Path(p).exists():
                raise PacbEdgeError(f"eval set file not found: {p}")
        n_images = len(eval_set.image_files())
        n_labels = len(Path(eval_set.ground_truth_labels).read_text().splitlines())
        n_classes = len(Path(eval_set.model_output_labels).read_text().splitlines())
        if n_images == 0 or n_images != n_labels:
            raise PacbEdgeError(f"eval set has {n_images} images but {n_labels} ground-truth labels")
        if n_classes < _RUN_EVAL_TOPK:
            raise PacbEdgeError(f"run_eval scores top-{_RUN_EVAL_TOPK} and needs at least 10 classes, got {n_classes}")
        warnings: list[str] = []
        io = _model_io(tflite)
        if io is None:
            warnings.append("could not read the model's input on the host: run_eval's preprocessing is unverified")
            return n_images, warnings
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
        if "mean" not in spec or "std" not in spec:
            warnings.append("no mean/std in the manifest: run_eval's preprocessing is unverified")
            return n_images, warnings
        problem = run_eval_feed_problem(
            io["input_dtype"], io["input_scale"], io["input_zero_point"], spec["mean"], spec["std"]
        )
        if problem:
            raise PacbEdgeError(
                f"{problem}: its on-device accuracy would be wrong; drop the eval binary to use the host accuracy"
            )
        return n_images, warnings

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
        if self.delegate:
            argv.append(f"--delegate={self.delegate}")
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
        as `"host-evaluated"`, or no accuracy at all. `log_path` keeps benchmark_model's raw output.
        """
        tflite = Path(tflite_path)
        if not tflite.is_file():
            raise PacbEdgeError(f"model file not found: {tflite}")
        if self.benchmark_binary is None:
            raise PacbEdgeError("no benchmark_model binary given: pass the Android build of TFLite's benchmark_model")
        if not self.benchmark_binary.is_file():
            raise PacbEdgeError(f"benchmark_model binary not found: {self.benchmark_binary}")
        spec, precision = _spec_and_precision(manifest)
        on_device_eval = self.eval_binary is not None and eval_set is not None
        warnings: list[str] = []
        if self.eval_binary is not None and eval_set is None:
            warnings.append("eval binary given but no eval set: accuracy was not measured on the device")
        n_eval_expected = None
        if on_device_eval:
            assert eval_set is not None
            n_eval_expected, eval_warnings = self._check_eval_inputs(tflite, eval_set, spec)
            warnings += eval_warnings

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
        coverage = _coverage_for(parsed, self.delegate)
        delegate_info: dict[str, Any] = {"requested": self.delegate, **(coverage or {})}
        delegate_info["tool_messages"] = parsed["fallback_warnings"]
        if self.delegate:
            if coverage is None:
                warnings.append(
                    f"requested delegate {self.delegate} reported no node taken: the model probably ran on the CPU"
                )
            elif not coverage.get("whole_graph"):
                n, m = coverage.get("nodes_delegated"), coverage.get("nodes_total")
                share = f"{n} of {m} nodes" if n is not None and m else "only part of the graph"
                warnings.append(
                    f"{self.delegate} delegate took {share}; the rest ran on the CPU, "
                    "so the latency is a mixed delegate+CPU number"
                )
        top1 = accuracy_source = n_eval = None
        extra: dict[str, Any] = {}
        if accuracy is not None:
            top1, n_eval, accuracy_source = accuracy["top1"], accuracy["n"], ACCURACY_DEVICE
            extra["device_eval"] = {k: v for k, v in accuracy.items() if k != "top1"}
            if n_eval_expected is not None and n_eval is not None and n_eval != n_eval_expected:
                warnings.append(f"run_eval scored {n_eval} images of {n_eval_expected}")
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
