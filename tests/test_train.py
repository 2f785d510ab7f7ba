"""The trainer: sparsity, resume, DDP, kill-safety, and the pipeline's bad-input cases."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pacb_edge.cli.main import app
from pacb_edge.data.datasets import load_dataset
from pacb_edge.models import ModelSpec, create_model
from pacb_edge.training.checkpoint import load_checkpoint, save_checkpoint
from pacb_edge.training.trainer import STATE_NAME, TrainConfig, bn_gamma_l1, fit, load_train_state

HELPERS = Path(__file__).parent / "helpers"
runner = CliRunner()


@pytest.fixture(scope="module")
def digits16():
    return load_dataset("digits", input_size=16, limit=160)


def _tiny(bundle, arch="resnet56", attention="none"):
    spec = ModelSpec(
        arch=arch,
        attention=attention,
        width_mult=0.25,
        input_size=16,
        in_chans=1,
        num_classes=10,
        dataset="digits",
        class_names=bundle.class_names,
        mean=bundle.mean,
        std=bundle.std,
    )
    torch.manual_seed(0)
    return create_model(spec.arch, **spec.model_kwargs()), spec


def test_sparsity_drives_bn_gamma_down(digits16, tmp_path):
    cfg = dict(epochs=3, batch_size=32, lr=0.05, warmup_epochs=0, seed=0)
    dense, spec = _tiny(digits16)
    fit(dense, digits16.train, digits16.val, spec, TrainConfig(**cfg), tmp_path / "dense", progress=False)
    sparse, _ = _tiny(digits16)
    fit(
        sparse,
        digits16.train,
        digits16.val,
        spec,
        TrainConfig(sparsity=0.2, **cfg),
        tmp_path / "sparse",
        progress=False,
    )
    assert bn_gamma_l1(sparse) < 0.9 * bn_gamma_l1(dense)


def test_resume_after_interrupt_equals_uninterrupted_run(digits16, tmp_path):
    cfg = dict(epochs=3, batch_size=32, lr=0.05, seed=0, augment=True)
    model, spec = _tiny(digits16, "mobilenetv3_small", "ca")  # dropout + augmentation exercise the RNG state
    straight, hist_a = fit(
        model, digits16.train, digits16.val, spec, TrainConfig(**cfg), tmp_path / "a", progress=False
    )
    model, _ = _tiny(digits16, "mobilenetv3_small", "ca")
    fit(
        model,
        digits16.train,
        digits16.val,
        spec,
        TrainConfig(stop_after_epochs=1, **cfg),
        tmp_path / "b",
        progress=False,
    )
    assert load_train_state(tmp_path / "b" / STATE_NAME)["epoch"] == 1
    torch.manual_seed(123)  # whatever happened in between must not matter
    model, _ = _tiny(digits16, "mobilenetv3_small", "ca")
    resumed, hist_b = fit(
        model, digits16.train, digits16.val, spec, TrainConfig(**cfg), tmp_path / "b", resume=True, progress=False
    )
    assert [h["train_loss"] for h in hist_a] == [h["train_loss"] for h in hist_b]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_ddp_two_gloo_processes_agree_with_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, str(HELPERS / "ddp_train.py"), str(tmp_path / "single")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(HELPERS / "ddp_train.py"),
            str(tmp_path / "ddp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    a, _ = load_checkpoint(tmp_path / "single")
    b, _ = load_checkpoint(tmp_path / "ddp")
    # Same global batches; only BatchNorm batch statistics differ (per-rank halves), so weights stay close.
    pa = torch.cat([p.flatten() for p in a.parameters()])
    pb = torch.cat([p.flatten() for p in b.parameters()])
    assert (pa - pb).norm() / pa.norm() < 0.1
    import json

    la = [json.loads(x)["train_loss"] for x in (tmp_path / "single" / "history.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["train_loss"] for x in (tmp_path / "ddp" / "history.jsonl").read_text().splitlines()]
    assert len(la) == len(lb) == 2
    assert abs(la[0] - lb[0]) < 0.1 * la[0]


def _wait_for_change(path, previous, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime_ns != previous:
            return path.stat().st_mtime_ns
        time.sleep(0.05)
    raise AssertionError(f"{path} did not change within {timeout} s")


def test_killing_training_never_leaves_an_unloadable_checkpoint(tmp_path):
    """SIGKILL at moments spread around checkpoint writes; every time, what is on disk loads and resumes."""
    out = tmp_path / "run"
    state = out / "base" / STATE_NAME
    argv = [
        sys.executable,
        "-m",
        "pacb_edge.cli.main",
        "train",
        "--model",
        "resnet56",
        "--attention",
        "none",
        "--width-mult",
        "0.25",
        "--input-size",
        "16",
        "--epochs",
        "200",
        "--limit",
        "48",
        "--batch-size",
        "16",
        "--out",
        str(out),
        "--no-progress",
    ]
    stamp = None
    for offset in (0.0, 0.013, 0.05, 0.11):
        proc = subprocess.Popen(
            argv + (["--resume"] if state.exists() else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            stamp = _wait_for_change(state, stamp)
            time.sleep(offset)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        model, spec = load_checkpoint(out / "base")
        assert spec.arch == "resnet56"
        assert load_train_state(state)["epoch"] >= 1
        stamp = state.stat().st_mtime_ns


def _cli(*args):
    return runner.invoke(app, ["train", "--no-progress", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet9000"], "unknown model"),
        (["--dataset", "mnist-ish"], "unknown dataset"),
        (["--prune", "taylor"], "unknown pruning criterion"),
        (["--prune", "bn-scale", "--prune-ratio", "1.5"], "--prune-ratio must be in [0, 1)"),
        (["--resume"], "no checkpoint to resume"),
        (["--optimizer", "lion"], "unknown optimizer"),
    ],
)
def test_train_bad_input_is_one_line(args, message, tmp_path):
    r = _cli("--out", str(tmp_path / "r"), "--epochs", "1", "--limit", "20", *args)
    assert r.exit_code == 1, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert not list((tmp_path).rglob("*.safetensors"))


def test_truncated_or_foreign_checkpoint_is_one_line(digits16, tmp_path):
    model, spec = _tiny(digits16)
    save_checkpoint(model, spec, tmp_path / "good")
    data = (tmp_path / "good" / "model.safetensors").read_bytes()
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "model.safetensors").write_bytes(data[: len(data) // 2])
    r = _cli("--stage", "eval", "--checkpoint", str(tmp_path / "trunc"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 1 and "corrupt or truncated" in r.output and "Traceback" not in r.output
    # Weights of one arch under another arch's spec.
    other = ModelSpec(**{**spec.to_dict(), "arch": "resnet110"})
    save_checkpoint(model, other, tmp_path / "foreign")
    r = _cli("--stage", "eval", "--checkpoint", str(tmp_path / "foreign"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 1 and "does not match" in r.output


def test_class_count_mismatch_and_empty_imagefolder(digits16, tmp_path):
    from PIL import Image

    model, spec = _tiny(digits16)
    save_checkpoint(model, spec, tmp_path / "ckpt")
    folder = tmp_path / "imgs"
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(folder / cls / f"{i}.png")
    r = _cli(
        "--stage",
        "eval",
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "--dataset",
        f"imagefolder:{folder}",
        "--input-size",
        "16",
        "--out",
        str(tmp_path / "o"),
    )
    assert r.exit_code == 1 and "classes" in r.output, r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli("--dataset", f"imagefolder:{empty}", "--out", str(tmp_path / "o2"))
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_pipeline_writes_run_directory(tmp_path):
    out = tmp_path / "run"
    r = _cli(
        "--model",
        "vgg16",
        "--attention",
        "sca",
        "--width-mult",
        "0.125",
        "--input-size",
        "32",
        "--epochs",
        "2",
        "--finetune-epochs",
        "1",
        "--prune",
        "sca-attention",
        "--prune-ratio",
        "0.5",
        "--limit",
        "96",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("train", "prune", "finetune", "eval"):
        assert stage in metrics["stages"]
    prune = metrics["stages"]["prune"]
    assert prune["flops"] < metrics["stages"]["train"]["flops"]
    assert prune["removed_modules"]  # SCA removed after scoring
    assert "pacb-edge" in metrics["command"]
    for f in (
        "base/model.safetensors",
        "base/spec.json",
        "base/curves.png",
        "base/confusion.png",
        "pruned/model.safetensors",
        "pruned/curves.png",
        "base/history.csv",
        "base/history.jsonl",
    ):
        assert (out / f).is_file(), f
    model, spec = load_checkpoint(out)
    assert spec.removed and spec.layers
