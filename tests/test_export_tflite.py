"""ONNX → TFLite (onnx2tf) export: FP32 parity, full-INT8 files, offline calibration on our own images, clean failures.

One tiny CNN is trained for a few steps on a separable synthetic task (so its predictions are confident) and
converted once, with the network blocked, in a module-scoped fixture that every test reuses.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from importlib.util import find_spec
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import fit_adam

from pacb_edge.core.errors import PacbEdgeError

pytestmark = pytest.mark.skipif(
    any(find_spec(m) is None for m in ("torch", "onnx", "onnx2tf", "ai_edge_litert")),
    reason="needs the export extra (torch, onnx, onnx2tf, ai-edge-litert)",
)

NUM_CLASSES = 10
SIZE = 32


def _tiny_cnn():
    import torch.nn as nn

    def conv_bn_relu(c_in, c_out, stride):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

    class TinyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(conv_bn_relu(3, 8, 1), conv_bn_relu(8, 16, 2), conv_bn_relu(16, 32, 2))
            self.fc = nn.Linear(32, NUM_CLASSES)

        def forward(self, x):
            return self.fc(self.features(x).mean((2, 3)))

    return TinyCNN()


def _synthetic(generator, templates, n):
    """Class templates plus strong noise: learnable in a few steps, values far outside COCO's normalized range."""
    import torch

    y = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    return templates[y] + 1.5 * torch.randn(n, 3, SIZE, SIZE, generator=generator), y


@contextlib.contextmanager
def _network_blocked(attempts: list):
    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is blocked in this test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        yield


