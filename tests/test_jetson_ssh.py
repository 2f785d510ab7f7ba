"""The Jetson runner against a real OpenSSH server on 127.0.0.1 (tests/sshd_fixture.py): copy a tiny bundle,
run the harness with the onnxruntime backend, read its JSON; plus the failures a user meets (unreachable host,
refused key, changed host key, crashing harness) and hostile file names. sshd tests skip only without sshd."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from sshd_fixture import HOST_ALIAS, free_port, keygen, sshd_missing_reason

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.remote import SSHTarget, remote_path
from pacb_edge.device_bench import jetson as jetson_mod
from pacb_edge.device_bench.jetson import JetsonRunner
from pacb_edge.device_bench.record import ACCURACY_DEVICE, STATUS_FAILED, STATUS_OK
from pacb_edge.export.tensorrt import UPLOAD_MARKER, bundle_digest, harness_files, upload_plan, write_bundle

IMAGE_SIZE = 16
NUM_CLASSES = 4
NUM_TEST = 10
HOSTILE = "b; touch PWNED $(touch PWNED2) `touch PWNED3` it's"
HOSTILE_DIR = "r dir; touch PWNED4 $(touch PWNED5) `touch PWNED6` 'x'"

needs_sshd = pytest.mark.skipif(sshd_missing_reason() is not None, reason=sshd_missing_reason() or "")


def _make_bundle(root: Path, name: str = "tiny_bundle") -> tuple[Path, float]:
    """A tiny CNN bundle written by `write_bundle` with raw uint8 pixels (the model takes 0-255 floats); returns it
    and the top-1 onnxruntime gives here."""
    import onnxruntime as ort
    import torch

    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, NUM_CLASSES)
    ).eval()
    onnx_path = root / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),),
            str(onnx_path),
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamo=False,
        )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (NUM_TEST, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    y = rng.integers(0, NUM_CLASSES, NUM_TEST)
    manifest = {
        "input": {"name": "input", "shape": [1, 3, IMAGE_SIZE, IMAGE_SIZE], "layout": "NCHW"},
        "spec": {"input_size": IMAGE_SIZE, "in_chans": 3, "num_classes": NUM_CLASSES},
    }
    bundle = write_bundle(root / name, onnx_path, x[:4].astype(np.float32), x, y, manifest)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    preds = np.array([int(session.run(None, {"input": img[None].astype(np.float32)})[0].argmax()) for img in x])
    return bundle, float((preds == y).mean())


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> tuple[Path, float]:
    return _make_bundle(tmp_path_factory.mktemp("jetson_bundle"))


def remote_folder(bundle: Path, remote_dir: Path) -> Path:
    """Where a bundle lands: `<remote_dir>/<bundle name>-<first 16 hex of its upload hash>`."""
    return remote_dir / f"{bundle.name}-{bundle_digest(upload_plan(bundle))[:16]}"


def _runner(config: Path, remote_dir: Path, **kw) -> JetsonRunner:
    opts = dict(
        host=HOST_ALIAS,
        ssh_config=str(config),
        backend="onnxruntime",
        precision="fp32",
        warmup=2,
        runs=5,
        remote_dir=str(remote_dir),
        python=sys.executable,
        timeout=120,
    )
    opts.update(kw)
    return JetsonRunner(**opts)


def _copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _pwned(*folders: Path) -> list[str]:
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [str(p) for p in folder.glob("PWNED*")]
    return found


# end to end


@needs_sshd
def test_bundle_runs_over_ssh(sshd, tiny_bundle, tmp_path):
    bundle, expected_top1 = tiny_bundle
    remote_dir = tmp_path / "remote root" / "pacb edge"
    rec = _runner(sshd.client_config(), remote_dir).run(bundle)

    assert rec.status == STATUS_OK, rec.error
    assert rec.error is None
    assert (rec.device, rec.format, rec.runner, rec.precision) == ("jetson", "onnx", "onnxruntime", "fp32")
    assert rec.top1 == pytest.approx(expected_top1)
    assert rec.accuracy_source == ACCURACY_DEVICE and rec.n_eval == NUM_TEST
    assert {"mean", "std", "p50", "p90", "p99"} <= set(rec.latency_ms) and rec.latency_ms["count"] >= 5
    assert rec.per_image_ms > 0 and rec.throughput_ips > 0 and rec.runs >= 5 and rec.warmup == 2
    assert rec.device_facts.get("hostname") == socket.gethostname()
    arrived = remote_folder(bundle, remote_dir)
    assert rec.extra["remote_bundle"] == str(arrived) and rec.extra["gpu_compute_ms"] is None
    assert rec.extra["upload"] == "sent" and rec.extra["upload_bytes"] > 0
    assert (arrived / UPLOAD_MARKER).read_text().strip() == rec.extra["bundle_sha256"]
    assert rec.spec["num_classes"] == NUM_CLASSES
    for name in (
        "model.onnx",
        "testset.npz",
        "calibration.npy",
        "manifest.json",
        "jetson/bench.py",
        "jetson/build_engine.py",
    ):
        assert (arrived / name).read_bytes() == (bundle / name).read_bytes(), name
    json.dumps(rec.to_dict())  # the record is JSON-ready


@needs_sshd
def test_stale_harness_is_replaced_and_engines_stay_local(sshd, tiny_bundle, tmp_path):
    bundle = _copy_bundle(tiny_bundle[0], tmp_path / "old_bundle")
    (bundle / "jetson" / "bench.py").write_text("raise SystemExit('stale harness ran')\n")
    (bundle / "model_fp16_trt8.6.1_rtx-3090_sm86.engine").write_bytes(b"host engine")
    remote_dir = tmp_path / "remote"
    rec = _runner(sshd.client_config(), remote_dir).run(bundle)

    assert rec.status == STATUS_OK, rec.error
    installed = {f.name: f for f in harness_files()}
    arrived = Path(rec.extra["remote_bundle"])
    assert arrived.parent == remote_dir and arrived.name.startswith(bundle.name + "-")
    assert (arrived / "jetson" / "bench.py").read_bytes() == installed["bench.py"].read_bytes()
    assert not list(arrived.glob("*.engine"))


# connection failures


@needs_sshd
def test_unreachable_host_is_a_one_line_error(sshd, tiny_bundle, tmp_path):
    runner = _runner(sshd.client_config("closed_port", port=free_port()), tmp_path / "remote")
    start = time.monotonic()
    with pytest.raises(PacbEdgeError, match=r"(?i)connection refused|connect to host") as info:
        runner.run(tiny_bundle[0])
    assert time.monotonic() - start < 15
    assert "\n" not in str(info.value) and HOST_ALIAS in str(info.value)
    rec = runner.run_safely(tiny_bundle[0])
    assert rec.status == STATUS_FAILED and rec.error == str(info.value)
    assert rec.device == "jetson" and rec.top1 is None


@needs_sshd
def test_silent_host_times_out(sshd, tiny_bundle, tmp_path):
    """A host that accepts TCP but never speaks SSH is given up after ConnectTimeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        runner = _runner(sshd.client_config("silent", port=silent.getsockname()[1]), tmp_path / "remote")
        runner.target.connect_timeout = 2
        assert "ConnectTimeout=2" in runner.target.ssh_argv(["true"])
        start = time.monotonic()
        rec = runner.run_safely(tiny_bundle[0])
    assert time.monotonic() - start < 20
    assert rec.status == STATUS_FAILED and "timed out" in rec.error and "\n" not in rec.error


