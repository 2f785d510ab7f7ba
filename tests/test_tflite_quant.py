"""INT8 per-layer report and mixed precision to an accuracy budget (`export/tflite_quant.py`), its wiring into the
TFLite export, and the class-balanced calibration default.

A tiny raw-pixel CNN is trained on a synthetic task, then one channel of its first conv is scaled x1000 (the next
conv's weights divide it back, so the float model is unchanged): per-tensor INT8 of that activation rounds the
other channels to zero. It is converted once; every check on the calibrated model runs inside the one conversion.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import fit_adam

needs_export = pytest.mark.skipif(
    any(find_spec(m) is None for m in ("torch", "onnx", "onnx2tf", "ai_edge_litert")),
    reason="needs the export extra (torch, onnx, onnx2tf, ai-edge-litert)",
)

SIZE, NUM_CLASSES = 16, 10


def _outlier_cnn():
    import torch
    from torch import nn

    class OutlierCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, 1, 1)
            self.conv2 = nn.Conv2d(8, 16, 3, 2, 1)
            self.fc = nn.Linear(16, NUM_CLASSES)

        def forward(self, x):  # raw pixels 0-255 in, as every exported artifact takes them
            x = torch.relu(self.conv1((x / 255 - 0.5) / 0.25))
            x = torch.relu(self.conv2(x))
            return self.fc(x.mean((2, 3)))

    return OutlierCNN()


def _synthetic(generator, templates, n):
    import torch

    y = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    x = (templates[y] + 40 * torch.randn(n, 3, SIZE, SIZE, generator=generator)).clamp(0, 255).round()
    return x, y


@pytest.fixture(scope="module")
def outlier(tmp_path_factory):
    import torch

    from pacb_edge.export.tflite import convert_onnx_to_tflite, evaluate_tflite, pin_input_range
    from pacb_edge.export.tflite_quant import fit_int8_budget

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(1)
        templates = torch.rand(NUM_CLASSES, 3, SIZE, SIZE, generator=generator) * 255
        model = fit_adam(_outlier_cnn(), lambda: _synthetic(generator, templates, 64), steps=80)
        with torch.no_grad():
            model.conv1.weight[0] *= 1000
            model.conv1.bias[0] *= 1000
            model.conv2.weight[:, 0] /= 1000
        calibration = pin_input_range(_synthetic(generator, templates, 96)[0].numpy(), 0.0, 255.0)
        x_val, y_val = (t.numpy() for t in _synthetic(generator, templates, 200))
        with torch.no_grad():
            fp32_top1 = float((model(torch.from_numpy(x_val)).argmax(1).numpy() == y_val).mean())
        tmp = tmp_path_factory.mktemp("quant")
        torch.onnx.export(
            model, (torch.zeros(1, 3, SIZE, SIZE),), str(tmp / "outlier.onnx"), opset_version=17, dynamo=False
        )
    finally:
        torch.set_num_threads(threads)

    def top1(path):
        return evaluate_tflite(path, x_val, y_val)["top1"]

    seen: dict = {}

    def choose(calibration_model, work):
        import tensorflow as tf

        nhwc = calibration.transpose(0, 2, 3, 1)
        seen["ops"] = calibration_model.ops
        seen["report"] = calibration_model.layer_report(nhwc[::3])
        seen["full"] = calibration_model.quantize()
        # TFLite's own full-integer converter on the same SavedModel, for comparison with the empty deny-list.
        converter = tf.lite.TFLiteConverter.from_saved_model(str(work / "saved_model"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.SELECT_TF_OPS]
        converter.representative_dataset = lambda: ([image[None]] for image in nhwc)
        converter.inference_input_type = converter.inference_output_type = tf.int8
        seen["converter"] = converter.convert()
        args = (calibration_model, seen["report"], top1, fp32_top1)
        seen["fit"] = fit_int8_budget(*args, 0.5, work, max_float_fraction=1.0)
        seen["negative"] = fit_int8_budget(*args, -100.0, work, max_steps=2, max_float_fraction=1.0)
        seen["no_steps"] = fit_int8_budget(*args, 0.5, work, max_steps=0)
        keep = ("ops MEAN", calibration_model.ops_of_types(["MEAN"]))
        seen["keep"] = fit_int8_budget(*args, 0.5, work, max_float_fraction=1.0, keep_float=keep)
        seen["keep_easy"] = fit_int8_budget(*args, 100.0, work, keep_float=keep)
        return seen["fit"].model

    files = convert_onnx_to_tflite(
        tmp / "outlier.onnx", tmp / "out", calibration, precisions=("fp32", "int8"), choose_int8=choose
    )
    return SimpleNamespace(files=files, fp32_top1=fp32_top1, x_val=x_val, y_val=y_val, tmp=tmp, **seen)


def _conv1(ops):
    return next(op for op in ops if op.type == "CONV_2D")  # the first conv in execution order


def _write(path, data):
    path.write_bytes(data)
    return path


@needs_export
def test_report_names_every_quantized_layer_worst_first(outlier, tmp_path):
    from pacb_edge.export.tflite_quant import write_quant_report

    report = outlier.report
    types = {r["op_type"] for r in report}
    assert {"CONV_2D", "FULLY_CONNECTED", "MEAN"} <= types
    names = {op.name for op in outlier.ops}
    for row in report:
        assert row["tensor_name"] in names and row["name"].startswith(row["op_type"] + "#")
        assert row["scale"] > 0 and row["max_abs_error"] is not None and row["rmse/scale"] is not None
    errors = [r["channel_error"] for r in report]
    assert errors == sorted(errors, reverse=True)
    # The outlier activation: its other channels round to zero (channel error near 1), while TFLite's rmse/scale
    # still looks like plain rounding noise (below 0.29).
    conv1 = next(r for r in report if r["tensor_name"] == _conv1(outlier.ops).name)
    assert conv1["channel_error"] > 0.5 and conv1["rmse/scale"] < 0.29
    assert report.index(conv1) <= 1
    json_path, png = write_quant_report(tmp_path / "model_int8_quant_report.json", report, outlier.fit)
    doc = json.loads(json_path.read_text())
    assert [r["name"] for r in doc["layers"]] == [r["name"] for r in report]
    assert doc["budget"]["float_nodes"] == outlier.fit.float_nodes and "model" not in doc["budget"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_export
def test_empty_deny_list_is_the_converters_full_int8(outlier, tmp_path):
    from pacb_edge.export.tflite import evaluate_tflite, tflite_io_details
    from pacb_edge.export.tflite_quant import op_counts

    ours = _write(tmp_path / "ours.tflite", outlier.full)
    theirs = _write(tmp_path / "theirs.tflite", outlier.converter)
    a = evaluate_tflite(ours, outlier.x_val[:50], return_logits=True)["logits"]
    b = evaluate_tflite(theirs, outlier.x_val[:50], return_logits=True)["logits"]
    np.testing.assert_array_equal(a, b)
    assert op_counts(outlier.full) == op_counts(outlier.converter)
    assert op_counts(outlier.full).get("DEQUANTIZE", 0) == 0
    io = tflite_io_details(ours)
    assert io["input"]["dtype"] == io["output"]["dtype"] == "int8"
    assert io["input"]["scale"] == pytest.approx(1.0) and io["input"]["zero_point"] == -128  # pixel - 128


@needs_export
def test_budget_keeps_the_outlier_layer_in_float(outlier):
    from pacb_edge.export.tflite import evaluate_tflite, tflite_io_details
    from pacb_edge.export.tflite_quant import op_counts

    fit = outlier.fit
    assert outlier.fp32_top1 >= 0.6
    assert fit.full_int8_drop_pp > 20  # per-tensor INT8 destroys the model
    assert fit.met and fit.drop_pp <= 0.5
    assert _conv1(outlier.ops).name in fit.float_nodes
    assert 0 < len(fit.float_nodes) < len(outlier.ops)
    assert fit.steps[0]["action"] == "full INT8" and len(fit.steps) >= 2
    assert op_counts(fit.model).get("DEQUANTIZE", 0) >= 1
    # The file written is the chosen mixed model: int8 in and out, still scale 1 / zero point -128.
    assert outlier.files["int8"].read_bytes() == fit.model
    io = tflite_io_details(outlier.files["int8"])
    assert io["input"]["dtype"] == "int8" and io["input"]["scale"] == pytest.approx(1.0)
    top1 = evaluate_tflite(outlier.files["int8"], outlier.x_val, outlier.y_val)["top1"]
    assert top1 == pytest.approx(fit.val_top1)


@needs_export
def test_unmeetable_budget_returns_the_best_try(outlier):
    negative, no_steps = outlier.negative, outlier.no_steps
    assert not negative.met and len(negative.steps) == 3  # full INT8 and two growing steps
    assert negative.drop_pp == min(s["drop_pp"] for s in negative.steps)
    assert not no_steps.met and len(no_steps.steps) == 1 and no_steps.float_nodes == []
    assert no_steps.drop_pp == pytest.approx(no_steps.full_int8_drop_pp)


@needs_export
def test_required_float_ops_are_in_every_candidate_after_the_full_int8_reference(outlier):
    from pacb_edge.export.tflite_quant import op_counts

    means = {op.name for op in outlier.ops if op.type == "MEAN"}
    assert means
    keep, easy = outlier.keep, outlier.keep_easy
    assert keep.steps[0]["action"] == "full INT8" and keep.steps[0]["n_float_ops"] == 0
    assert keep.steps[1]["action"] == "float ops MEAN" and keep.steps[1]["n_float_ops"] == len(means)
    # The outlier conv is still floated to meet the budget, and the MEAN stays float while earlier layers are
    # tried back in INT8.
    assert keep.met and means <= set(keep.float_nodes) and _conv1(outlier.ops).name in keep.float_nodes
    assert all(step["float_layers"][0] == "ops MEAN" for step in keep.steps[1:])
    assert keep.full_int8 == outlier.full and keep.full_int8_drop_pp == pytest.approx(outlier.fit.full_int8_drop_pp)
    # A budget that full INT8 already meets still gets the required float operators.
    assert easy.met and easy.float_layers == ["ops MEAN"] and set(easy.float_nodes) == means
    assert len(easy.steps) == 2 and op_counts(easy.model).get("DEQUANTIZE", 0) >= 1


@needs_export
def test_unknown_operator_type_is_one_line():
    from pacb_edge.core.errors import PacbEdgeError
    from pacb_edge.export.tflite_quant import check_op_types

    assert check_op_types(["hard_swish", " LOGISTIC", "HARD_SWISH", ""]) == ("HARD_SWISH", "LOGISTIC")
    with pytest.raises(PacbEdgeError, match="unknown TFLite operator type.*HARD_SWISHH"):
        check_op_types(["HARD_SWISHH"])


def test_calibration_default_is_300_class_balanced_train_images():
    from pacb_edge.data.datasets import CALIBRATION_IMAGES, load_dataset

    assert CALIBRATION_IMAGES == 300
    b = load_dataset("digits")
    positions = b.calibration_positions()
    counts = np.bincount(b.train.labels[positions], minlength=10)
    assert len(positions) == 300 and counts.tolist() == [30] * 10
    np.testing.assert_array_equal(b.calibration_images(raw=True), b.train.arrays_at(positions, raw=True)[0])
    assert not np.array_equal(positions, b.calibration_positions(seed=1))
    few = load_dataset("digits", limit=40)  # fewer training images than the default: all of them
    assert len(few.calibration_images()) == len(few.train) == 40
    uneven = np.bincount(b.train.labels[b.calibration_positions(25)], minlength=10)
    assert uneven.max() - uneven.min() == 1


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """An untrained MobileNetV3-Small x0.25 checkpoint on a 60-image-per-split slice of digits at 16x16."""
    from pacb_edge.data.datasets import load_dataset
    from pacb_edge.models import ModelSpec, create_model
    from pacb_edge.training.checkpoint import save_checkpoint

    bundle = load_dataset("digits", input_size=16, limit=60)
    spec = ModelSpec(
        arch="mobilenetv3_small",
        num_classes=bundle.num_classes,
        in_chans=bundle.in_chans,
        width_mult=0.25,
        input_size=16,
        mean=bundle.mean,
        std=bundle.std,
        class_names=bundle.class_names,
        dataset=bundle.name,
        split=bundle.split_record(),
    )
    directory = tmp_path_factory.mktemp("small_checkpoint")
    save_checkpoint(create_model(spec.arch, **spec.model_kwargs()).eval(), spec, directory)
    return directory


@needs_export
def test_unmeetable_budget_via_cli_is_one_line_and_leaves_nothing(small_checkpoint, tmp_path, monkeypatch):
    import dataclasses

    from typer.testing import CliRunner

    from pacb_edge.cli.main import app
    from pacb_edge.export import api

    @dataclasses.dataclass
    class Unmeetable(api.ExportContext):  # the CLI refuses a negative budget, so the loop is handed one directly
        def __post_init__(self):
            self.int8_budget = -100.0

    monkeypatch.setattr(api, "ExportContext", Unmeetable)
    out = tmp_path / "o"
    args = ["export", str(small_checkpoint), "--target", "tflite", "--precision", "int8", "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--calibration-images", "32", "--int8-budget", "0"])
    assert r.exit_code == 1, r.output
    (line,) = [ln for ln in r.output.splitlines() if "error:" in ln]
    assert "--int8-budget -100.00 pp" in line and "drops" in line and "--allow-drop" in line
    assert "Traceback" not in r.output
    assert not out.exists() or not list(out.rglob("*"))


@needs_export
def test_int8_float_ops_bad_use_is_one_line_before_any_work(small_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from pacb_edge.cli.main import app

    out = tmp_path / "o"
    base = ["export", str(small_checkpoint), "--out", str(out)]
    for extra, expected in (
        (["--target", "tflite", "--precision", "int8", "--int8-float-ops", "HARD_SWISH,NOPE"], "NOPE"),
        (["--target", "onnx", "--int8-float-ops", "HARD_SWISH"], "INT8 TFLite only"),
    ):
        r = CliRunner().invoke(app, [*base, *extra])
        assert r.exit_code == 1, r.output
        (line,) = [ln for ln in r.output.splitlines() if "error:" in ln]
        assert expected in line and "Traceback" not in r.output
        assert not out.exists() or not list(out.rglob("*"))


@pytest.mark.slow
@needs_export
def test_export_keeps_the_named_op_types_in_float_and_times_them(small_checkpoint, tmp_path):
    from pacb_edge.export.api import export_checkpoint
    from pacb_edge.export.tflite_quant import graph_ops

    report = export_checkpoint(
        small_checkpoint,
        ["tflite"],
        precision="int8",
        out_dir=tmp_path,
        calibration_images=32,
        allow_drop=True,
        int8_budget=100.0,
        int8_float_ops=["hard_swish"],
    )
    (art,) = report["artifacts"]
    q = art["int8"]
    assert q["float_layers"] == ["ops HARD_SWISH"] and q["steps"][1]["action"] == "float ops HARD_SWISH"
    # The float set is exactly the model's h-swish operators, and each adds a DEQUANTIZE in front of it.
    ops = [op for op in graph_ops(Path(art["path"]).read_bytes()) if op.type == "HARD_SWISH"]
    assert ops and len(ops) == len(q["float_nodes"])
    assert q["dequantize_ops"] > q["full_int8_dequantize_ops"]
    assert q["latency"]["ratio"] > 0 and q["latency"]["full_int8_ms"] > 0


@pytest.mark.slow
@needs_export
def test_export_records_the_int8_choice(small_checkpoint, tmp_path):
    from pacb_edge.export.api import export_checkpoint
    from pacb_edge.export.manifest import read_manifest
    from pacb_edge.export.tflite import INT8_REPORT_NAME, int8_line

    report = export_checkpoint(
        small_checkpoint, ["tflite"], precision="int8", out_dir=tmp_path, calibration_images=32, allow_drop=True
    )
    (art,) = report["artifacts"]
    q = read_manifest(art["path"])["int8_quantization"]
    assert q == json.loads(json.dumps(art["int8"]))
    assert len(q["worst_layers"]) == 3 and q["budget_pp"] == 0.5
    assert q["val"]["n"] > 0 and "drop_pp" in q["test"] and q["size_bytes"] == art["size_bytes"]
    assert q["dequantize_ops"] >= 0 and q["steps"][0]["action"] == "full INT8"
    assert (q["latency"] is None) == (q["n_float_ops"] == 0)
    assert (tmp_path / INT8_REPORT_NAME).is_file() and (tmp_path / INT8_REPORT_NAME).with_suffix(".png").is_file()
    line = int8_line("model_int8.tflite", q)
    assert all(w["name"] in line for w in q["worst_layers"]) and "\n" not in line


def test_missed_budget_hint_names_the_qarep_block_for_repvgg_with_attention():
    from pacb_edge.export.tflite import int8_hint
    from pacb_edge.models import ModelSpec

    assert "--model qarepvgg_a1" in int8_hint(ModelSpec(arch="repvgg_a1", attention="ca"))
    assert int8_hint(ModelSpec(arch="repvgg_a0", attention=None)) == ""
    assert int8_hint(ModelSpec(arch="qarepvgg_a0", attention="ca")) == ""
    assert int8_hint(ModelSpec(arch="mobilenetv3_large", attention="ca")) == ""


@needs_export
def test_int8_drop_over_the_maximum_fails_after_writing_the_report(small_checkpoint, tmp_path, monkeypatch):
    """A drop over --max-int8-drop is a typed outcome of the export: the report and the files are written, then the
    export fails with that drop; --allow-drop keeps the same note and succeeds."""
    import dataclasses

    from pacb_edge.export import api

    @dataclasses.dataclass
    class Strict(api.ExportContext):  # the options refuse a negative maximum, so the context is handed one directly
        def __post_init__(self):
            self.max_int8_drop = -100.0
            self.int8_budget = 100.0

    monkeypatch.setattr(api, "ExportContext", Strict)
    kw = dict(precision="int8", calibration_images=32)
    with pytest.raises(api.AccuracyDropError, match="exceeds --max-int8-drop -100.00 pp.*--allow-drop"):
        api.export_checkpoint(small_checkpoint, ["tflite"], out_dir=tmp_path / "strict", **kw)
    report = json.loads((tmp_path / "strict" / api.REPORT_NAME).read_text())
    assert any("exceeds --max-int8-drop" in n for n in report["notes"])
    allowed = api.export_checkpoint(small_checkpoint, ["tflite"], out_dir=tmp_path / "allowed", allow_drop=True, **kw)
    assert any("allowed by --allow-drop" in n for n in allowed["notes"])
