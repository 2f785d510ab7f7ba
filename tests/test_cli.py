"""The CLI through typer's CliRunner."""

import json
from pathlib import Path

from typer.testing import CliRunner

from pacb_edge.cli.main import app

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


def test_piped_tables_are_markdown_with_whole_names():
    # CliRunner's stdout is not a terminal, like CI or `| tee`: the table is Markdown and no name is cut.
    r = runner.invoke(app, ["models", "--arch", "qarepvgg_a0,mobilenetv3_large", "--attention", "none,ca"])
    assert r.exit_code == 0, r.output
    assert "| arch | attention | params (M) | MACs (M) | FLOPs (M) = 2xMACs |" in r.output
    assert "| --- | --- | ---: | ---: | ---: |" in r.output
    assert "| qarepvgg_a0 | ca |" in r.output and "| mobilenetv3_large | none |" in r.output
    assert "…" not in r.output and "┃" not in r.output


def test_markdown_table_keeps_every_cell_whole():
    from pacb_edge.cli.output import markdown_table

    name = "mobilenetv3_large_ca_pruned_int8_with_a_very_long_name.tflite"
    text = markdown_table("bench", ["artifact", "p50 ms"], [[name, "1.250"], ["a|b", "-"]], caption="batch 1")
    assert text.splitlines() == [
        "bench",
        "",
        "| artifact | p50 ms |",
        "| --- | ---: |",
        f"| {name} | 1.250 |",
        "| a\\|b | - |",
        "",
        "batch 1",
    ]


_TINY = ["--model", "mobilenetv3_large", "--width-mult", "0.25", "--limit", "64", "--epochs", "1"]
_TINY += ["--batch-size", "32", "--threads", "1", "--no-progress"]


def test_train_writes_config_toml_that_repeats_the_run(tmp_path):
    import tomllib

    first, again = tmp_path / "first", tmp_path / "again"
    r = runner.invoke(app, ["train", *_TINY, "--seed", "3", "--out", str(first)])
    assert r.exit_code == 0, r.output
    config = first / "config.toml"
    saved = tomllib.loads(config.read_text())
    assert saved["epochs"] == 1 and saved["limit"] == 64 and saved["seed"] == 3 and saved["width-mult"] == 0.25
    assert saved["model"] == "mobilenetv3_large" and saved["out"] == str(first) and "config" not in saved
    header = config.read_text().splitlines()[:2]  # the command (here pytest's argv), then how to repeat it
    assert header[0].startswith("# pacb-edge")
    assert header[1].startswith("# Repeat this run with: pacb-edge train --config")
    # The file gives every option; the command line still wins (here: --out).
    r = runner.invoke(app, ["train", "--config", str(config), "--out", str(again)])
    assert r.exit_code == 0, r.output
    one, two = (json.loads((d / "metrics.json").read_text())["stages"]["train"] for d in (first, again))
    assert one["test_top1"] == two["test_top1"] and one["val_top1"] == two["val_top1"]
    assert tomllib.loads((again / "config.toml").read_text()) == {**saved, "out": str(again)}