@needs_sshd
def test_wrong_key_is_permission_denied(sshd, tiny_bundle, tmp_path):
    other = keygen(tmp_path / "not_authorized")
    runner = _runner(sshd.client_config("wrong_key", identity=other), tmp_path / "remote")
    with pytest.raises(PacbEdgeError, match="Permission denied") as info:
        runner.run(tiny_bundle[0])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "remote").exists()


@needs_sshd
def test_changed_host_key_is_refused(sshd, tiny_bundle, tmp_path, monkeypatch):
    impostor = keygen(tmp_path / "impostor_host_key")
    known_hosts = tmp_path / "known_hosts_impostor"
    known_hosts.write_text(sshd.known_hosts_line(impostor))
    runner = _runner(sshd.client_config("changed_key", known_hosts=known_hosts), tmp_path / "remote")
    calls = []
    real_run = subprocess.run

    def spy(argv, *args, **kw):
        calls.append([str(a) for a in argv])
        return real_run(argv, *args, **kw)

    monkeypatch.setattr("pacb_edge.core.remote.subprocess.run", spy)
    with pytest.raises(PacbEdgeError, match="host key") as info:
        runner.run(tiny_bundle[0])
    assert "known_hosts" in str(info.value) and "\n" not in str(info.value)
    assert calls and not (tmp_path / "remote").exists()
    for argv in calls:
        words = [w.lower().replace(" ", "") for w in argv]
        assert not any("stricthostkeychecking=no" in w for w in words), argv
    assert "StrictHostKeyChecking yes" in (sshd.root / "changed_key").read_text()


