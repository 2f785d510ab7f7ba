"""`pacb-edge --help` must not pull in the heavy frameworks (STYLE: heavy imports stay lazy)."""

import json
import subprocess
import sys

HEAVY = ("torch", "torchvision", "tensorflow", "onnxruntime", "tensorrt", "onnx", "onnx2tf", "torch_pruning")


def test_cli_help_imports_no_heavy_framework():
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from pacb_edge.cli.main import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "for sub in ('train', 'export', 'bench', 'models', 'demo', 'reproduce'):\n"
        "    r = CliRunner().invoke(app, [sub, '--help'])\n"
        "    assert r.exit_code == 0, (sub, r.output)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    heavy_loaded = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy_loaded == [], f"--help imported heavy modules: {heavy_loaded[:10]}"
    assert "pacb_edge.cli.main" in loaded


def test_console_script_help_runs():
    exe = subprocess.run(
        [sys.executable, "-m", "pacb_edge.cli.main", "--help"], capture_output=True, text=True, timeout=60
    )
    assert exe.returncode == 0
    for sub in ("train", "export", "bench", "models", "demo", "reproduce"):
        assert sub in exe.stdout
