"""The wheel built with `python -m build` holds the one `pacb_edge` namespace: card folders and device harnesses."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = out.glob("pacb_edge-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_wheel_maps_card_folders_into_pacb_edge(wheel_names):
    for name in (
        "pacb_edge/cli/main.py",
        "pacb_edge/models/registry.py",
        "pacb_edge/models/attention.py",
        "pacb_edge/models/mobilenetv3.py",
        "pacb_edge/export/__init__.py",
        "pacb_edge/device_bench/__init__.py",
    ):
        assert name in wheel_names, name


def test_wheel_ships_device_harnesses_as_package_data(wheel_names):
    jetson = [n for n in wheel_names if n.startswith("pacb_edge/jetson/")]
    android = [n for n in wheel_names if n.startswith("pacb_edge/android/")]
    for src in (ROOT / "jetson").glob("*.py"):
        assert f"pacb_edge/jetson/{src.name}" in jetson
    for src in list((ROOT / "android").glob("*.sh")) + list((ROOT / "android").glob("*.py")):
        assert f"pacb_edge/android/{src.name}" in android
    for src in (ROOT / "export" / "trt_ops").glob("*.txt"):  # the TensorRT operator tables of `pacb-edge check`
        assert f"pacb_edge/export/trt_ops/{src.name}" in wheel_names


def test_wheel_has_no_top_level_models_or_export(wheel_names):
    tops = {n.split("/")[0] for n in wheel_names}
    assert "models" not in tops and "export" not in tops and "device_bench" not in tops
    assert tops <= {"pacb_edge"} | {t for t in tops if t.endswith(".dist-info")}
    entry = [n for n in wheel_names if n.endswith("entry_points.txt")]
    assert entry, "console script entry point missing"