def test_ssh_target_refuses_to_turn_off_host_key_checking():
    for opt in ("StrictHostKeyChecking=no", "stricthostkeychecking no", "StrictHostKeyChecking=off"):
        with pytest.raises(PacbEdgeError, match="host-key checking"):
            SSHTarget("jetson", options=[opt])
    for host in ("-oProxyCommand=touch PWNED", "a b", ""):
        with pytest.raises(PacbEdgeError, match="invalid ssh host"):
            SSHTarget(host)


# harness failures


@needs_sshd
def test_crashing_harness_is_a_failed_record(sshd, tiny_bundle, tmp_path):
    bundle = _copy_bundle(tiny_bundle[0], tmp_path / "corrupt")
    (bundle / "model.onnx").write_bytes(b"this is not an ONNX model")
    rec = _runner(sshd.client_config(), tmp_path / "remote").run(bundle)

    assert rec.status == STATUS_FAILED and rec.top1 is None and not rec.latency_ms
    assert rec.error and "Traceback" not in rec.error and "\n" not in rec.error
    assert "protobuf" in rec.error.lower() or "onnx" in rec.error.lower(), rec.error
    assert rec.extra["harness_exit_code"] == 1 and rec.device_facts.get("hostname")


@needs_sshd
def test_missing_python_on_device_is_a_failed_record(sshd, tiny_bundle, tmp_path):
    rec = _runner(sshd.client_config(), tmp_path / "remote", python="/nonexistent/python3").run(tiny_bundle[0])
    assert rec.status == STATUS_FAILED
    assert "printed no result" in rec.error and "/nonexistent/python3" in rec.error and "\n" not in rec.error


# hostile names


