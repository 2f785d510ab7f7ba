"""AndroidRunner over adb: the real adb client with no phone, and an emulated device (tests/fake_adb/adb).

The emulated device is a folder: `adb push` copies into it and `adb shell` runs the command string with a real
POSIX `sh -c` there, so a quoting mistake in the runner would really execute the injected part.
"""

import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.device_bench import android, run_eval
from pacb_edge.device_bench.android import (
    DELEGATE_FLAGS,
    AndroidRunner,
    run_eval_feed_problem,
    shell_join,
    write_eval_set,
)

FAKE_ADB_DIR = Path(__file__).resolve().parent / "fake_adb"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
REMOTE = "/data/local/tmp/pacb_edge"
EVIL_NAME = "evil; touch PWNED $(id) `id`.tflite"
# what `_model_io` reads from a float32 8x8 RGB, 10-class .tflite (the test models are not real flatbuffers)
FLOAT_IO = {
    "n_inputs": 1,
    "n_outputs": 1,
    "input_dtype": "float32",
    "input_shape": [1, 8, 8, 3],
    "input_scale": 0.0,
    "input_zero_point": 0,
    "output_shape": [1, 10],
}
INT8_RAW_IO = dict(FLOAT_IO, input_dtype="int8", input_scale=1.0, input_zero_point=-128)
# what an export with the normalization folded into the graph writes
RAW_PIXELS = {"normalization": "in-model", "pixel_range": [0, 255]}
INT8_RAW_MANIFEST = {
    "spec": {"arch": "resnet20", "mean": [0.5] * 3, "std": [0.5] * 3},
    "precision": "int8",
    "input": {"dtype": "int8", "scale": 1.0, "zero_point": -128, **RAW_PIXELS},
}
CIFAR = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.243, 0.261]}


def fixture_path(name: str) -> Path:
    return FIXTURES / name


