"""What a second run on the Jetson does not redo: the upload (content-addressed remote folders with a completion
marker, over a real sshd on 127.0.0.1) and the TensorRT engine build (build_engine's cache key, unit-tested with
TensorRT and the GPU monkeypatched, since neither is installed here; the real build is in test_tensorrt_device.py).
Also the raw-pixel bundle format: uint8 test set and calibration images, read back as float32 by the harness."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sshd_fixture import HOST_ALIAS, sshd_missing_reason
from test_jetson_ssh import NUM_TEST, _make_bundle, remote_folder

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.device_bench.jetson import JetsonRunner
from pacb_edge.device_bench.record import STATUS_OK
from pacb_edge.export.tensorrt import (
    UPLOAD_MARKER,
    BundleSession,
    build_and_verify,
    bundle_digest,
    raw_pixels,
    upload_plan,
    write_bundle,
)

JETSON_DIR = Path(__file__).resolve().parents[1] / "jetson"
needs_sshd = pytest.mark.skipif(sshd_missing_reason() is not None, reason=sshd_missing_reason() or "")


def _load_module(name: str):
    spec = importlib.util.spec_from_file_location("jetson_cache_" + name, JETSON_DIR / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> tuple[Path, float]:
    return _make_bundle(tmp_path_factory.mktemp("cache_bundle"))


def _runner(sshd, remote_dir: Path, **kw) -> JetsonRunner:
    opts = dict(
        host=HOST_ALIAS,
        ssh_config=str(sshd.client_config()),
        backend="onnxruntime",
        precision="fp32",
        warmup=1,
        runs=3,
        remote_dir=str(remote_dir),
        python=sys.executable,
        timeout=120,
    )
    opts.update(kw)
    return JetsonRunner(**opts)


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


# the upload


@needs_sshd
def test_second_bench_of_the_same_bundle_uploads_nothing(sshd, tiny_bundle, tmp_path):
    bundle, top1 = tiny_bundle
    remote_dir = tmp_path / "remote"
    first = _runner(sshd, remote_dir).run(bundle)
    assert first.status == STATUS_OK, first.error
    assert first.extra["upload"] == "sent" and first.extra["upload_bytes"] > 0
    arrived = remote_folder(bundle, remote_dir)
    assert first.extra["remote_bundle"] == str(arrived)
    assert (arrived / UPLOAD_MARKER).read_text() == first.extra["bundle_sha256"] + "\n"
    before = _mtimes(arrived)

    second = _runner(sshd, remote_dir).run(bundle)
    assert second.status == STATUS_OK, second.error
    assert second.extra["upload"] == "skipped" and second.extra["upload_bytes"] == 0
    assert second.extra["remote_bundle"] == str(arrived)
    assert second.top1 == pytest.approx(top1) and second.n_eval == NUM_TEST
    assert _mtimes(arrived) == before, "nothing on the device may be rewritten by a skipped upload"
    assert [p.name for p in remote_dir.iterdir()] == [arrived.name]


@needs_sshd
def test_two_bundles_land_in_two_remote_folders(sshd, tiny_bundle, tmp_path):
    """Two bundles with the same folder name (every export writes `jetson_bundle`) never overwrite each other."""
    a = shutil.copytree(tiny_bundle[0], tmp_path / "a" / "jetson_bundle")
    b = shutil.copytree(tiny_bundle[0], tmp_path / "b" / "jetson_bundle")
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["note"] = "another model"
    (b / "manifest.json").write_text(json.dumps(manifest))
    remote_dir = tmp_path / "remote"

    rec_a = _runner(sshd, remote_dir).run(a)
    rec_b = _runner(sshd, remote_dir).run(b)
    assert rec_a.status == STATUS_OK and rec_b.status == STATUS_OK, (rec_a.error, rec_b.error)
    assert rec_a.extra["upload"] == rec_b.extra["upload"] == "sent"
    folders = sorted(p.name for p in remote_dir.iterdir())
    assert len(folders) == 2
    assert all(f.startswith("jetson_bundle-") and len(f) == len("jetson_bundle-") + 16 for f in folders)
    assert rec_a.extra["remote_bundle"] != rec_b.extra["remote_bundle"]
    assert json.loads((Path(rec_b.extra["remote_bundle"]) / "manifest.json").read_text())["note"] == "another model"
    assert "note" not in json.loads((Path(rec_a.extra["remote_bundle"]) / "manifest.json").read_text())
    assert _runner(sshd, remote_dir).run(a).extra["upload"] == "skipped"


@needs_sshd
def test_an_incomplete_upload_is_sent_again(sshd, tiny_bundle, tmp_path):
    bundle = tiny_bundle[0]
    remote_dir = tmp_path / "remote"
    session = BundleSession(HOST_ALIAS, ssh_config=str(sshd.client_config()), remote_dir=str(remote_dir))
    assert session.upload(bundle)["upload"] == "sent"
    arrived = remote_folder(bundle, remote_dir)
    (arrived / "testset.npz").write_bytes(b"half a file")  # an upload cut short: no marker yet
    (arrived / UPLOAD_MARKER).unlink()

    where = session.upload(bundle)
    assert where["upload"] == "sent" and where["upload_bytes"] > 0
    assert (arrived / "testset.npz").read_bytes() == (bundle / "testset.npz").read_bytes()
    (arrived / UPLOAD_MARKER).write_text("0" * 64 + "\n")  # a marker for other content does not count either
    assert session.upload(bundle)["upload"] == "sent"
    assert session.upload(bundle)["upload"] == "skipped"


def test_bundle_hash_covers_every_uploaded_file_and_nothing_built_on_devices(tiny_bundle, tmp_path):
    bundle = shutil.copytree(tiny_bundle[0], tmp_path / "b")
    digest = bundle_digest(upload_plan(bundle))
    (bundle / "model_fp16_trt8.2.1.8_nvidia-tegra-x1_sm53.engine").write_bytes(b"built elsewhere")
    (bundle / "calib_int8.cache").write_bytes(b"cache")
    (bundle / UPLOAD_MARKER).write_text("x")
    (bundle / "jetson" / "stale.py").write_text("# not the installed harness")
    plan = upload_plan(bundle)
    assert bundle_digest(plan) == digest
    assert not [n for n in plan if n.endswith((".engine", ".cache")) or n == UPLOAD_MARKER or "stale" in n]
    assert {"jetson/bench.py", "jetson/build_engine.py"} <= set(plan)  # the installed harness, hashed too
    for name in ("model.onnx", "testset.npz", "calibration.npy", "manifest.json"):
        assert name in plan
        changed = shutil.copytree(tiny_bundle[0], tmp_path / name)
        (changed / name).write_bytes((changed / name).read_bytes() + b" ")
        assert bundle_digest(upload_plan(changed)) != digest, name


# the engine cache


class _FakeBuild:
    """build_engine with TensorRT and the GPU replaced: records every engine build."""

    def __init__(self, module, monkeypatch) -> None:
        self.module = module
        self.trt = SimpleNamespace(__version__="8.2.1.8")
        self.gpu = ("NVIDIA Tegra X1", (5, 3))
        self.builds: list[str] = []
        monkeypatch.setattr(module, "import_tensorrt", lambda: self.trt)
        monkeypatch.setattr(module, "cuda_device_info", lambda index=0: self.gpu)
        monkeypatch.setattr(module, "_build_serialized_engine", self._build)

    def _build(self, trt, bundle, precision, path, *args) -> bytes:
        self.builds.append(Path(path).name)
        return b"engine for " + precision.encode() + b" on " + trt.__version__.encode()

    def prepare(self, bundle: Path, precision: str = "fp16") -> tuple[str, dict]:
        return self.module.prepare_engine(str(bundle), precision)


def _engine_bundle(root: Path) -> Path:
    root.mkdir()
    (root / "model.onnx").write_bytes(b"onnx v1")
    np.save(root / "calibration.npy", np.zeros((2, 3, 4, 4), dtype=np.uint8))
    return root


def test_engine_is_reused_only_while_its_whole_key_matches(tmp_path, monkeypatch):
    fake = _FakeBuild(_load_module("build_engine"), monkeypatch)
    bundle = _engine_bundle(tmp_path / "bundle")

    path, info = fake.prepare(bundle)
    assert info["engine_cache"] == "built" and info["engine_build_s"] >= 0 and len(fake.builds) == 1
    assert Path(path).name == "model_fp16_trt8.2.1.8_nvidia-tegra-x1_sm53.engine"
    assert json.loads(Path(path + ".json").read_text()) == info["engine_key"]
    assert info["engine_key"]["compute_capability"] == "5.3" and info["engine_key"]["tensorrt"] == "8.2.1.8"

    again, info = fake.prepare(bundle)
    assert (again, info["engine_cache"], info["engine_build_s"], len(fake.builds)) == (path, "hit", 0.0, 1)

    (bundle / "model.onnx").write_bytes(b"onnx v2")
    assert fake.prepare(bundle)[1]["engine_cache"] == "built" and len(fake.builds) == 2
    assert fake.prepare(bundle)[1]["engine_cache"] == "hit"

    assert fake.prepare(bundle, "fp32")[1]["engine_cache"] == "built"  # another precision, another engine
    assert fake.prepare(bundle, "fp16")[1]["engine_cache"] == "hit"

    fake.trt.__version__ = "8.2.3.0"
    assert fake.prepare(bundle)[1]["engine_cache"] == "built"
    fake.gpu = ("Xavier", (7, 2))
    assert fake.prepare(bundle)[1]["engine_cache"] == "built"
    fake.gpu = ("Xavier", (8, 7))
    assert fake.prepare(bundle)[1]["engine_cache"] == "built"
    assert len(fake.builds) == 6 and len(set(fake.builds)) == 5

    _, info = fake.prepare(bundle, "int8")
    assert info["engine_cache"] == "built" and "calibration_sha256" in info["engine_key"]
    assert fake.prepare(bundle, "int8")[1]["engine_cache"] == "hit"
    np.save(bundle / "calibration.npy", np.ones((2, 3, 4, 4), dtype=np.uint8))
    assert fake.prepare(bundle, "int8")[1]["engine_cache"] == "built"
    assert fake.prepare(bundle, "fp16")[1]["engine_cache"] == "hit", "fp16 does not depend on the calibration"


def test_engine_with_a_foreign_or_missing_key_is_rebuilt(tmp_path, monkeypatch):
    fake = _FakeBuild(_load_module("build_engine"), monkeypatch)
    bundle = _engine_bundle(tmp_path / "bundle")
    path, info = fake.prepare(bundle)
    sidecar = Path(path + ".json")
    key = json.loads(sidecar.read_text())

    sidecar.write_text(json.dumps(dict(key, gpu="NVIDIA GeForce RTX 3090")))  # same file name, other GPU
    assert fake.prepare(bundle)[1]["engine_cache"] == "built"
    sidecar.unlink()
    assert fake.prepare(bundle)[1]["engine_cache"] == "built"
    Path(path).write_bytes(b"")
    assert fake.prepare(bundle)[1]["engine_cache"] == "built"
    assert json.loads(sidecar.read_text()) == key and Path(path).read_bytes().startswith(b"engine for fp16")
    assert fake.prepare(bundle)[1]["engine_cache"] == "hit"


class _OnnxAsEngine:
    """Stands in for bench.TensorRTRunner: runs model.onnx with onnxruntime, ignoring the (fake) engine file."""

    name = "tensorrt"

    def __init__(self, bench, bundle: Path):
        self.inner = bench.OnnxRuntimeRunner(str(bundle / "model.onnx"))

    def load(self, image_shape):
        self.inner.load(image_shape)

    def timed_infer(self, image):
        assert image.dtype == np.float32, "the harness must feed float32, whatever testset.npz stores"
        output, host_ms, _ = self.inner.timed_infer(image)
        return output, host_ms, host_ms / 2

    def facts(self):
        return {"tensorrt_version": "fake"}

    def close(self):
        self.inner.close()


def test_harness_reports_engine_built_then_hit(tiny_bundle, tmp_path, monkeypatch):
    bench = _load_module("bench")
    fake = _FakeBuild(_load_module("build_engine"), monkeypatch)
    bundle = shutil.copytree(tiny_bundle[0], tmp_path / "bundle")
    monkeypatch.setattr(bench, "_build_engine_module", lambda: fake.module)
    monkeypatch.setattr(bench, "TensorRTRunner", lambda engine: _OnnxAsEngine(bench, bundle))
    argv = ["--bundle", str(bundle), "--backend", "tensorrt", "--precision", "fp16", "--warmup", "0", "--runs", "2"]

    first = bench.run_benchmark(bench.build_parser().parse_args(argv))
    second = bench.run_benchmark(bench.build_parser().parse_args(argv))
    assert first["status"] == second["status"] == "ok"
    assert first["extra"]["engine_cache"] == "built" and first["extra"]["engine_build_s"] >= 0
    assert second["extra"]["engine_cache"] == "hit" and second["extra"]["engine_build_s"] == 0.0
    assert first["extra"]["engine"] == second["extra"]["engine"] and len(fake.builds) == 1
    assert first["top1"] == second["top1"] == pytest.approx(tiny_bundle[1])
    assert second["extra"]["engine_key"]["onnx_sha256"]


def test_onnxruntime_results_carry_no_engine_cache(tiny_bundle):
    bench = _load_module("bench")
    argv = ["--bundle", str(tiny_bundle[0]), "--backend", "onnxruntime", "--warmup", "0", "--runs", "1"]
    record = bench.run_benchmark(bench.build_parser().parse_args(argv))
    assert record["status"] == "ok" and record["extra"]["engine_cache"] is None


@needs_sshd
def test_build_and_verify_without_tensorrt_is_one_line(sshd, tiny_bundle, tmp_path):
    remote_dir = tmp_path / "remote"
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "tensorrt.py").write_text("raise ImportError(\"No module named 'tensorrt'\")\n")
    python = tmp_path / "python_without_trt"
    python.write_text(f"#!/bin/sh\nPYTHONPATH='{blocker}' exec '{sys.executable}' \"$@\"\n")
    python.chmod(0o755)
    session = BundleSession(
        HOST_ALIAS, ssh_config=str(sshd.client_config()), remote_dir=str(remote_dir), python=str(python)
    )
    with pytest.raises(PacbEdgeError, match="(?i)tensorrt") as info:
        build_and_verify(tiny_bundle[0], "fp16", session, eval_limit=4)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    assert remote_folder(tiny_bundle[0], remote_dir).is_dir()
    with pytest.raises(PacbEdgeError, match="precision"):
        build_and_verify(tiny_bundle[0], "fp64", session)
    options = dict(host=HOST_ALIAS, ssh_config=str(sshd.client_config()), remote_dir=str(remote_dir), python=python)
    with pytest.raises(PacbEdgeError, match="(?i)tensorrt"):  # export/api.py passes the session's options
        build_and_verify(tiny_bundle[0], "fp16", eval_limit=None, **options)
    with pytest.raises(TypeError):
        build_and_verify(tiny_bundle[0], "fp16", session, host=HOST_ALIAS)


# the raw-pixel bundle


def test_bundle_stores_raw_pixels_as_uint8(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 3, 4, 4)).astype(np.float32)  # raw pixels held as float: integral, 0..255
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    bundle = write_bundle(tmp_path / "b", onnx, x[:2], x, np.arange(5), {"input": {"shape": [1, 3, 4, 4]}})
    with np.load(bundle / "testset.npz") as data:
        assert data["x"].dtype == np.uint8 and np.array_equal(data["x"], x) and data["y"].dtype == np.int64
    calibration = np.load(bundle / "calibration.npy")
    assert calibration.dtype == np.uint8 and np.array_equal(calibration, x[:2])

    smooth = np.minimum(x[:2], 254) + 0.5  # resized pixels may fall between integers: calibration keeps them as float32
    write_bundle(tmp_path / "c", onnx, smooth, x.astype(np.uint8), np.arange(5), {})
    assert np.load(tmp_path / "c" / "calibration.npy").dtype == np.float32
    build_engine = _load_module("build_engine")
    batches = build_engine._calibration_batches(str(bundle), [1, 3, 4, 4])
    assert all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), x[:2])


def test_bundle_refuses_images_that_are_not_raw_pixels(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    normalized = np.random.default_rng(0).standard_normal((3, 3, 4, 4)).astype(np.float32)
    pixels = np.zeros((3, 3, 4, 4), dtype=np.uint8)
    with pytest.raises(PacbEdgeError, match="raw 0-255 pixels") as info:
        write_bundle(tmp_path / "b", onnx, pixels, normalized, np.arange(3), {})
    assert "\n" not in str(info.value)
    with pytest.raises(PacbEdgeError, match="calibration images"):
        write_bundle(tmp_path / "b", onnx, normalized, pixels, np.arange(3), {})
    with pytest.raises(PacbEdgeError, match="non-integral"):
        write_bundle(tmp_path / "b", onnx, pixels, pixels + np.float32(0.5), np.arange(3), {})
    with pytest.raises(PacbEdgeError):
        raw_pixels(np.array([[300.0]]), "images")
    assert not (tmp_path / "b").exists(), "nothing is written for refused images"
