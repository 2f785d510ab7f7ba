"""The CLI through typer's CliRunner."""

import json

from typer.testing import CliRunner

from pacb_edge.cli import app

runner = CliRunner()


def test_models_lists_every_arch_with_counts(tmp_path):
    out = tmp_path / "models.json"
    r = runner.invoke(app, ["models", "--attention", "none,ca", "--json", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())
    archs = {row["arch"] for row in rows}
    assert {"mobilenetv3_large", "repvgg_a0", "vgg16", "resnet56", "mobilenetv2"} <= archs
    assert {row["attention"] for row in rows} == {"none", "ca"}
    vgg = next(r for r in rows if r["arch"] == "vgg16" and r["attention"] == "none")
    assert round(vgg["params"] / 1e6, 2) == 16.87
    assert all(row["flops"] == 2 * row["macs"] > 0 for row in rows)
    assert "vgg16" in r.output and "attention modules" in r.output


def test_models_rejects_bad_input_in_one_line():
    r = runner.invoke(app, ["models", "--arch", "nope"])
    assert r.exit_code == 1
    assert "unknown model 'nope'" in r.output
    assert "Traceback" not in r.output