class FakeDevice:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        for script in (
            FAKE_ADB_DIR / "adb",
            FAKE_ADB_DIR / "benchmark_model",
            FAKE_ADB_DIR / "run_eval",
            *(FAKE_ADB_DIR / "device_bin").iterdir(),
        ):
            script.chmod(0o755)
        self.root = tmp_path / "device"
        self.root.mkdir()
        self.log = tmp_path / "adb_calls.jsonl"
        self.monkeypatch = monkeypatch
        # `#!/usr/bin/env python3` finds this interpreter first (a version-manager shim costs ~0.2 s a call)
        python_dir = tmp_path / "python"
        python_dir.mkdir()
        (python_dir / "python3").symlink_to(sys.executable)
        monkeypatch.setenv("PATH", os.pathsep.join([str(FAKE_ADB_DIR), str(python_dir), os.environ["PATH"]]))
        monkeypatch.setenv("FAKE_ADB_LOG", str(self.log))
        monkeypatch.setenv("FAKE_ADB_ROOT", str(self.root))
        monkeypatch.setenv("FAKE_ADB_DEVICES", "FAKE0001:device")
        self.fixture("benchmark_model_native_cpu.txt")
        self.model = tmp_path / "models" / "model_int8.tflite"
        self.model.parent.mkdir()
        self.model.write_bytes(b"TFL3" + bytes(1000))

    def fixture(self, name: str) -> None:
        self.monkeypatch.setenv("FAKE_ADB_FIXTURE", str(fixture_path(name)))

    def devices(self, spec: str) -> None:
        self.monkeypatch.setenv("FAKE_ADB_DEVICES", spec)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def shell_commands(self) -> list[str]:
        return [c[c.index("shell") + 1] for c in self.calls() if "shell" in c]

    def pushes(self) -> list[list[str]]:
        return [c[c.index("push") + 1 :] for c in self.calls() if "push" in c]

    def remote(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def runner(self, **kw) -> AndroidRunner:
        kw.setdefault("benchmark_binary", FAKE_ADB_DIR / "benchmark_model")
        return AndroidRunner(**kw)


@pytest.fixture
def device(tmp_path, monkeypatch):
    return FakeDevice(tmp_path, monkeypatch)


# The emulated device


def test_emulated_device_happy_path_cpu(device):
    manifest = {"spec": {"arch": "resnet20", "mean": [0.5] * 3}, "precision": "int8"}
    r = device.runner(delegate="cpu").run(device.model, manifest, log_path=device.root.parent / "logs" / "bench.txt")
    assert "count=50 first=58010" in (device.root.parent / "logs" / "bench.txt").read_text()
    # the record carries the fixture's numbers (benchmark_model_native_cpu.txt), in ms
    assert r.latency_ms["mean"] == pytest.approx(57.8192)
    assert r.latency_ms["std"] == pytest.approx(0.912)
    assert (r.latency_ms["min"], r.latency_ms["max"]) == pytest.approx((56.820, 61.044))
    assert r.latency_ms["p50"] == pytest.approx(57.8192)
    assert r.latency_ms["p90"] is None and r.latency_ms["p99"] is None
    assert r.extra["latency_from"]["approximated"]["p50"].startswith("mean")
    assert (r.runs, r.warmup, r.threads) == (50, 14, 4)
    assert r.per_image_ms == pytest.approx(57.8192)
    assert r.throughput_ips == pytest.approx(1000 / 57.8192)
    assert (r.format, r.device, r.runner, r.precision) == ("tflite", "android", "benchmark_model", "int8")
    assert r.spec["arch"] == "resnet20"
    assert r.extra["init_ms"] == pytest.approx(32.973)
    assert r.top1 is None and r.accuracy_source is None  # nothing measured, nothing claimed
    assert r.device_facts == {
        "serial": "FAKE0001",
        "model": "Pixel 7 (emulated)",
        "board": "gs201",
        "android": "14",
        "abi": "arm64-v8a",
        "abilist": "arm64-v8a,armeabi-v7a,armeabi",
    }
    assert r.extra["warnings"] == []
    d = r.extra["delegate"]  # cpu is named, and no delegate took any node
    assert (d["requested"], d["flags"], d["nodes_delegated"], d["fraction"]) == ("cpu", ["--use_xnnpack=false"], 0, 0.0)

    # every push lands under the remote folder; the host side never uses a shell
    pushes = device.pushes()
    assert pushes and all(p[-1].startswith(REMOTE + "/") for p in pushes)
    assert [REMOTE + "/benchmark_model", REMOTE + "/model_int8.tflite"] == [p[-1] for p in pushes]
    assert all(c[:2] == ["-s", "FAKE0001"] for c in device.calls() if c[0] != "devices")
    cmds = device.shell_commands()
    assert f"mkdir -p {REMOTE}" in cmds
    assert f"chmod 755 {REMOTE}/benchmark_model" in cmds
    assert cmds[-1] == f"rm -rf {REMOTE}/model_int8.tflite"  # cleanup is the last thing done
    bench = next(c for c in cmds if "--graph=" in c)
    assert shlex.split(bench) == [
        f"{REMOTE}/benchmark_model",
        f"--graph={REMOTE}/model_int8.tflite",
        "--num_threads=4",
        "--warmup_runs=10",
        "--num_runs=100",
        "--use_xnnpack=false",  # without it benchmark_model applies XNNPACK anyway
        "2>&1",
    ]
    assert (device.root / "benchmark_model_args").read_text().splitlines()[-1] == "--use_xnnpack=false"
    # on the device: the model is gone, the binary stays (executable) for the next run
    assert not device.remote(f"{REMOTE}/model_int8.tflite").exists()
    assert os.access(device.remote(f"{REMOTE}/benchmark_model"), os.X_OK)


def test_op_profiling_is_a_separate_run_from_the_timed_one(device, tmp_path):
    log = tmp_path / "logs" / "bench.txt"
    r = device.runner(delegate="cpu", enable_op_profiling=True).run(device.model, log_path=log)
    benches = [shlex.split(c) for c in device.shell_commands() if "--graph=" in c]
    assert len(benches) == 2
    assert "--enable_op_profiling=true" not in benches[0]  # the timed run: no profiler overhead in latency_ms
    assert benches[1][-2] == "--enable_op_profiling=true"
    prof = r.extra["op_profile"]
    assert prof["log"] == str(log.with_suffix(".ops.txt")) and Path(prof["log"]).is_file()
    assert "without the profiler" in prof["note"] and "--enable_op_profiling=true" not in r.extra["benchmark_command"]
    assert r.latency_ms["mean"] == pytest.approx(57.8192)
    assert "op_profile" not in device.runner(delegate="cpu").run(device.model).extra  # off by default


def test_emulated_device_gpu_partial_delegate_warns(device, caplog):
    device.fixture("benchmark_model_delegate_fallback.txt")
    with caplog.at_level(logging.WARNING):
        r = device.runner(delegate="gpu").run(device.model)
    d = r.extra["delegate"]
    assert d["requested"] == "gpu" and d["name"] == "TfLiteGpuDelegateV2" and d["flags"] == ["--use_gpu=true"]
    assert (d["nodes_delegated"], d["nodes_total"], d["whole_graph"]) == (31, 58, False)
    assert any("31 of 58 nodes" in w for w in r.extra["warnings"])
    assert any("31 of 58 nodes" in rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING)
    words = shlex.split(next(c for c in device.shell_commands() if "--graph=" in c))
    assert "--use_gpu=true" in words and not any(w.startswith("--use_xnnpack") for w in words)
    assert r.latency_ms["p50"] == pytest.approx(23.301)  # the tool's median
    assert r.latency_ms["mean"] == pytest.approx(23.3778)
    assert r.runs == 50


def test_emulated_device_percentiles_and_taskset(device):
    device.fixture("benchmark_model_info_percentiles.txt")
    r = device.runner(taskset="f0", threads=2, delegate="xnnpack").run(device.model)
    assert (device.root / "taskset_mask").read_text().strip() == "f0"
    words = shlex.split(next(c for c in device.shell_commands() if "--graph=" in c))
    assert words[:3] == ["taskset", "f0", f"{REMOTE}/benchmark_model"]
    assert "--num_threads=2" in words and "--use_xnnpack=true" in words
    assert r.latency_ms["p50"] == pytest.approx(51.891)
    assert (r.latency_ms["p5"], r.latency_ms["p95"]) == pytest.approx((49.620, 68.628))
    assert r.runs == 1000
    assert r.extra["delegate"]["whole_graph"] is True and r.extra["warnings"] == []
    assert r.extra["delegate"]["requested"] == "xnnpack" and r.extra["delegate"]["name"] == "XNNPACK"


def test_delegate_names_give_distinct_command_lines():
    def words(**kw):
        return AndroidRunner(**kw).benchmark_command("/b/benchmark_model", "/b/m.tflite")

    cpu, xnnpack = words(delegate="cpu"), words(delegate="xnnpack")
    assert cpu != xnnpack
    assert "--use_xnnpack=false" in cpu and "--use_xnnpack=true" not in cpu
    assert "--use_xnnpack=true" in xnnpack and "--use_xnnpack=false" not in xnnpack
    assert words() == xnnpack == words(delegate=None)  # the default is what benchmark_model does unasked
    assert words(delegate="gpu")[-1] == "--use_gpu=true" and words(delegate="nnapi")[-1] == "--use_nnapi=true"
    assert set(DELEGATE_FLAGS) == {"cpu", "xnnpack", "gpu", "nnapi"}


def test_cpu_run_warns_when_the_binary_applied_xnnpack_anyway(device):
    device.fixture("benchmark_model_info_percentiles.txt")  # a binary that applied XNNPACK
    r = device.runner(delegate="cpu").run(device.model)
    assert r.extra["delegate"]["requested"] == "cpu"
    assert any("ignored the flag" in w and "XNNPACK" in w for w in r.extra["warnings"])


def test_emulated_device_failed_run_raises_and_still_cleans_up(device):
    device.fixture("benchmark_model_failed.txt")
    with pytest.raises(PacbEdgeError, match="Failed to mmap model"):
        device.runner().run(device.model)
    assert device.shell_commands()[-1] == f"rm -rf {REMOTE}/model_int8.tflite"
    assert not device.remote(f"{REMOTE}/model_int8.tflite").exists()


def test_emulated_device_binary_pushed_only_when_it_differs(device):
    runner = device.runner()
    runner.run(device.model)
    runner.run(device.model)
    targets = [p[-1] for p in device.pushes()]
    assert targets.count(f"{REMOTE}/benchmark_model") == 1
    assert targets.count(f"{REMOTE}/model_int8.tflite") == 2


@pytest.mark.parametrize(
    "remote_dir",
    [REMOTE, "/data/local/tmp/pacb edge; touch PWNED2 $(touch PWNED3) `touch PWNED4`"],
    ids=["default-dir", "evil-dir"],
)
def test_emulated_device_hostile_names_are_quoted(device, tmp_path, remote_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "my models" / EVIL_NAME
    model.parent.mkdir()
    model.write_bytes(b"TFL3" + bytes(64))
    r = device.runner(remote_dir=remote_dir).run(model)
    assert r.runs == 50
    remote_model = f"{remote_dir}/{EVIL_NAME}"
    cmds = device.shell_commands()
    bench = next(c for c in cmds if "--graph=" in c)
    assert f"--graph={remote_model}" in shlex.split(bench)  # the whole name is ONE word
    assert ["rm", "-rf", remote_model] == shlex.split(cmds[-1])
    assert ["mkdir", "-p", remote_dir] in [shlex.split(c) for c in cmds]
    assert [str(model), remote_model] in device.pushes()  # host side: list argv, passed as is
    # the binary on the "device" got the name as one argument, after a real shell parsed the command
    args = (device.root / "benchmark_model_args").read_text().splitlines()
    assert f"--graph={device.root}{remote_model}" in args
    # and nothing the names hold was run
    for name in ("PWNED", "PWNED2", "PWNED3", "PWNED4"):
        assert not list(tmp_path.rglob(name)), f"{name} was created"  # holds the device root and the cwd
        assert not (REPO / name).exists()
    assert not device.remote(remote_model).exists()


def test_shell_join_quotes_every_metacharacter():
    words = ["rm", "-rf", f"{REMOTE}/{EVIL_NAME}", "a'b", "x\ny", "$HOME", "*"]
    assert shlex.split(shell_join(words)) == words


@pytest.mark.parametrize(
    ("devices", "serial", "message"),
    [
        ("", None, r"no Android device attached"),
        ("AAA111:device,BBB222:device", None, r"several devices attached \(AAA111, BBB222\): pass --serial"),
        ("AAA111:device", "ZZZ999", r"device ZZZ999 is not attached \(adb devices lists: AAA111\)"),
        ("AAA111:unauthorized", None, r"AAA111 is unauthorized: accept the 'Allow USB debugging\?' prompt"),
        ("AAA111:offline", "AAA111", r"AAA111 is offline: .*adb reconnect"),
    ],
    ids=["none", "several-no-serial", "serial-absent", "unauthorized", "offline"],
)
def test_emulated_device_selection_errors(device, devices, serial, message):
    device.devices(devices)
    with pytest.raises(PacbEdgeError, match=message):
        device.runner(serial=serial).run(device.model)
    assert not device.pushes()  # nothing was pushed anywhere


def test_emulated_several_devices_with_serial(device):
    device.devices("AAA111:device,BBB222:device")
    r = device.runner(serial="BBB222").run(device.model)
    assert r.device_facts["serial"] == "BBB222"
    assert all(c[:2] == ["-s", "BBB222"] for c in device.calls() if c[0] != "devices")


def test_emulated_device_accuracy_on_device(device, tmp_path, monkeypatch):
    monkeypatch.setattr(run_eval, "_model_io", lambda path: FLOAT_IO)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(16, 3, 8, 8)).astype(np.float32)
    eval_set = write_eval_set(x, np.arange(16) % 10, tmp_path / "eval", num_classes=10)
    manifest = {"spec": {"arch": "resnet20", "mean": [0.5] * 3, "std": [0.5] * 3}}
    runner = device.runner(eval_binary=FAKE_ADB_DIR / "run_eval", delegate="gpu")
    device.fixture("benchmark_model_delegate_fallback.txt")
    r = runner.run(device.model, manifest, eval_set=eval_set, host_top1=0.79)
    assert r.top1 == pytest.approx(0.8125) and r.accuracy_source == "device" and r.n_eval == 16
    assert r.extra["host_top1"] == 0.79  # kept beside, never as the record's number
    args = (device.root / "run_eval_args").read_text().splitlines()
    assert f"--model_file={device.root}{REMOTE}/model_int8.tflite" in args
    assert "--num_images=0" in args and "--num_interpreter_threads=4" in args and "--delegate=gpu" in args
    assert any(a.startswith("--ground_truth_labels=") for a in args)
    assert any(a.startswith("--model_output_labels=") for a in args)
    assert any(p[-1] == f"{REMOTE}/eval_set/images/" and len(p) == 17 for p in device.pushes())
    assert not device.remote(f"{REMOTE}/eval_set").exists()  # cleaned up with the model


def test_eval_images_must_match_the_model_input_size(device, tmp_path, monkeypatch):
    monkeypatch.setattr(run_eval, "_model_io", lambda path: dict(FLOAT_IO, input_shape=[1, 32, 32, 3]))
    eval_set = write_eval_set(np.zeros((10, 3, 8, 8), np.float32), np.arange(10), tmp_path / "eval")
    with pytest.raises(PacbEdgeError, match=r"000000.rgb8 holds 192 bytes but the model takes 32x32x3"):
        device.runner(eval_binary=FAKE_ADB_DIR / "run_eval").run(device.model, eval_set=eval_set)
    assert device.calls() == []


def test_host_accuracy_is_labelled_host_evaluated(device):
    r = device.runner().run(device.model, host_top1=0.91, host_n_eval=500)
    assert (r.top1, r.accuracy_source, r.n_eval) == (0.91, "host-evaluated", 500)


def test_device_accuracy_refused_when_run_eval_would_feed_wrong_inputs(device, tmp_path, monkeypatch):
    monkeypatch.setattr(run_eval, "_model_io", lambda path: FLOAT_IO)
    eval_set = write_eval_set(np.zeros((10, 3, 8, 8), np.float32), np.arange(10), tmp_path / "eval")
    cifar = {"spec": {"arch": "resnet20", **CIFAR}}
    with pytest.raises(PacbEdgeError, match=r"run_eval feeds \(pixel - 127.5\) / 127.5") as e:
        device.runner(eval_binary=FAKE_ADB_DIR / "run_eval").run(device.model, cifar, eval_set=eval_set)
    assert "\n" not in str(e.value)
    assert device.calls() == []  # refused before touching the device


def test_int8_raw_pixel_model_gets_device_accuracy_with_the_same_delegate(device, tmp_path, monkeypatch):
    monkeypatch.setattr(run_eval, "_model_io", lambda path: INT8_RAW_IO)
    pixels = np.random.default_rng(2).integers(0, 256, size=(12, 3, 8, 8), dtype=np.uint8)
    eval_set = write_eval_set(pixels, np.arange(12) % 10, tmp_path / "eval", num_classes=10)
    runner = device.runner(delegate="cpu", eval_binary=FAKE_ADB_DIR / "run_eval")
    r = runner.run(device.model, INT8_RAW_MANIFEST, eval_set=eval_set, host_top1=0.5)
    assert (r.top1, r.accuracy_source, r.n_eval) == (0.8125, "device", 12)
    args = (device.root / "run_eval_args").read_text().splitlines()
    assert "--use_xnnpack=false" in args and not any(a.startswith("--delegate") for a in args)
    assert r.extra["delegate"]["requested"] == "cpu" and r.extra["warnings"] == []


def test_xnnpack_accuracy_is_measured_in_fp32_like_the_latency(device, tmp_path, monkeypatch):
    """run_eval's `--delegate=xnnpack` also sets xnnpack_force_fp16; the delegate-provider flag does not."""
    monkeypatch.setattr(run_eval, "_model_io", lambda path: INT8_RAW_IO)
    eval_set = write_eval_set(np.zeros((10, 3, 8, 8), np.uint8), np.arange(10), tmp_path / "eval")
    runner = device.runner(delegate="xnnpack", eval_binary=FAKE_ADB_DIR / "run_eval")
    runner.run(device.model, INT8_RAW_MANIFEST, eval_set=eval_set)
    args = (device.root / "run_eval_args").read_text().splitlines()
    assert "--use_xnnpack=true" in args and not any(a.startswith(("--delegate", "--xnnpack_force_fp16")) for a in args)
    bench = (device.root / "benchmark_model_args").read_text().splitlines()
    assert "--use_xnnpack=true" in bench  # the latency is timed with the same flag


def test_old_run_eval_ignoring_use_xnnpack_is_reported(device, tmp_path, monkeypatch):
    monkeypatch.setattr(run_eval, "_model_io", lambda path: INT8_RAW_IO)
    monkeypatch.setenv("FAKE_RUN_EVAL_OLD", "1")
    eval_set = write_eval_set(np.zeros((10, 3, 8, 8), np.uint8), np.arange(10), tmp_path / "eval")
    runner = device.runner(delegate="cpu", eval_binary=FAKE_ADB_DIR / "run_eval")
    r = runner.run(device.model, INT8_RAW_MANIFEST, eval_set=eval_set)
    assert r.accuracy_source == "device"
    assert any("run_eval ignored --use_xnnpack=false" in w for w in r.extra["warnings"])


def test_float_raw_pixel_model_falls_back_to_the_host_accuracy(device, tmp_path, monkeypatch):
    monkeypatch.setattr(run_eval, "_model_io", lambda path: FLOAT_IO)
    eval_set = write_eval_set(np.zeros((10, 3, 8, 8), np.uint8), np.arange(10), tmp_path / "eval")
    manifest = {"spec": {"arch": "resnet20", **CIFAR}, "input": {"dtype": "float32", **RAW_PIXELS}}
    runner = device.runner(eval_binary=FAKE_ADB_DIR / "run_eval")
    r = runner.run(device.model, manifest, eval_set=eval_set, host_top1=0.9, host_n_eval=10)
    assert (r.top1, r.accuracy_source, r.n_eval) == (0.9, "host-evaluated", 10)
    refused = [w for w in r.extra["warnings"] if w.startswith("on-device accuracy refused")]
    assert len(refused) == 1 and "raw pixels 0..255" in refused[0] and "(pixel - 127.5) / 127.5" in refused[0]
    assert not (device.root / "run_eval_args").exists()  # run_eval never ran
    with pytest.raises(PacbEdgeError, match=r"raw pixels 0\.\.255"):  # no host number to fall back on
        runner.run(device.model, manifest, eval_set=eval_set)


def test_run_eval_feed_problem_decides_from_the_manifest():
    raw_int8 = {"input": {"dtype": "int8", "scale": 1.0, "zero_point": -128, **RAW_PIXELS}}
    assert run_eval_feed_problem(raw_int8) is None
    assert run_eval_feed_problem({"input": {"dtype": "uint8", "scale": 1.0, "zero_point": 0, **RAW_PIXELS}}) is None
    # the model's own input (read from the .tflite) wins over the manifest's copy
    assert run_eval_feed_problem(raw_int8, dict(INT8_RAW_IO, input_zero_point=0)) is not None
    raw_float = run_eval_feed_problem({"input": {"dtype": "float32", **RAW_PIXELS}})
    assert raw_float == (
        "run_eval feeds (pixel - 127.5) / 127.5 to a float32 input, "
        "but this model expects raw pixels 0..255 (normalization in the model)"
    )
    assert "[0, 1]" in run_eval_feed_problem(
        {
            "input": {
                "dtype": "int8",
                "scale": 1.0,
                "zero_point": -128,
                "normalization": "in-model",
                "pixel_range": [0, 1],
            }
        }
    )
    # legacy manifests (no normalization key): the model expects (pixel / 255 - mean) / std
    legacy = {"spec": CIFAR, "input": {"dtype": "int8", "scale": 0.0187, "zero_point": -14}}
    problem = run_eval_feed_problem(legacy)
    assert problem.startswith("run_eval feeds pixel - 128 to the model's int8 input") and "\n" not in problem
    assert "mean=[0.4914" in problem
    half = {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert run_eval_feed_problem({"spec": half, "input": {"dtype": "float32"}}) is None
    assert (
        run_eval_feed_problem({"spec": half, "input": {"dtype": "int8", "scale": 1 / 127.5, "zero_point": -1}}) is None
    )
    assert (
        run_eval_feed_problem({"mean": [0] * 3, "std": [1] * 3, "input": {"dtype": "uint8", "scale": 1 / 255}}) is None
    )
    assert run_eval_feed_problem({"spec": half, "input": {"dtype": "float16"}}) is not None
    with pytest.raises(PacbEdgeError, match="no mean/std"):
        run_eval_feed_problem({"input": {"dtype": "int8", "scale": 0.02, "zero_point": 0}})


def test_write_eval_set_round_trips_pixels(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(12, 5, 4, 3), dtype=np.uint8)  # N H W C
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    x = ((pixels / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)  # normalized N C H W
    es = write_eval_set(x, np.arange(12) % 10, tmp_path, num_classes=10, mean=mean, std=std)
    files = es.image_files()
    assert [f.name for f in files][:2] == ["000000.rgb8", "000001.rgb8"] and len(files) == 12
    back = np.frombuffer(files[3].read_bytes(), np.uint8).reshape(5, 4, 3)
    np.testing.assert_array_equal(back, pixels[3])
    assert es.ground_truth_labels.read_text().splitlines()[:3] == ["0", "1", "2"]
    assert es.model_output_labels.read_text().splitlines() == [str(i) for i in range(10)]
    gray = write_eval_set(np.full((10, 1, 2, 2), 7, np.uint8), np.arange(10), tmp_path / "g")
    assert np.frombuffer(gray.image_files()[0].read_bytes(), np.uint8).tolist() == [7] * 12
    with pytest.raises(PacbEdgeError, match="at least 10 classes"):
        write_eval_set(np.zeros((4, 3, 2, 2), np.uint8), np.arange(4), tmp_path / "few")


def test_write_eval_set_raw_uint8_nchw_bytes_are_the_pixels(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, size=(10, 3, 6, 5), dtype=np.uint8)  # N C H W, raw
    es = write_eval_set(pixels, np.arange(10), tmp_path)
    for i, f in enumerate(es.image_files()):
        assert f.suffix == ".rgb8"
        assert f.read_bytes() == pixels[i].transpose(1, 2, 0).tobytes()  # H W C, byte for byte


def test_adb_missing_on_path(device):
    with pytest.raises(PacbEdgeError, match="adb not found"):
        device.runner(adb="adb-that-does-not-exist").run(device.model)


def test_benchmark_binary_missing(device, tmp_path):
    with pytest.raises(PacbEdgeError, match="benchmark_model binary not found"):
        device.runner(benchmark_binary=tmp_path / "nope").run(device.model)


def test_adb_timeout_is_one_line_error(device, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_SLEEP", "5")
    with pytest.raises(PacbEdgeError, match=r"adb devices timed out after 0.5 s"):
        device.runner(adb_timeout_s=0.5).run(device.model)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"delegate": "tpu"}, r"unknown delegate 'tpu'; use one of: cpu, xnnpack, gpu, nnapi"),
        ({"taskset": "f0; id"}, "hexadecimal"),
        ({"remote_dir": "tmp"}, "absolute"),
    ],
)
def test_bad_settings_rejected(kw, message):
    with pytest.raises(PacbEdgeError, match=message):
        AndroidRunner(**kw)


