"""ONNX export of real checkpoints: parity, metadata, manifest, pruned graph smaller, bad inputs."""

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from pacb_edge.cli.main import app
from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.export.api import FORMATS, export_checkpoint, get_format, parse_precisions
from pacb_edge.export.manifest import read_manifest

runner = CliRunner()


def test_formats_table():
    assert set(FORMATS) == {"onnx", "tflite", "trt"}
    assert FORMATS["trt"].needs_gpu and not FORMATS["tflite"].needs_gpu
    assert FORMATS["tflite"].precisions == ("fp32", "fp16", "int8")
    with pytest.raises(PacbEdgeError, match="unknown export target"):
        get_format("coreml")
    with pytest.raises(PacbEdgeError, match="not available for onnx"):
        parse_precisions(FORMATS["onnx"], "int8")
    assert parse_precisions(FORMATS["onnx"], "fp32,int8", lenient=True) == ("fp32",)
    assert parse_precisions(FORMATS["tflite"], "fp32,int8", lenient=True) == ("fp32", "int8")


def test_onnx_export_is_verified_and_self_describing(tiny_run, tmp_path):
    report = export_checkpoint(tiny_run / "pruned", ["onnx"], out_dir=tmp_path / "pruned")
    (art,) = report["artifacts"]
    v = art["verification"]
    assert v["top1_agreement"] >= 0.999 and v["max_abs_diff"] < 1e-3
    assert v["n"] == report["n_test"] > 100
    assert abs(v["top1"] - report["torch_top1"]) < 0.01
    proto = onnx.load(art["path"])
    meta = {p.key: p.value for p in proto.metadata_props}
    spec = json.loads(meta["pacb_edge.spec"])
    assert spec["arch"] == "mobilenetv3_small" and spec["layers"]
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
    manifest = read_manifest(art["path"])
    for key in (
        "sha256",
        "size_bytes",
        "input",
        "mean",
        "std",
        "class_names",
        "source_checkpoint",
        "spec",
        "tools",
        "verification",
        "model",
    ):
        assert manifest[key], key
    assert manifest["input"] == {
        "name": "input",
        "shape": [1, 3, 32, 32],
        "layout": "NCHW",
        "dtype": "float32",
        "pixel_range": [0, 255],
        "normalization": "in-model",
    }
    assert meta["input_normalization"] == "in-model"
    assert "onnxruntime" in manifest["tools"] and "torch" in manifest["tools"]
    # The pruned graph is really smaller than the base graph.
    base = export_checkpoint(tiny_run / "base", ["onnx"], out_dir=tmp_path / "base")["artifacts"][0]
    assert art["size_bytes"] < 0.9 * base["size_bytes"]
    assert read_manifest(art["path"])["model"]["flops"] < read_manifest(base["path"])["model"]["flops"]


def test_jetson_bundle_when_no_tensorrt(tiny_run, tmp_path):
    report = export_checkpoint(tiny_run / "pruned", ["trt"], out_dir=tmp_path, calibration_images=16)
    bundle = tmp_path / "jetson_bundle"
    for name in (
        "model.onnx",
        "calibration.npy",
        "testset.npz",
        "manifest.json",
        "jetson/bench.py",
        "jetson/build_engine.py",
    ):
        assert (bundle / name).is_file(), name
    assert any("Jetson bundle" in n for n in report["notes"])
    calib = np.load(bundle / "calibration.npy")
    assert calib.shape == (16, 3, 32, 32) and calib.min() >= 0 and calib.max() <= 255
    test = np.load(bundle / "testset.npz")
    assert len(test["x"]) == len(test["y"]) == report["n_test"]
    assert test["x"].dtype == np.uint8  # raw pixels travel as uint8, a quarter of float32
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["spec"]["arch"] == "mobilenetv3_small" and manifest["calibration_images"] == 16
    # JetPack 4.6.x Nano parsers (TensorRT 8.0): opset 13, and the pre-flight check passed before anything was written.
    assert manifest["opset"] == 13 and manifest["tensorrt_profile"]["version"] == "8.0"
    assert manifest["preflight"] == "ok" and manifest["input"]["normalization"] == "in-model"
    graph = onnx.load(bundle / "model.onnx")
    assert graph.opset_import[0].version == 13
    assert "HardSwish" not in {n.op_type for n in graph.graph.node}
    assert not list(tmp_path.glob(".model_opset*"))


def test_export_cli_prints_whole_artifact_names(tiny_run, tmp_path):
    r = runner.invoke(app, ["export", str(tiny_run / "pruned"), "--target", "onnx", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "| artifact | format | precision | size (KB) | top-1 % | agreement % | max \\|diff\\| | time s |" in r.output
    assert "| model.onnx | onnx | fp32 |" in r.output and "…" not in r.output
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "export_report.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "coreml"], "unknown export target"),
        (["--target", "onnx", "--precision", "int4"], "not available"),
        (["--target", "tflite", "--precision", "int8", "--calibration-images", "0"], "calibration"),
    ],
)
def test_export_bad_options(tiny_run, tmp_path, args, message):
    r = runner.invoke(app, ["export", str(tiny_run / "pruned"), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 1, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("*.tflite"))


def test_export_corrupt_checkpoint_and_unwritable_dir(tiny_run, tmp_path):
    data = (tiny_run / "pruned" / "model.safetensors").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(data[:100])
    r = runner.invoke(app, ["export", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "corrupt or truncated" in r.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = runner.invoke(app, ["export", str(tiny_run / "pruned"), "--out", str(blocker / "sub")])
    assert r.exit_code == 1 and "output directory" in r.output
    assert not list(tmp_path.rglob("*.onnx"))


def test_each_format_owns_its_row_and_refuses_another_formats_options():
    """The table is the format modules' own rows; an option only another format reads is one line, before any work."""
    from pacb_edge.export import onnx, tensorrt, tflite
    from pacb_edge.export.api import validate_args

    assert FORMATS == {"onnx": onnx.FORMAT, "tflite": tflite.FORMAT, "trt": tensorrt.FORMAT}
    for fmt in FORMATS.values():
        assert fmt.function.__module__ == f"pacb_edge.export.{'tensorrt' if fmt.name == 'trt' else fmt.name}"
    for given, text in (
        ({"ssh": {"host": "nano"}}, "--host applies to --target trt only"),
        ({"allow_drop": True}, "--allow-drop applies to --target tflite only"),
        ({"trt_version": "8.2"}, "--trt applies to --target trt only"),
    ):
        with pytest.raises(PacbEdgeError, match=text):
            validate_args([get_format("onnx")], given)
    validate_args([get_format("onnx"), get_format("tflite")], {"allow_drop": True, "ssh": {"host": None}})