@needs_sshd
def test_hostile_names_stay_names(sshd, tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundle = _copy_bundle(tiny_bundle[0], tmp_path / "local" / HOSTILE)
    remote_root = tmp_path / "remote"
    remote_dir = remote_root / HOSTILE_DIR / "x"
    watched = [
        tmp_path,
        tmp_path / "local",
        remote_root,
        remote_root / HOSTILE_DIR,
        remote_dir,
        sshd.root,
        Path.home(),
        Path("/tmp"),
    ]
    before = _pwned(*watched)

    rec = _runner(sshd.client_config(), remote_dir).run(bundle)
    assert rec.status == STATUS_OK, rec.error
    assert rec.top1 == pytest.approx(tiny_bundle[1])
    arrived = remote_folder(bundle, remote_dir)
    assert rec.extra["remote_bundle"] == str(arrived) and (arrived / "model.onnx").is_file()
    again = _runner(sshd.client_config(), remote_dir).run(bundle)
    assert again.status == STATUS_OK and again.extra["upload"] == "skipped", again.error

    target = SSHTarget(HOST_ALIAS, config_file=str(sshd.client_config()))
    target.fetch(str(arrived / "manifest.json"), tmp_path / "fetched.json")
    assert (tmp_path / "fetched.json").read_bytes() == (bundle / "manifest.json").read_bytes()
    target.copy_to([bundle / "manifest.json", bundle / "jetson"], str(remote_root / HOSTILE))
    assert (remote_root / HOSTILE / "manifest.json").is_file()
    assert (remote_root / HOSTILE / "jetson" / "bench.py").read_bytes() == (bundle / "jetson" / "bench.py").read_bytes()

    assert _pwned(*watched) == before
    assert not [p for p in tmp_path.rglob("PWNED*")]


# no ssh at all


def test_local_flow_runs_the_installed_harness_here(tiny_bundle, tmp_path):
    bundle = _copy_bundle(tiny_bundle[0], tmp_path / "here")
    (bundle / "jetson" / "bench.py").write_text("raise SystemExit('stale harness ran')\n")
    here = dict(backend="onnxruntime", warmup=1, runs=3, python=sys.executable)
    rec = JetsonRunner(precision=None, eval_limit=4, **here).run(bundle)
    assert rec.status == STATUS_OK, rec.error
    assert rec.n_eval == 4 and rec.accuracy_source == ACCURACY_DEVICE and rec.extra["host"] is None
    assert rec.extra["upload"] == "local" and rec.extra["upload_bytes"] == 0

    (bundle / "model.onnx").write_bytes(b"junk")
    failed = JetsonRunner(precision="fp32", **here).run(bundle)
    assert failed.status == STATUS_FAILED and "Traceback" not in failed.error and "\n" not in failed.error

    missing = JetsonRunner(precision="fp32", **{**here, "python": str(tmp_path / "no_python")}).run(bundle)
    assert missing.status == STATUS_FAILED and "no_python" in missing.error and "\n" not in missing.error


def test_local_flow_runs_the_given_python_not_this_one(tiny_bundle, tmp_path):
    """`--local` runs the harness with `python` (JetPack's system python3 has TensorRT), not sys.executable."""
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "python3 wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(calls))}\nexec {shlex.quote(sys.executable)} "$@"\n')
    wrapper.chmod(0o755)
    rec = JetsonRunner(backend="onnxruntime", precision="fp32", warmup=1, runs=2, python=str(wrapper)).run(
        tiny_bundle[0]
    )
    assert rec.status == STATUS_OK, rec.error
    argv = calls.read_text().split()
    assert argv[0].endswith("bench.py") and "--bundle" in argv and "--backend" in argv
    assert rec.top1 == pytest.approx(tiny_bundle[1])


def test_runner_checks_its_options(tiny_bundle, tmp_path):
    with pytest.raises(PacbEdgeError, match="fp32"):
        JetsonRunner(backend="onnxruntime", precision="fp16")
    with pytest.raises(PacbEdgeError, match="backend"):
        JetsonRunner(backend="tflite")
    assert JetsonRunner(precision=None).precision == "fp16"
    assert JetsonRunner(backend="onnxruntime", precision=None).precision == "fp32"
    rec = JetsonRunner().run_safely(tmp_path)
    assert rec.status == STATUS_FAILED and "not a Jetson bundle" in rec.error
    args = JetsonRunner(threads=2, eval_limit=0, min_time=1.5).harness_args("B")
    assert args[args.index("--threads") + 1] == "2" and args[args.index("--eval-limit") + 1] == "0"
    assert args[args.index("--min-time") + 1] == "1.5"
    bundle = _copy_bundle(tiny_bundle[0], tmp_path / "plan")
    (bundle / "calib_int8.cache").write_bytes(b"x")
    plan = JetsonRunner(host="jetson").upload_plan(bundle)
    assert "model.onnx" in plan and "jetson/bench.py" in plan and "calib_int8.cache" not in plan
    assert plan["jetson/bench.py"] == next(f for f in harness_files() if f.name == "bench.py")
    assert jetson_mod.HARNESS_DIR == "jetson"


def test_remote_path_understands_home_and_nothing_else():
    assert remote_path("~") == "." and remote_path("~/pacb edge") == "pacb edge"
    assert remote_path("/data/x") == "/data/x" and remote_path("pacb_edge") == "pacb_edge"
    assert remote_path("-rf x") == "./-rf x"
    with pytest.raises(PacbEdgeError):
        remote_path("~root/x")
    with pytest.raises(PacbEdgeError):
        remote_path("  ")


# latency profiling on the device


@needs_sshd
def test_profile_measures_candidates_through_the_jetson_runner(sshd, tiny_run, tmp_path):
    """`pacb-edge profile --target jetson` exports every candidate as a Jetson bundle and measures it through the
    Jetson runner on the device (here: real sshd, the onnxruntime backend); the table records the device's target
    settings, so `train --latency-target jetson --latency-table` reaches the same device."""
    from typer.testing import CliRunner

    from pacb_edge.cli.main import app
    from pacb_edge.pruning.latency import LatencyTable

    out = tmp_path / "table.json"
    remote_dir = tmp_path / "remote"
    args = ["profile", str(tiny_run), "--target", "jetson", "--host", HOST_ALIAS]
    args += ["--ssh-config", str(sshd.client_config()), "--backend", "onnxruntime", "--precision", "fp32"]
    args += ["--python", sys.executable, "--remote-dir", str(remote_dir), "--models", "4", "--held-out", "2"]
    result = CliRunner().invoke(app, [*args, "--runs", "5", "--warmup", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = LatencyTable.load(out)
    assert table.key.runtime == "jetson" and table.key.precision == "fp32"
    assert table.target["target"] == "jetson" and table.target["jetson"]["backend"] == "onnxruntime"
    assert table.floor_ms > 0 and table.unpruned_ms > 0 and len(table.samples) >= 4 + 2
    # every candidate arrived on the device as a bundle of its own
    assert len(list(remote_dir.glob("bundle-*"))) >= 4 + 2


def _device_python(root: Path, trt_version: str) -> Path:
    """A device python whose `import tensorrt` finds a stand-in reporting `trt_version`."""
    site = root / f"site_{trt_version}"
    (site / "tensorrt").mkdir(parents=True)
    (site / "tensorrt" / "__init__.py").write_text(f"__version__ = {trt_version!r}\n")
    wrapper = root / f"python_trt_{trt_version}"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(site))} exec {shlex.quote(sys.executable)} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@needs_sshd
def test_tensorrt_bench_checks_the_devices_parser_before_anything_is_built(sshd, tiny_bundle, tmp_path):
    bundle = tiny_bundle[0]  # opset 17: TensorRT 8.0/8.2 read opset 13 at most
    remote = tmp_path / "remote"
    newer = _runner(sshd.client_config(), remote, backend="tensorrt", precision="fp16",
                    python=str(_device_python(tmp_path, "8.6.1.6")))  # fmt: skip
    checked = newer.device_parser_check(bundle)
    assert checked["device_tensorrt"] == "8.6.1.6" and checked["checked_profile"] == "8.6"
    assert "checked against TensorRT 8.6 (JetPack 6.0), not --trt 8.0" in checked["profile_note"]
    nano = _runner(sshd.client_config(), remote, backend="tensorrt", precision="fp16",
                   python=str(_device_python(tmp_path, "8.0.1.6")))  # fmt: skip
    with pytest.raises(
        PacbEdgeError, match=r"TensorRT 8\.0 \(JetPack 4\.6\) cannot parse model\.onnx: opset: opset 17 is above 13"
    ):
        nano.run(bundle)
    assert not remote.exists()  # refused before the upload: nothing was sent or built