def test_train_config_takes_yaml_and_refuses_unknown_options_in_one_line(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("model: vgg16\nbatch-size: 0\n")
    r = runner.invoke(app, ["train", "--config", str(yaml_file), "--out", str(tmp_path / "run")])
    assert r.exit_code == 1 and "batch size" in r.output  # the YAML's batch-size: 0 reached the training config
    assert "Traceback" not in r.output
    typo = tmp_path / "typo.toml"
    typo.write_text("epoch = 3\n")
    r = runner.invoke(app, ["train", "--config", str(typo)])
    assert r.exit_code == 2 and "unknown option 'epoch'" in r.output and "epochs" in r.output
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 3\n")
    r = runner.invoke(app, ["train", "--config", str(broken)])
    assert r.exit_code == 2 and "is not valid TOML" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_verbose_turns_on_logging():
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        r = runner.invoke(app, ["--verbose", "models", "--arch", "nope"])
        assert r.exit_code == 1
        assert root.level == logging.INFO
        assert any(type(h).__name__ == "RichHandler" for h in root.handlers)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_long_steps_say_when_they_start_and_how_long_they_took(capsys):
    import pytest

    from pacb_edge.core.consoles import stderr_console, step

    stderr_console.cache_clear()  # a console bound to this test's captured stderr
    try:
        with step("upload bundle (1.0 MB) to nano"):
            pass
        with pytest.raises(RuntimeError), step("run bundle on nano"):
            raise RuntimeError("connection lost")
        lines = capsys.readouterr().err.splitlines()
    finally:
        stderr_console.cache_clear()
    assert lines[0] == "upload bundle (1.0 MB) to nano ..."
    assert lines[1].startswith("upload bundle (1.0 MB) to nano: done in ") and lines[1].endswith(" s")
    assert lines[2] == "run bundle on nano ..." and lines[3].startswith("run bundle on nano: failed in ")


def test_demo_refuses_bad_settings_in_one_line_before_writing(tmp_path):
    out = tmp_path / "demo"
    for args, message in (
        (["--prune-ratio", "1.5"], "--prune-ratio must be in (0, 1), got 1.5"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--jobs", "0"], "--jobs must be at least 1, got 0"),
    ):
        r = runner.invoke(app, ["demo", "--out", str(out), *args])
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
        assert not out.exists()


def test_demo_command_passes_its_options_and_prints_the_table(tmp_path, monkeypatch):
    # The job itself is tested at a reduced size in test_demo.py; here: the command's options reach it, and its
    # result is printed whole.
    seen = []

    def fake_run_demo(cfg, log):
        seen.append(cfg)
        log("seed 0; 2 jobs x 1 torch thread")
        row = {"arch": "repvgg_a0", "variant": "CA_Pruned", "test_top1": 0.9667, "params": 2.741e6, "macs": 10.31e6}
        row.update(onnx_ms=2.1, tflite_int8_ms=0.76, int8_top1=0.5815, tflite_int8_bytes=3887.8 * 1024)
        return {"rows": [row], "timings_s": {"total": 517.0}}

    monkeypatch.setattr("pacb_edge.studies.demo.run_demo", fake_run_demo)
    args = ["demo", "--out", str(tmp_path), "--epochs", "3", "--seed", "7", "--jobs", "1", "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    (cfg,) = seen
    assert (cfg.out, cfg.epochs, cfg.seed, cfg.jobs, cfg.progress) == (tmp_path, 3, 7, 1, False)
    assert "| RepVGG-A0 CA_Pruned | 96.67 | 2.741 | 10.31 | 2.100 | 0.760 | 58.15 | 3887.8 |" in r.output
    assert "total 517 s" in r.output and "seed 0; 2 jobs" in r.output


def test_cli_reference_is_what_the_commands_say(tmp_path):
    """docs/cli.md is typer's own reference of the commands (`make docs`); an option added or changed without
    regenerating it fails here."""
    import subprocess
    import sys

    out = tmp_path / "cli.md"
    cmd = [
        sys.executable,
        "-m",
        "typer",
        "pacb_edge.cli.main",
        "utils",
        "docs",
        "--name",
        "pacb-edge",
        "--output",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path)
    committed = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    assert committed == out.read_text(), "docs/cli.md is stale: run `make docs`"
    assert "## `pacb-edge profile`" in committed and "`--latency-ratio R`" in committed


def test_torch_free_name_lists_are_the_registries():
    """The names `--help` offers (pacb_edge.core.names) are exactly what the registries hold."""
    from pacb_edge.core.names import ATTENTION_NAMES, CRITERION_NAMES, DATASET_NAMES
    from pacb_edge.data.datasets import list_datasets
    from pacb_edge.models import list_attentions
    from pacb_edge.pruning.pruner import CRITERIA

    assert sorted(ATTENTION_NAMES) == list_attentions()
    assert set(CRITERION_NAMES) == set(CRITERIA)
    assert set(DATASET_NAMES) | {"imagefolder:PATH"} == set(list_datasets())
    import typer

    helps = {p.name: p.help for p in typer.main.get_command(app).commands["train"].params}
    assert helps["attention"].endswith("lam or none.") and helps["prune"].endswith("random or none.")
