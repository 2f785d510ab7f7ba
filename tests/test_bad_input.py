"""Bad input as a new user types it: one line, exit 1 (typer's 2 for a malformed option), and nothing in --out."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pacb_edge.cli.main import app

runner = CliRunner()
QUICK = ["--width-mult", "0.25", "--epochs", "1", "--limit", "32", "--threads", "1", "--no-progress"]


def _image_folder(root: Path, *, broken: bool = False, empty: bool = False) -> Path:
    root.mkdir(parents=True)
    if empty:
        return root
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    if broken:
        (root / "dog" / "9.png").write_bytes(b"this is not a PNG")
    return root


def _refused(args: list[str], out: Path, needle: str, code: int = 1) -> str:
    r = runner.invoke(app, args)
    text = r.output.strip()
    assert r.exit_code == code, text
    assert "Traceback" not in r.output and needle in text, text
    if code == 1:
        assert len(text.splitlines()) == 1, text  # one line
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())  # nothing written, no config.toml
    return text


def test_unreadable_image_in_an_image_folder_is_named(tmp_path):
    data = _image_folder(tmp_path / "imgs", broken=True)
    out = tmp_path / "run"
    text = _refused(["train", "--dataset", f"imagefolder:{data}", *QUICK, "--out", str(out)], out, "cannot read")
    assert "9.png" in text


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--input-size", "3"], "--input-size must be at least 8"),
        (["--prune-ratio", "1.5"], "--prune-ratio must be in [0, 1)"),  # without --prune: still checked
        (["--model", "resnet9000"], "unknown model 'resnet9000'"),
        (["--attention", "magic"], "unknown attention 'magic'"),
        (["--width-mult", "0"], "--width-mult must be positive"),
    ],
)
def test_train_option_out_of_range(tmp_path, extra, needle):
    out = tmp_path / "run"
    _refused(["train", *QUICK, *extra, "--out", str(out)], out, needle)


def test_missing_or_empty_data_writes_nothing(tmp_path):
    out = tmp_path / "run"
    _refused(["train", "--dataset", f"imagefolder:{tmp_path / 'nope'}", *QUICK, "--out", str(out)], out, "nope")
    empty = _image_folder(tmp_path / "empty", empty=True)
    _refused(["train", "--dataset", f"imagefolder:{empty}", *QUICK, "--out", str(out)], out, "empty")
    cifar = tmp_path / "no_cifar"
    cifar.mkdir()
    _refused(
        ["train", "--dataset", "cifar10", "--data-dir", str(cifar), *QUICK, "--out", str(out)], out, "cifar10 not found"
    )


def test_malformed_option_is_typers_exit_2(tmp_path):
    out = tmp_path / "run"
    _refused(["train", "--epochs", "many", "--out", str(out)], out, "--epochs", code=2)


def test_negative_int8_budget_is_refused_before_export(tiny_run, tmp_path):
    out = tmp_path / "export"
    args = ["export", str(tiny_run / "pruned"), "--target", "tflite", "--out", str(out)]
    _refused([*args, "--int8-budget", "-1"], out, "must be >= 0")