def test_bench_sh_runs_benchmark_model_with_quoted_args(tmp_path):
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no POSIX sh on this host")
    model = tmp_path / "my model.tflite"
    model.write_bytes(b"TFL3")
    env = dict(
        os.environ,
        PATH=f"{FAKE_ADB_DIR / 'device_bin'}{os.pathsep}{os.environ['PATH']}",
        BENCH_BIN=str(FAKE_ADB_DIR / "benchmark_model"),
        FAKE_ADB_ROOT=str(tmp_path),
        FAKE_ADB_FIXTURE=str(fixture_path("benchmark_model_native_cpu.txt")),
    )
    out = subprocess.run(
        [sh, str(REPO / "android" / "bench.sh"), str(model), "2", "--use_gpu=true"],
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert "device: Pixel 7 (emulated)" in out.stdout and "count=50" in out.stdout and "exit code: 0" in out.stdout
    args = (tmp_path / "benchmark_model_args").read_text().splitlines()
    assert args == [
        f"--graph={model}",
        "--num_threads=2",
        "--warmup_runs=10",
        "--num_runs=100",
        "--use_gpu=true",
    ]


# The real adb client, no phone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_adb_no_device_attached(tmp_path, monkeypatch):
    real_adb = shutil.which("adb")
    if real_adb is None:
        pytest.skip("the adb client is not installed (Debian: apt-get install adb)")
    # our own adb server on a free port, with a throw-away HOME: a user's server and keys are left alone
    env = {
        "ANDROID_ADB_SERVER_PORT": str(_free_port()),
        "HOME": str(tmp_path),
        "ANDROID_USER_HOME": str(tmp_path),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    try:
        listed = subprocess.run([real_adb, "devices"], capture_output=True, text=True, timeout=30)
        if any(ln.strip() and not ln.startswith(("List", "*")) for ln in listed.stdout.splitlines()):
            pytest.skip("a device is attached; this test needs none")
        runner = AndroidRunner(adb=real_adb, benchmark_binary=model, adb_timeout_s=30)
        with pytest.raises(PacbEdgeError, match=r"no Android device attached \(adb devices lists none\)"):
            runner.run(model)
    finally:
        subprocess.run([real_adb, "kill-server"], capture_output=True, timeout=30)


def test_bench_android_feeds_raw_pixels_to_the_eval_set_and_the_manifest_to_the_runner(device, tmp_path, monkeypatch):
    from pacb_edge.device_bench import bench
    from pacb_edge.export import runners

    pixels = np.random.default_rng(4).integers(0, 256, size=(10, 3, 8, 8), dtype=np.uint8)
    labels = np.arange(10)
    seen = {}

    def test_arrays(spec, opts, cache, manifest):
        seen["manifest"] = manifest
        return pixels, labels

    class HostRunner:  # stands in for LiteRTRunner: one-hot logits of the true label
        def __init__(self, path):
            pass

        def load(self):
            return self

        def __enter__(self):
            return self.load()

        def __exit__(self, *exc):
            seen["closed"] = True

        def infer(self, x):
            seen["host_x"] = x
            return np.eye(10)[labels]

    def write_and_read_back(x, *args):
        es = write_eval_set(x, *args)
        seen["rgb8"] = [f.read_bytes() for f in es.image_files()]
        return es

    monkeypatch.setattr(bench, "_test_arrays", test_arrays)
    monkeypatch.setattr(runners, "LiteRTRunner", HostRunner)
    monkeypatch.setattr(android, "write_eval_set", write_and_read_back)
    monkeypatch.setattr(run_eval, "_model_io", lambda path: INT8_RAW_IO)
    opts = bench.BenchOptions(
        device="android",
        android={
            "benchmark_binary": FAKE_ADB_DIR / "benchmark_model",
            "eval_binary": FAKE_ADB_DIR / "run_eval",
            "delegate": "cpu",
        },
    )
    path = str(device.model)
    results = {path: bench.BenchResult(artifact=path, format="tflite", device="android", runner="?")}
    bench._bench_android([(path, INT8_RAW_MANIFEST["spec"], INT8_RAW_MANIFEST)], opts, {}, results)
    r = results[path]
    assert r.error is None and (r.top1, r.accuracy_source) == (0.8125, "device")
    assert r.extra["host_top1"] == 1.0 and r.extra["delegate"]["requested"] == "cpu" and seen["closed"]
    assert seen["manifest"] is INT8_RAW_MANIFEST and seen["host_x"] is pixels
    assert seen["rgb8"] == [img.transpose(1, 2, 0).tobytes() for img in pixels]  # raw pixels, byte for byte
    pushed = next(p for p in device.pushes() if p[-1].endswith("/eval_set/images/"))
    assert not Path(pushed[0]).exists()  # the host copy of the eval set is removed after the run
