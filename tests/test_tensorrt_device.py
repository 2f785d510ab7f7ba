"""The Jetson harness on a real TensorRT + CUDA GPU: build a tiny engine and benchmark it with bench.py, and
`build_and_verify` (what `export --target trt` runs) builds once, then reuses the engine.

Skipped only when TensorRT, pycuda or a CUDA GPU is absent (every machine without an NVIDIA GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_jetson_harness import IMAGE_SIZE, NUM_TEST, make_bundle, run_bench

pytestmark = pytest.mark.tensorrt

trt = pytest.importorskip("tensorrt", reason="TensorRT Python API (tensorrt) is not installed")
cuda = pytest.importorskip("pycuda.driver", reason="pycuda is not installed")


def _gpu_count() -> int:
    try:
        cuda.init()
        return cuda.Device.count()
    except Exception:  # noqa: BLE001 - no driver or no device both mean: no usable GPU
        return 0


if _gpu_count() == 0:
    pytest.skip("no CUDA GPU visible to pycuda", allow_module_level=True)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("trt"))


def _build(bundle: Path, precision: str) -> Path:
    proc = subprocess.run(
        [sys.executable, str(bundle / "jetson" / "build_engine.py"), str(bundle), "--precision", precision],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def test_build_engine_names_and_reuses_the_engine(bundle):
    device = cuda.Device(0)
    engine = _build(bundle, "fp32")
    assert engine.is_file() and engine.stat().st_size > 0
    assert engine.parent == bundle
    major, minor = device.compute_capability()
    assert f"_trt{trt.__version__}_" in engine.name
    assert engine.name.endswith(f"_sm{major}{minor}.engine")
    assert json.loads(Path(str(engine) + ".json").read_text())["onnx_sha256"]
    mtime = engine.stat().st_mtime_ns
    assert _build(bundle, "fp32") == engine
    assert engine.stat().st_mtime_ns == mtime, "a matching engine must be reused, not rebuilt"


def test_tensorrt_backend_end_to_end(bundle):
    code, lines, stderr, result = run_bench(
        bundle, "--backend", "tensorrt", "--precision", "fp32", "--warmup", "5", "--runs", "50"
    )
    assert code == 0, stderr
    assert len(lines) == 1
    assert result["status"] == "ok" and result["runner"] == "tensorrt" and result["precision"] == "fp32"
    assert result["top1"] == 0.5 and result["n_eval"] == NUM_TEST
    lat, gpu = result["latency_ms"], result["gpu_compute_ms"]
    for stats in (lat, gpu):
        assert stats["count"] == 50
        assert 0 < stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert gpu["mean"] <= lat["mean"], "GPU compute time is part of the end-to-end host time"
    assert result["throughput_ips"] == pytest.approx(1000.0 / lat["mean"])
    assert Path(result["extra"]["engine"]).is_file()
    assert result["extra"]["input_shape"] == [1, 3, IMAGE_SIZE, IMAGE_SIZE]
    facts = result["device_facts"]
    assert facts["tensorrt_version"] == trt.__version__
    assert facts["cuda_device"] == cuda.Device(0).name()


def test_fp16_engine_when_the_gpu_has_fast_fp16(bundle):
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    if not getattr(builder, "platform_has_fast_fp16", True):
        pytest.skip("this GPU has no fast FP16")
    code, _, stderr, result = run_bench(
        bundle, "--backend", "tensorrt", "--precision", "fp16", "--warmup", "2", "--runs", "10"
    )
    assert code == 0, stderr
    assert result["status"] == "ok" and result["precision"] == "fp16"
    assert "_fp16_" in Path(result["extra"]["engine"]).name
    assert result["top1"] == 0.5  # the test images have clear top-1 margins, which FP16 keeps


def test_build_and_verify_builds_once_then_reuses(tmp_path):
    from pacb_edge.export.tensorrt import BundleSession, build_and_verify

    bundle = make_bundle(tmp_path)
    session = BundleSession(host=None, python=sys.executable, timeout=600)
    first = build_and_verify(bundle, "fp32", session)
    assert first["engine_cache"] == "built" and first["engine_build_s"] > 0
    assert first["top1"] == 0.5 and first["n_eval"] == NUM_TEST
    assert Path(first["engine"]).is_file() and first["device_facts"]["tensorrt_version"] == trt.__version__
    second = build_and_verify(bundle, "fp32", session, eval_limit=4)
    assert second["engine_cache"] == "hit" and second["engine_build_s"] == 0.0
    assert second["engine"] == first["engine"] and second["n_eval"] == 4


def test_int8_engine_of_a_real_zoo_model_with_the_project_calibrator(tmp_path):
    """MobileNetV3-L with CA, exported as the Nano gets it (opset 13, pre-flight), built as INT8 with the bundle's
    `IInt8EntropyCalibrator2` on real digits images, then verified on the recorded test split."""
    from pacb_edge.data.datasets import load_dataset
    from pacb_edge.export.api import export_checkpoint
    from pacb_edge.models import ModelSpec, create_model
    from pacb_edge.training.checkpoint import save_checkpoint

    data = load_dataset("digits", grayscale_to_rgb=True)
    spec = ModelSpec(
        arch="mobilenetv3_large",
        attention="ca",
        num_classes=10,
        in_chans=3,
        mean=data.mean,
        std=data.std,
        class_names=data.class_names,
        dataset="digits",
        split=data.split_record(),
    )
    model = create_model(spec.arch, **spec.model_kwargs()).eval()
    save_checkpoint(model, spec, tmp_path / "ckpt")
    report = export_checkpoint(
        tmp_path / "ckpt", ["trt"], precision="int8", out_dir=tmp_path / "out", calibration_images=64
    )
    (art,) = report["artifacts"]
    v = art["verification"]
    assert art["format"] == "trt" and art["precision"] == "int8" and art["opset"] == 13
    assert "_int8_" in Path(v["engine"]).name and v["engine_cache"] == "built"
    assert v["n"] == report["n_test"] == 270 and v["top1"] is not None
    assert list((tmp_path / "out" / "jetson_bundle").glob("calib_int8.cache"))
