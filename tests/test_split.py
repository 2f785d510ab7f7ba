"""One split, carried with the model: a seed-3 run is exported and benched on exactly its own test images, and every
artifact takes raw pixels (the INT8 TFLite straight from uint8 images)."""

import dataclasses

import numpy as np
import pytest

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.data.datasets import load_dataset, rebuild_dataset
from pacb_edge.export.api import export_checkpoint
from pacb_edge.export.manifest import read_manifest
from pacb_edge.studies.pipeline import RunOptions, run_pipeline
from pacb_edge.training.checkpoint import read_spec, save_checkpoint
from pacb_edge.training.trainer import TrainConfig

SEED = 3


@pytest.fixture(scope="module")
def seed3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed3")
    opts = RunOptions(
        model="mobilenetv3_small",
        attention="ca",
        dataset="digits",
        width_mult=0.25,
        out=out,
        progress=False,
        command="pytest seed 3",
        train=TrainConfig(epochs=3, batch_size=64, lr=0.05, warmup_epochs=1, seed=SEED),
        prune=None,
    )
    metrics = run_pipeline(opts)
    return out, metrics


def test_spec_records_the_split_and_test_is_disjoint_from_train(seed3_run):
    out, metrics = seed3_run
    spec = read_spec(out / "base")
    assert spec.split["seed"] == SEED and spec.split["val_fraction"] == 0.15
    assert spec.split["n_test"] == 270 and len(spec.split["test_sha256"]) == 64
    rebuilt = rebuild_dataset(spec)
    trained = load_dataset("digits", seed=SEED)
    np.testing.assert_array_equal(rebuilt.test.indices, trained.test.indices)
    assert not set(rebuilt.test.indices) & set(rebuilt.train.indices)
    assert not set(rebuilt.test.indices) & set(rebuilt.val.indices)
    # The old defect: the seed-0 default split shares test images with this run's training images.
    assert set(load_dataset("digits", seed=0).test.indices) & set(trained.train.indices)
    assert metrics["dataset"]["split"] == spec.split


def test_export_measures_the_training_test_top1(seed3_run, tmp_path):
    out, metrics = seed3_run
    report = export_checkpoint(out / "base", ["onnx"], out_dir=tmp_path)
    assert report["torch_top1"] == pytest.approx(metrics["stages"]["train"]["test_top1"], abs=1e-12)
    assert report["split"]["seed"] == SEED and report["n_test"] == 270


def test_changed_data_stops_with_one_line(seed3_run, tmp_path):
    out, _ = seed3_run
    spec = read_spec(out / "base")
    moved = dataclasses.replace(spec, split=dict(spec.split, test_sha256="0" * 64))
    with pytest.raises(PacbEdgeError, match="is not the one this model was trained with"):
        rebuild_dataset(moved)
    from safetensors.torch import load_file

    from pacb_edge.training.checkpoint import build_model

    model = build_model(moved)
    model.load_state_dict(load_file(str(out / "base" / "model.safetensors")))
    save_checkpoint(model, moved, tmp_path / "moved")
    from typer.testing import CliRunner

    from pacb_edge.cli.main import app

    r = CliRunner().invoke(app, ["export", str(tmp_path / "moved"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "not the one this model was trained with" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


@pytest.mark.slow
def test_int8_tflite_takes_raw_uint8_pixels(seed3_run, tmp_path):
    """The INT8 file's input is int8 with scale 1 and zero point -128: `pixel - 128`, as TFLite's run_eval feeds it."""
    from ai_edge_litert.interpreter import Interpreter

    out, _ = seed3_run
    report = export_checkpoint(out / "base", ["tflite"], precision="int8", out_dir=tmp_path, allow_drop=True)
    (art,) = report["artifacts"]
    manifest = read_manifest(art["path"])
    assert manifest["input"]["normalization"] == "in-model" and manifest["input"]["pixel_range"] == [0, 255]
    assert manifest["input"]["dtype"] == "int8"
    assert manifest["input"]["scale"] == pytest.approx(1.0) and manifest["input"]["zero_point"] == -128
    x, y = rebuild_dataset(read_spec(out / "base")).arrays("test", raw=True)
    assert x.dtype == np.uint8
    interpreter = Interpreter(model_path=art["path"], num_threads=1)
    interpreter.allocate_tensors()
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    correct = 0
    for image, label in zip(x, y, strict=True):
        q = (image.transpose(1, 2, 0).astype(np.int16) - 128).astype(np.int8)[None]
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        correct += int(interpreter.get_tensor(outp["index"]).reshape(-1).argmax() == label)
    assert correct / len(y) == pytest.approx(manifest["verification"]["top1"], abs=1e-12)
    assert manifest["verification"]["n"] == len(y) == 270