def _write_onnx(model, path):
    import torch

    torch.onnx.export(
        model.eval(),
        (torch.zeros(1, 3, SIZE, SIZE),),
        str(path),
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    import torch

    from pacb_edge.export.tflite import ONNX2TF_SAMPLE_DATA, _import_onnx2tf, convert_onnx_to_tflite

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box is shared; one thread is faster than fighting for two
    try:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(1)
        templates = torch.randn(NUM_CLASSES, 3, SIZE, SIZE, generator=generator)
        model = fit_adam(_tiny_cnn(), lambda: _synthetic(generator, templates, 64), steps=40)
        calibration, _ = _synthetic(generator, templates, 100)
        x_test, y_test = _synthetic(generator, templates, 128)
        with torch.no_grad():
            torch_logits = model(x_test).numpy()
    finally:
        torch.set_num_threads(threads)

    tmp = tmp_path_factory.mktemp("tflite")
    onnx_path = _write_onnx(model, tmp / "tiny.onnx")
    calibration = calibration.numpy()
    onnx2tf = _import_onnx2tf()
    import onnx2tf.utils.common_functions as onnx2tf_common

    seen: dict = {}
    downloads: list = []
    sockets: list = []
    real_convert = onnx2tf.convert

    def spy_convert(**kwargs):
        from pathlib import Path

        name, npy, mean, std = kwargs["custom_input_op_name_np_data_path"][0]
        seen.update(
            cwd=Path.cwd(),
            sample=np.load(Path.cwd() / ONNX2TF_SAMPLE_DATA),
            input_name=name,
            calibration=np.load(npy),
            mean=mean,
            std=std,
            kwargs=kwargs,
        )
        return real_convert(**kwargs)

    def no_download(*args, **kwargs):
        downloads.append(args)
        raise OSError("onnx2tf tried to download")

    with _network_blocked(sockets), pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx2tf, "convert", spy_convert)
        mp.setattr(onnx2tf_common.requests, "get", no_download)
        before = (os.getcwd(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        files = convert_onnx_to_tflite(onnx_path, tmp / "out", calibration)
        after = (os.getcwd(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    return SimpleNamespace(
        before=before,
        after=after,
        files=files,
        out=tmp / "out",
        calibration=calibration,
        x=x_test.numpy(),
        y=y_test.numpy(),
        torch_logits=torch_logits,
        seen=seen,
        downloads=downloads,
        sockets=sockets,
        onnx_path=onnx_path,
    )


def test_writes_one_file_per_precision_atomically(converted):
    assert set(converted.files) == {"fp32", "fp16", "int8"}
    for precision, path in converted.files.items():
        assert path == converted.out / f"model_{precision}.tflite"
        assert path.read_bytes()[4:8] == b"TFL3"
    assert sorted(p.name for p in converted.out.iterdir()) == [
        "model_fp16.tflite",
        "model_fp32.tflite",
        "model_int8.tflite",
    ]


def test_fp32_matches_pytorch(converted):
    from pacb_edge.export.tflite import evaluate_tflite

    torch_top1 = float((converted.torch_logits.argmax(1) == converted.y).mean())
    assert torch_top1 >= 0.8, "the tiny model must be confident for the INT8 checks to mean anything"
    r = evaluate_tflite(converted.files["fp32"], converted.x, converted.y, reference_logits=converted.torch_logits)
    assert r["n"] == len(converted.x)
    assert r["max_abs_diff"] < 1e-4
    assert r["top1_agreement"] == 1.0
    assert r["top1"] == pytest.approx(torch_top1)
    assert np.array_equal(r["predictions"], converted.torch_logits.argmax(1))
    fp16 = evaluate_tflite(converted.files["fp16"], converted.x, reference_logits=converted.torch_logits)
    assert fp16["max_abs_diff"] < 0.05 and fp16["top1_agreement"] >= 0.98


def test_io_details(converted):
    from pacb_edge.export.tflite import tflite_io_details

    fp32 = tflite_io_details(converted.files["fp32"])
    assert fp32["input"]["shape"] == [1, SIZE, SIZE, 3] and fp32["input"]["layout"] == "NHWC"
    assert fp32["input"]["dtype"] == "float32" and fp32["input"]["scale"] is None
    assert fp32["output"]["shape"] == [1, NUM_CLASSES] and fp32["output"]["dtype"] == "float32"


def test_int8_is_full_integer_and_smaller(converted):
    from pacb_edge.export.tflite import tflite_io_details

    io = tflite_io_details(converted.files["int8"])
    for side in ("input", "output"):
        assert io[side]["dtype"] == "int8"
        assert io[side]["scale"] > 0
        assert -128 <= io[side]["zero_point"] <= 127
    assert io["input"]["shape"] == [1, SIZE, SIZE, 3]
    assert converted.files["int8"].stat().st_size < 0.6 * converted.files["fp32"].stat().st_size


def test_int8_agrees_with_fp32(converted):
    from pacb_edge.export.tflite import evaluate_tflite, tflite_io_details

    fp32 = evaluate_tflite(converted.files["fp32"], converted.x, converted.y)
    int8 = evaluate_tflite(
        converted.files["int8"], converted.x, converted.y, reference_logits=converted.torch_logits, return_logits=True
    )
    assert float((int8["predictions"] == fp32["predictions"]).mean()) >= 0.9
    assert int8["top1_agreement"] >= 0.9
    assert int8["top1"] >= fp32["top1"] - 0.05
    # Dequantized outputs are logits on PyTorch's scale (not raw int8 codes, zero point removed): off by about a
    # quantization step on average.
    out_scale = tflite_io_details(converted.files["int8"])["output"]["scale"]
    assert int8["max_abs_diff"] < 0.5 * np.abs(converted.torch_logits).max()
    assert np.abs(int8["logits"] - converted.torch_logits).mean() < 2 * out_scale


def test_calibrated_offline_on_our_images_only(converted):
    seen = converted.seen
    assert converted.sockets == [] and converted.downloads == []
    assert converted.after == converted.before  # onnx2tf ran in its own folder; cwd and environment are restored
    nhwc = converted.calibration.transpose(0, 2, 3, 1)
    # The sample file onnx2tf would download sits in its working folder, made from our images...
    assert seen["cwd"].name.startswith("pacb_onnx2tf_") and not seen["cwd"].exists()
    np.testing.assert_array_equal(seen["sample"], nhwc[:20])
    # ...and calibration is our preprocessed images as they are: NHWC, mean 0, std 1.
    assert seen["input_name"] == "input"
    np.testing.assert_array_equal(seen["calibration"], nhwc)
    assert (seen["mean"], seen["std"]) == (0.0, 1.0)
    # onnx2tf only writes the SavedModel (and FP32/FP16); TFLite's converter makes INT8 from it (tflite_quant).
    assert seen["kwargs"]["output_signaturedefs"] is True
    assert not {"output_integer_quantized_tflite", "quant_type", "input_quant_dtype"} & set(seen["kwargs"])


def test_int8_input_range_is_our_calibration_range(converted):
    """The input scale covers our images' range (about ±8 here), not normalized COCO's (about -2.1..2.6)."""
    from pacb_edge.export.tflite import tflite_io_details

    lo, hi = min(converted.calibration.min(), 0.0), max(converted.calibration.max(), 0.0)
    scale = tflite_io_details(converted.files["int8"])["input"]["scale"]
    assert scale == pytest.approx((hi - lo) / 255, rel=0.02)


def test_evaluate_rejects_wrong_image_size(converted):
    from pacb_edge.export.tflite import evaluate_tflite

    with pytest.raises(PacbEdgeError, match="expects input shape"):
        evaluate_tflite(converted.files["fp32"], np.zeros((2, 3, 16, 16), np.float32))


def test_download_guard_refuses_without_local_file(tmp_path, monkeypatch):
    from pacb_edge.export.tflite import _import_onnx2tf, _offline_sample_data

    _import_onnx2tf()
    import onnx2tf.onnx2tf as onnx2tf_main
    import onnx2tf.utils.common_functions as onnx2tf_common

    calls = []
    monkeypatch.setattr(onnx2tf_common.requests, "get", lambda *a, **k: calls.append(a))
    monkeypatch.chdir(tmp_path)
    original = onnx2tf_main.download_test_image_data
    with _offline_sample_data(), pytest.raises(PacbEdgeError, match="download"):
        onnx2tf_main.download_test_image_data()
    assert calls == []
    assert onnx2tf_main.download_test_image_data is original


def test_broken_onnx_is_a_one_line_error(tmp_path):
    from pacb_edge.export.tflite import convert_onnx_to_tflite

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    with pytest.raises(PacbEdgeError) as e:
        convert_onnx_to_tflite(bad, out, np.zeros((4, 3, SIZE, SIZE), np.float32))
    assert "\n" not in str(e.value) and "broken.onnx" in str(e.value)
    assert list(out.glob("*.tflite")) == [] and list(out.iterdir()) == []


def test_unsupported_op_is_named(tmp_path):
    """A valid ONNX file with an op onnx2tf cannot convert (LpPool): one line naming it, nothing left behind."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pacb_edge.export.tflite import convert_onnx_to_tflite

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("LpPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2], p=2, name="lp_pool"),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["logits"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "lp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, str(tmp_path / "lp.onnx"))
    out = tmp_path / "out"
    with pytest.raises(PacbEdgeError) as e:
        convert_onnx_to_tflite(tmp_path / "lp.onnx", out, np.zeros((4, 3, 8, 8), np.float32))
    message = str(e.value)
    assert "\n" not in message and "LpPool" in message and "lp_pool" in message
    assert list(out.glob("*.tflite")) == []


def test_rejects_unknown_precision_and_mismatched_calibration(converted, tmp_path):
    from pacb_edge.export.tflite import convert_onnx_to_tflite

    with pytest.raises(PacbEdgeError, match="precision"):
        convert_onnx_to_tflite(converted.onnx_path, tmp_path, converted.calibration, precisions=("int4",))
    with pytest.raises(PacbEdgeError, match="calibration images"):
        convert_onnx_to_tflite(converted.onnx_path, tmp_path, np.zeros((4, 3, 16, 16), np.float32))
    with pytest.raises(PacbEdgeError, match="NaN"):
        convert_onnx_to_tflite(converted.onnx_path, tmp_path, np.full((4, 3, SIZE, SIZE), np.nan, np.float32))
    assert list(tmp_path.glob("*.tflite")) == []


def test_torch_optimizers_still_work_after_conversion_imports():
    """Loading TensorFlow before torch's triton extension segfaults the process at the next `torch.optim` use."""
    code = (
        "import torch\n"
        "from pacb_edge.export.tflite import _import_onnx2tf\n"
        "_import_onnx2tf()\n"
        "model = torch.nn.Linear(3, 3)\n"
        "torch.optim.Adam(model.parameters(), lr=1e-3).step()\n"
        "print('optimizer ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "optimizer ok" in done.stdout
