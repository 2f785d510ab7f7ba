"""The stand-alone Jetson harness (jetson/): Python 3.6 clean, lazy imports, engine naming, and a real
end-to-end benchmark of a tiny bundle with the onnxruntime backend (TensorRT: test_tensorrt_device.py)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

JETSON_DIR = Path(__file__).resolve().parents[1] / "jetson"
HARNESS_FILES = sorted(JETSON_DIR.glob("*.py"))
IMAGE_SIZE = 16
NUM_CLASSES = 4
NUM_TEST = 8
MIN_LOGIT_MARGIN = 0.1  # test images whose top-2 logits are this far apart keep their argmax on any backend


def _load_module(name):
    spec = importlib.util.spec_from_file_location("jetson_" + name, JETSON_DIR / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_model(torch):
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, NUM_CLASSES),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
        model[1].weight.uniform_(0.5, 1.5)
    return model.eval()


def make_bundle(root: Path) -> Path:
    """A bundle like the export layer writes, for a tiny CNN. Test labels are the model's own top-1 for the
    even-indexed images and wrong for the odd ones, so top-1 is exactly 0.5 and shifts if images and labels
    are paired wrongly (the predictions differ between images)."""
    import onnxruntime as ort
    import torch

    bundle = root / "bundle"
    bundle.mkdir(parents=True)
    model = _tiny_model(torch)
    dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with warnings.catch_warnings():
        # The TorchScript exporter, as export/onnx.py uses, warns that it is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(bundle / "model.onnx"),
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamo=False,
        )

    rng = np.random.default_rng(0)
    noise = rng.standard_normal((256, 3, IMAGE_SIZE, IMAGE_SIZE))
    candidates = (noise * rng.uniform(0.2, 3.0, (256, 3, 1, 1)) + rng.uniform(-2, 2, (256, 3, 1, 1))).astype(np.float32)
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {"input": c[None]})[0] for c in candidates])
    top2 = np.sort(logits, axis=1)[:, -2:]
    keep = np.flatnonzero(top2[:, 1] - top2[:, 0] > MIN_LOGIT_MARGIN)[:NUM_TEST]
    assert len(keep) == NUM_TEST, "fixture: too few test images with a clear top-1"
    x, preds = candidates[keep], logits[keep].argmax(axis=1)
    assert len(set(preds.tolist())) > 1, "fixture: the model predicts one class for every image"
    y = preds.copy()
    y[1::2] = (preds[1::2] + 1) % NUM_CLASSES
    np.savez(bundle / "testset.npz", x=x, y=y.astype(np.int64))
    np.save(bundle / "calibration.npy", candidates[-16:])
    manifest = {
        "input": {"name": "input", "shape": [1, 3, IMAGE_SIZE, IMAGE_SIZE], "layout": "NCHW"},
        "precisions": ["fp32", "fp16", "int8"],
        "spec": {"input_size": IMAGE_SIZE, "in_chans": 3, "num_classes": NUM_CLASSES},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    shutil.copytree(JETSON_DIR, bundle / "jetson", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return bundle


def run_bench(bundle: Path, *args: str, env: dict | None = None) -> tuple[int, list[str], str, dict]:
    """Run bundle/jetson/bench.py; returns (exit code, stdout lines, stderr, the JSON of the last line)."""
    proc = subprocess.run(
        [sys.executable, str(bundle / "jetson" / "bench.py"), "--bundle", str(bundle), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    lines = proc.stdout.splitlines()
    assert lines, "bench.py printed nothing on stdout; stderr:\n" + proc.stderr
    return proc.returncode, lines, proc.stderr, json.loads(lines[-1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("jetson"))


def _vermin(*paths) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-c",
        "import sys, vermin; sys.exit(vermin.main())",
        "-q",
        "--no-tips",
        "-t=3.6-",
        "--violations",
        *map(str, paths),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_harness_has_no_python37_features():
    proc = _vermin(JETSON_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_vermin_check_catches_37_features(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from dataclasses import dataclass\nimport subprocess\nsubprocess.run(['true'], capture_output=True)\n"
    )
    proc = _vermin(bad)
    assert proc.returncode != 0
    assert "dataclasses" in proc.stdout


@pytest.mark.parametrize("path", HARNESS_FILES, ids=lambda p: p.name)
def test_harness_parses_as_python36(path):
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 6))


def test_harness_files_are_there():
    names = {p.name for p in HARNESS_FILES}
    assert {"__init__.py", "bench.py", "build_engine.py"} <= names


def test_harness_imports_no_backend_at_import_time():
    code = (
        f"import sys; sys.path.insert(0, {str(JETSON_DIR)!r}); import bench, build_engine; "
        "print(sorted(m for m in ('tensorrt', 'pycuda', 'onnxruntime', 'torch') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_engine_filename_names_tensorrt_version_and_device():
    build_engine = _load_module("build_engine")
    name = build_engine.engine_filename("fp16", "8.2.1.8", "NVIDIA Tegra X1", (5, 3))
    assert name == "model_fp16_trt8.2.1.8_nvidia-tegra-x1_sm53.engine"
    others = {
        build_engine.engine_filename("fp16", "8.2.3.0", "NVIDIA Tegra X1", (5, 3)),
        build_engine.engine_filename("fp16", "8.2.1.8", "Xavier", (7, 2)),
        build_engine.engine_filename("fp16", "8.2.1.8", "NVIDIA Tegra X1", (6, 2)),
        build_engine.engine_filename("int8", "8.2.1.8", "NVIDIA Tegra X1", (5, 3)),
    }
    assert name not in others and len(others) == 4
    assert build_engine.device_slug("NVIDIA GeForce RTX 3090 / Ti") == "nvidia-geforce-rtx-3090-ti"
    with pytest.raises(build_engine.BuildError, match="fp64"):
        build_engine.engine_filename("fp64", "8.2.1.8", "NVIDIA Tegra X1", (5, 3))


def test_engine_is_rebuilt_when_the_onnx_changes(tmp_path):
    build_engine = _load_module("build_engine")
    (tmp_path / "model.onnx").write_bytes(b"model v1")
    engine = tmp_path / "model_fp32_trt8.2.1.8_nvidia-tegra-x1_sm53.engine"
    engine.write_bytes(b"engine")

    def key():
        return build_engine.engine_key(str(tmp_path), "fp32", "8.2.1.8", "NVIDIA Tegra X1", (5, 3))

    (tmp_path / (engine.name + ".json")).write_text(json.dumps(key()))
    assert set(key()) == {"onnx_sha256", "precision", "tensorrt", "gpu", "compute_capability"}
    is_current = build_engine._engine_is_current
    assert is_current(str(engine), key())
    (tmp_path / "model.onnx").write_bytes(b"model v2")
    assert not is_current(str(engine), key())


def test_calibration_batches_come_from_the_bundle(tmp_path):
    build_engine = _load_module("build_engine")
    images = np.arange(5 * 3 * 4 * 4, dtype=np.float32).reshape(5, 3, 4, 4)
    np.save(tmp_path / "calibration.npy", images)
    batches = build_engine._calibration_batches(str(tmp_path), [1, 3, 4, 4])
    assert len(batches) == 5 and all(b.shape == (1, 3, 4, 4) and b.flags.c_contiguous for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), images)
    with pytest.raises(build_engine.BuildError, match="calibration.npy has shape"):
        build_engine._calibration_batches(str(tmp_path), [1, 3, 8, 8])


def test_latency_stats_match_the_host_record():
    from pacb_edge.device_bench.record import latency_stats as host_stats

    bench = _load_module("bench")
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 10, 99, 100, 101, 200):
        samples = rng.gamma(2.0, 1.5, n).tolist()
        assert bench.latency_stats(samples) == pytest.approx(host_stats(samples))


def test_onnxruntime_backend_end_to_end(bundle):
    code, lines, stderr, result = run_bench(
        bundle, "--backend", "onnxruntime", "--warmup", "2", "--runs", "10", "--threads", "1"
    )
    assert code == 0, stderr
    assert len(lines) == 1, "stdout must hold only the JSON line"
    assert result["status"] == "ok" and result["error"] is None
    assert result["runner"] == "onnxruntime" and result["precision"] == "fp32"
    assert result["top1"] == 0.5
    assert result["n_eval"] == NUM_TEST
    assert result["accuracy_source"] == "device"
    lat = result["latency_ms"]
    assert lat["count"] == 10 and result["runs"] == 10 and result["warmup"] == 2
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]
    assert result["throughput_ips"] == pytest.approx(1000.0 / lat["mean"])
    assert result["gpu_compute_ms"] is None
    assert result["extra"]["engine"] is None
    assert result["extra"]["input_shape"] == [1, 3, IMAGE_SIZE, IMAGE_SIZE]
    assert result["spec"]["num_classes"] == NUM_CLASSES
    facts = result["device_facts"]
    assert facts["python"] == ".".join(map(str, sys.version_info[:3]))
    assert facts["hostname"] and facts["jetson_clocks"]
    assert facts["onnxruntime_version"] and facts["threads"] == 1


def test_eval_limit_and_min_time(bundle):
    code, _, stderr, result = run_bench(
        bundle,
        "--backend",
        "onnxruntime",
        "--warmup",
        "0",
        "--runs",
        "1",
        "--min-time",
        "0.3",
        "--eval-limit",
        "4",
    )
    assert code == 0, stderr
    assert result["n_eval"] == 4 and result["top1"] == 0.5
    assert result["latency_ms"]["count"] > 1
    assert result["extra"]["timed_wall_s"] >= 0.3


def _without_tensorrt(tmp_path) -> dict:
    """An environment in which `import tensorrt` fails even where TensorRT is installed."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "tensorrt.py").write_text("raise ImportError(\"No module named 'tensorrt'\")\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), *filter(None, [env.get("PYTHONPATH")])])
    return env


def test_tensorrt_backend_without_tensorrt_fails_as_json(bundle, tmp_path):
    code, lines, stderr, result = run_bench(
        bundle, "--backend", "tensorrt", "--runs", "5", env=_without_tensorrt(tmp_path)
    )
    assert code == 1
    assert len(lines) == 1 and "Traceback" not in "\n".join(lines)
    assert result["status"] == "failed"
    assert result["runner"] == "tensorrt"
    assert "tensorrt" in result["error"].lower()
    assert result["error"].startswith("BuildError: ")
    assert result["latency_ms"] == {} and result["top1"] is None
    assert result["device_facts"]["hostname"]
    # What was known before the failure is still reported.
    assert result["extra"]["input_shape"] == [1, 3, IMAGE_SIZE, IMAGE_SIZE]
    assert "Traceback" not in stderr


def test_missing_testset_fails_as_json(bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "testset.npz").unlink()
    code, lines, _, result = run_bench(broken, "--backend", "onnxruntime")
    assert code == 1 and len(lines) == 1
    assert result["status"] == "failed"
    assert result["error"].startswith("HarnessError: ") and "testset.npz" in result["error"]


def test_bad_arguments_fail_as_json(bundle):
    code, lines, _, result = run_bench(bundle, "--backend", "onnxruntime", "--runs", "many")
    assert code == 1 and len(lines) == 1
    assert result["status"] == "failed" and "--runs" in result["error"]


def test_onnxruntime_backend_refuses_int8(bundle):
    code, _, _, result = run_bench(bundle, "--backend", "onnxruntime", "--precision", "int8")
    assert code == 1 and result["status"] == "failed" and "fp32" in result["error"]


def test_only_the_json_reaches_stdout(tmp_path):
    """Output of Python and native code (TensorRT's logger prints from C++) goes to stderr, not stdout."""
    code = (
        f"import os, sys; sys.path.insert(0, {str(JETSON_DIR)!r}); import bench\n"
        "def noisy(args, record):\n"
        "    print('python noise'); os.write(1, b'native noise\\n'); record['status'] = 'ok'; return record\n"
        "bench.run_benchmark = noisy\n"
        "sys.exit(bench.main(['--backend', 'onnxruntime']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1 and json.loads(proc.stdout)["status"] == "ok"
    assert "python noise" in proc.stderr and "native noise" in proc.stderr


# --- TensorRT binding stand-ins: each behaves as that version's Python binding does where the harness relies on it.


class _FakeCuda:
    """pycuda.driver, enough for the calibrator and the runner's buffers."""

    class _Device:
        def name(self):
            return "NVIDIA Tegra X1"

        def compute_capability(self):
            return (5, 3)

    class Context:
        @staticmethod
        def get_device():
            return _FakeCuda._Device()

    class Stream:
        handle = 0

        def synchronize(self):
            pass

    class Event:
        def record(self, stream=None):
            pass

    def __init__(self):
        self.allocs = 0

    def mem_alloc(self, n):
        self.allocs += 1
        return self.allocs

    def pagelocked_empty(self, shape, dtype):
        return np.zeros(shape, dtype)

    def memcpy_htod(self, *a):
        pass


def _fake_trt(version, *, refuse_none_cache, nptype_broken, shape_accepted=True):
    """A `tensorrt` module: 8.0.1's calibrator binding casts read_calibration_cache's value to a buffer (None raises);
    TensorRT <= 8.5.1's `nptype` touches `np.bool`, gone in numpy >= 1.24; `set_binding_shape` returns a bool."""
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class DataType:
        FLOAT, HALF, INT8, INT32, BOOL = range(5)

    trt.DataType = DataType

    def nptype(dtype):
        if nptype_broken:
            raise AttributeError("module 'numpy' has no attribute 'bool'")
        return np.float32

    trt.nptype = nptype

    class IInt8EntropyCalibrator2:
        def __init__(self):
            pass

    def binding_reads_cache(calibrator):  # pyInt8.cpp readCalibrationCache, per version
        value = calibrator.read_calibration_cache()
        if value is None and refuse_none_cache:
            raise TypeError("Unable to cast Python instance of type <class 'NoneType'> to C++ type 'buffer'")
        return value

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    trt.binding_reads_cache = binding_reads_cache

    class Context:
        def set_binding_shape(self, i, shape):
            self.shape = tuple(shape)
            return shape_accepted

        def get_binding_shape(self, i):
            return getattr(self, "shape", (1, 3, IMAGE_SIZE, IMAGE_SIZE)) if i == 0 else (1, NUM_CLASSES)

    class Engine:  # TensorRT 8.0/8.2: bindings only (no num_io_tensors)
        num_bindings = 2

        def binding_is_input(self, i):
            return i == 0

        def get_binding_shape(self, i):
            return (-1, 3, IMAGE_SIZE, IMAGE_SIZE) if i == 0 else (-1, NUM_CLASSES)

        def get_binding_name(self, i):
            return ("input", "logits")[i]

        def get_binding_dtype(self, i):
            return DataType.FLOAT if i == 0 else DataType.BOOL

        def create_execution_context(self):
            return Context()

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine()

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


@pytest.fixture
def stand_ins(monkeypatch):
    import types

    def install(trt):
        cuda = _FakeCuda()
        pycuda = types.ModuleType("pycuda")
        pycuda.driver = cuda
        monkeypatch.setitem(sys.modules, "pycuda", pycuda)
        monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
        monkeypatch.setitem(sys.modules, "pycuda.autoprimaryctx", types.ModuleType("pycuda.autoprimaryctx"))
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.syspath_prepend(str(JETSON_DIR))
        monkeypatch.delitem(sys.modules, "build_engine", raising=False)
        return trt

    return install


@pytest.mark.parametrize("version,none_ok", [("8.0.1.6", False), ("8.2.1.8", True)])
def test_first_int8_build_reads_no_cache_in_a_form_the_binding_takes(stand_ins, tmp_path, version, none_ok):
    trt = stand_ins(_fake_trt(version, refuse_none_cache=not none_ok, nptype_broken=False))
    build_engine = _load_module("build_engine")
    batches = [np.zeros((1, 3, 4, 4), np.float32)]
    calibrator = build_engine._make_calibrator(trt, batches, str(tmp_path / "c.cache"), {"k": 1})
    value = trt.binding_reads_cache(calibrator)  # 8.0.1 raised here on None: no JSON, the build aborted
    assert value == (None if none_ok else b"")


def test_a_cache_read_back_stays_referenced_by_the_calibrator(stand_ins, tmp_path):
    """8.0.1 keeps no reference to the returned bytes while TensorRT reads them: the calibrator must."""
    trt = stand_ins(_fake_trt("8.0.1.6", refuse_none_cache=True, nptype_broken=False))
    build_engine = _load_module("build_engine")
    cache = tmp_path / "c.cache"
    cache.write_bytes(b"TRT-8001-EntropyCalibration2\n" + bytes(range(64)))
    (tmp_path / "c.cache.json").write_text(json.dumps({"k": 1}))
    calibrator = build_engine._make_calibrator(trt, [np.zeros((1, 3, 4, 4), np.float32)], str(cache), {"k": 1})
    value = trt.binding_reads_cache(calibrator)
    assert value == cache.read_bytes() and calibrator.cache is value


def test_runner_maps_dtypes_without_trt_nptype_and_checks_the_shape_it_sets(stand_ins, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine")
    stand_ins(_fake_trt("8.4.1.5", refuse_none_cache=False, nptype_broken=True))  # numpy >= 1.24: np.bool is gone
    bench = _load_module("bench")
    runner = bench.TensorRTRunner(str(engine))
    runner.load((1, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert [h.dtype for _, h, _ in runner.inputs + runner.outputs] == [np.float32, np.bool_]
    assert runner.inputs[0][1].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    stand_ins(_fake_trt("8.0.1.6", refuse_none_cache=True, nptype_broken=False, shape_accepted=False))
    bench = _load_module("bench")
    with pytest.raises(bench.HarnessError, match=r"refused input shape \(1, 3, 16, 16\) for input"):
        bench.TensorRTRunner(str(engine)).load((1, 3, IMAGE_SIZE, IMAGE_SIZE))
