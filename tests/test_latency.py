"""Pruning to a latency budget: the latency model, HALP's knapsack, NetAdapt's measured rounds, the table's keys.

Most tests inject a deterministic latency function in place of a runtime, so they test the logic and not this
machine's noise; `test_latency_ratio_is_met_when_measured` (slow) measures a real model on onnxruntime.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pacb_edge.cli.main import app
from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.models import ModelSpec, create_model
from pacb_edge.pruning.latency import LatencyTable, choose_widths, group_values
from pacb_edge.pruning.pruner import PruneConfig, analyze, prune_model
from pacb_edge.studies import latency_profile as lp

runner = CliRunner()


def _model(arch="vgg16", attention="none", width=0.25, seed=1):
    spec = ModelSpec(arch=arch, attention=attention, width_mult=width, input_size=32, in_chans=3, num_classes=10)
    model = create_model(arch, **spec.model_kwargs())
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.05
    return model.eval(), spec


def _synthetic_table(analysis, per_mac=2e-6, intercept=0.5) -> LatencyTable:
    """A table whose latency model is a known function: `intercept` + `per_mac` ms per MAC of every layer."""
    from pacb_edge.pruning.latency import TableKey, feature_names

    full = analysis.full_widths()
    table = LatencyTable(
        key=TableKey("onnxruntime", "test", "test", "vgg16", "x", 32, "fp32", 1, analysis.multiple),
        reference_ms=0.0,
        unpruned_ms=0.0,
        floor_ms=0.0,
        group_roots=[g.root for g in analysis.groups],
        group_channels=full,
        min_widths=[analysis.width_options(i)[0] for i in range(len(full))],
        layers=analysis.layers,
    )
    table.feature_names = feature_names(analysis.layers)
    table.coefficients = [per_mac if not n.startswith("elementwise") else 0.0 for n in table.feature_names]
    table.intercept = intercept
    table.reference_ms = table.unpruned_ms = table.predict(full)
    table.floor_ms = table.predict(table.min_widths)
    return table


def test_fit_recovers_a_linear_latency_function():
    model, spec = _model("mobilenetv3_large", "ca", width=0.5)
    analysis = analyze(model, spec, PruneConfig(round_to=8))
    truth = _synthetic_table(analysis)
    rng = np.random.default_rng(0)
    options = [analysis.width_options(i) for i in range(len(analysis.groups))]
    samples = [([int(rng.choice(o)) for o in options], 0.0) for _ in range(60)]
    samples = [(w, truth.predict(w)) for w, _ in samples]
    fitted = _synthetic_table(analysis, per_mac=0.0, intercept=0.0)
    fitted.fit(samples)
    held = [[int(rng.choice(o)) for o in options] for _ in range(10)]
    assert max(abs(fitted.predict(w) - truth.predict(w)) / truth.predict(w) for w in held) < 1e-6
    assert all(c >= 0 for c in fitted.coefficients)


def _small_cnn():
    """Four convs (the stem protected), so three groups of few widths: small enough to search exhaustively."""
    from torch import nn

    layers, cin = [], 3
    for cout, stride in ((16, 1), (40, 2), (32, 1), (48, 2)):
        layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        cin = cout
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.05
    return model.eval(), ModelSpec(arch="small_cnn", input_size=32)


def test_knapsack_meets_the_predicted_budget_with_the_most_score():
    model, spec = _small_cnn()
    analysis = analyze(model, spec, PruneConfig(criterion="bn-scale", round_to=8, min_channels=8))
    assert len(analysis.groups) == 3
    table = _synthetic_table(analysis)
    options = [analysis.width_options(i) for i in range(len(analysis.groups))]
    values = group_values([g.scores.numpy() for g in analysis.groups], options, normalize=False)
    budget = table.reference_ms * 0.6
    widths = choose_widths(table, values, options, budget)
    assert widths is not None and table.predict(widths) <= budget

    def score(ws):
        return sum(v[o.index(w)] for v, o, w in zip(values, options, ws, strict=True))

    # Exhaustive search over every choice: nothing within the budget keeps more score.
    best = max((score(c) for c in itertools.product(*options) if table.predict(list(c)) <= budget), default=None)
    assert score(widths) >= best - 1e-6 * abs(best)
    # An impossible budget has no answer.
    assert choose_widths(table, values, options, table.floor_ms * 0.5) is None


def test_chosen_widths_keep_the_highest_scoring_channels():
    model, spec = _model("vgg16", "none", width=0.25)
    analysis = analyze(model, spec, PruneConfig(criterion="bn-scale", round_to=8))
    widths = {g.root: analysis.width_options(i)[1] for i, g in enumerate(analysis.groups)}
    pruned, _, _ = prune_model(model, spec, PruneConfig(criterion="bn-scale", round_to=8, group_widths=widths))
    before = dict(model.named_modules())
    after = dict(pruned.named_modules())
    for g in analysis.groups:
        bn = g.root.rsplit(".", 1)[0] + ".1"  # VGG's blocks: conv, BN, ReLU
        kept = after[bn].weight.detach().abs().sort().values
        top = before[bn].weight.detach().abs().sort().values[-len(kept) :]
        assert len(kept) == widths[g.root] and torch.equal(kept, top)


class _InjectedRuntime:
    """Stands in for a runtime: each candidate's latency is `factor` x the synthetic table's prediction for its
    widths (the unpruned model: its reference), with no exporting."""

    def __init__(self, table: LatencyTable, factor: float) -> None:
        self.table, self.factor = table, factor
        self.widths: dict[str, list[int] | None] = {}

    def install(self, monkeypatch) -> None:
        runtime = self

        def artifact(measurer, candidate, name):
            runtime.widths[name] = candidate.widths
            return Path(name)

        def measure(measurer, paths, copies=1):
            out = []
            for p in paths:
                w = runtime.widths[str(p)]
                ms = runtime.factor * (runtime.table.unpruned_ms if w is None else runtime.table.predict(w))
                out.append({"p50": ms, "mean": ms, "std": 0.0})
            return out

        monkeypatch.setattr(lp.Measurer, "artifact", artifact)
        monkeypatch.setattr(lp.Measurer, "measure", measure)


def test_netadapt_rounds_tighten_until_the_measurement_meets_the_budget(monkeypatch):
    model, spec = _model("vgg16", "none", width=0.25)
    analysis = analyze(model, spec, PruneConfig(criterion="bn-scale"))
    table = _synthetic_table(analysis)
    # The runtime is 10 % slower on pruned models than the table predicts (its unpruned latency as predicted).
    runtime = _InjectedRuntime(table, factor=1.0)
    runtime.install(monkeypatch)
    original = table.predict
    monkeypatch.setattr(runtime.table, "predict", original)

    def slower(measurer, paths, copies=1):
        out = []
        for p in paths:
            w = runtime.widths[str(p)]
            ms = table.unpruned_ms if w is None else 1.1 * original(w)
            out.append({"p50": ms, "mean": ms, "std": 0.0})
        return out

    monkeypatch.setattr(lp.Measurer, "measure", slower)
    opts = lp.LatencyTargetOptions(threads=1)
    budget = lp.LatencyBudget(ratio=0.6)
    pruned, pruned_spec, report = lp.prune_to_latency(
        model, spec, PruneConfig(criterion="bn-scale"), budget, table, opts, np.zeros((2, 3, 32, 32), np.float32)
    )
    lat = report["latency"]
    rounds = lat["rounds"]
    assert not rounds[0]["met"], "round 1 trusts the table and misses by the runtime's 10 %"
    assert lat["met"] and lat["latency_ratio"] <= 0.6 and lat["measured_over_budget"] >= lp.LOW
    assert len(rounds) <= budget.rounds and rounds[lat["kept_round"] - 1]["met"]
    assert lat["predicted_over_measured"] == pytest.approx(1 / 1.1, rel=1e-6)
    # The kept model has the widths the report names.
    assert {r: report["after"]["widths"][r] for r in lat["widths"]} == lat["widths"]


def test_budget_under_the_floor_is_one_line_before_anything_is_measured(monkeypatch):
    model, spec = _model("vgg16", "none", width=0.25)
    table = _synthetic_table(analyze(model, spec, PruneConfig(criterion="bn-scale")))
    monkeypatch.setattr(lp.Measurer, "measure", lambda *a, **k: pytest.fail("nothing may be measured"))
    floor = table.floor_ms / table.unpruned_ms
    for budget, text in ((lp.LatencyBudget(ratio=floor * 0.9), "floor"), (lp.LatencyBudget(budget_ms=1e-3), "floor")):
        with pytest.raises(PacbEdgeError, match=text) as err:
            lp.prune_to_latency(
                model, spec, PruneConfig(), budget, table, lp.LatencyTargetOptions(), np.zeros((1, 3, 32, 32))
            )
        assert (
            "\n" not in str(err.value) and f"{table.floor_ms:.3f}" in str(err.value) or f"{floor:.3f}" in str(err.value)
        )


def test_table_round_trips_and_is_reused_only_when_every_key_matches(tmp_path, monkeypatch):
    model, spec = _model("vgg16", "none", width=0.25)
    profile = lp.ProfileConfig()
    opts = lp.LatencyTargetOptions(threads=1)
    key = lp.expected_key(model, spec, profile, opts)
    analysis = analyze(*lp.reference_structure(model, spec, "bn-scale"), lp._prune_config(profile, opts))
    table = _synthetic_table(analysis)
    table.key = key
    path = table.save(tmp_path / "table.json")
    again = LatencyTable.load(path)
    assert again.to_dict() == table.to_dict()
    assert again.predict(analysis.full_widths()) == table.predict(analysis.full_widths())

    profiled = []
    monkeypatch.setattr(lp, "profile_latency", lambda *a, **k: profiled.append(1) or table)
    found, fresh = lp.table_for(model, spec, None, profile, opts, path, explicit=True)
    assert not fresh and not profiled and found.key == key
    # Another thread count or input size: a table the user named is refused, the run's own is profiled again.
    for other_opts, other_spec, word in (
        (lp.LatencyTargetOptions(threads=2), spec, "threads"),
        (opts, ModelSpec(**{**spec.to_dict(), "input_size": 40}), "input_size"),
    ):
        other_model = create_model(other_spec.arch, **other_spec.model_kwargs()).eval()
        with pytest.raises(PacbEdgeError, match=word):
            lp.table_for(other_model, other_spec, None, profile, other_opts, path, explicit=True)
        _, fresh = lp.table_for(other_model, other_spec, None, profile, other_opts, path, explicit=False)
        assert fresh
    assert len(profiled) == 2
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(PacbEdgeError, match="not a JSON object"):
        LatencyTable.load(tmp_path / "bad.json")


def test_cli_refuses_an_impossible_budget_in_one_line_and_writes_nothing(tmp_path):
    """`train --latency-ratio` under the floor of the named table: exit 1, one line with the floor, no run folder."""
    from pacb_edge.data.datasets import load_dataset
    from pacb_edge.studies.pipeline import RunOptions, _initial_spec
    from pacb_edge.training.recipes import recipe_for

    bundle = load_dataset("digits", input_size=32, grayscale_to_rgb=True, seed=0)
    stem = recipe_for(32).stem_for("vgg16")  # what `train` resolves at 32 px
    opts = RunOptions(model="vgg16", attention=None, width_mult=0.25, grayscale_to_rgb=True, input_stem=stem)
    spec = _initial_spec(opts, bundle, bundle.split_record())
    model = create_model(spec.arch, **spec.model_kwargs()).eval()
    profile, target = lp.ProfileConfig(), lp.LatencyTargetOptions(threads=1)
    analysis = analyze(*lp.reference_structure(model, spec, "bn-scale"), lp._prune_config(profile, target))
    table = _synthetic_table(analysis)
    table.key = lp.expected_key(model, spec, profile, target)
    table.save(tmp_path / "table.json")
    out = tmp_path / "run"
    args = ["train", "--model", "vgg16", "--width-mult", "0.25", "--grayscale-to-rgb", "--prune", "bn-scale"]
    args += ["--threads", "1", "--latency-table", str(tmp_path / "table.json"), "--out", str(out), "--no-progress"]
    result = runner.invoke(app, [*args, "--latency-ratio", "0.05"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "under the floor" in errors[0] and "Traceback" not in result.output
    assert f"{table.floor_ms / table.unpruned_ms:.3f} x the unpruned latency" in errors[0]
    assert not out.exists()
    # Options that contradict a budget are refused before anything too.
    result = runner.invoke(app, [*args, "--latency-ratio", "0.5", "--prune-ratio", "0.3"])
    assert result.exit_code == 1 and "latency budget chooses the widths" in result.output and not out.exists()
    result = runner.invoke(app, [*args, "--latency-ratio", "1.5"])
    assert result.exit_code == 1 and "--latency-ratio must be in (0, 1)" in result.output and not out.exists()


def test_profile_command_writes_the_table_its_csv_and_plot(tiny_run, tmp_path):
    out = tmp_path / "table.json"
    args = ["profile", str(tiny_run), "--target", "onnxruntime", "--threads", "1", "--models", "6"]
    result = runner.invoke(app, [*args, "--held-out", "2", "--runs", "12", "--warmup", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = LatencyTable.load(out)
    assert table.key.runtime == "onnxruntime" and table.key.threads == 1 and table.key.input_size == 32
    assert table.floor_ms > 0 and table.reference_ms > 0 and table.validation["held_out_models"] == 2
    labels = [s["label"] for s in table.samples]
    assert labels.count("floor") == 1 and sum(lbl.startswith("random") for lbl in labels) == 6
    assert out.with_suffix(".csv").read_text().startswith("label,measured_ms,predicted_ms,error,")
    assert out.with_suffix(".png").stat().st_size > 0
    assert "prediction error on 2 held-out models" in result.output
    # The run's config says which checkpoint: the unpruned base/ was profiled.
    assert json.loads(out.read_text())["key"]["structure"] == table.key.structure


def test_profile_refuses_bad_options_in_one_line(tiny_run, tmp_path):
    for extra, text in (
        (["--target", "gpu"], "unknown --latency-target"),
        (["--target", "jetson"], "needs --host"),
        (["--target", "android"], "needs --benchmark-binary"),
        (["--precision", "int8"], "--precision is for jetson and android"),
        (["--models", "2"], "--models must be between"),
    ):
        result = runner.invoke(app, ["profile", str(tiny_run), "--out", str(tmp_path / "t.json"), *extra])
        assert result.exit_code == 1 and text in result.output, (extra, result.output)
        assert not (tmp_path / "t.json").exists()


@pytest.mark.slow
def test_latency_ratio_is_met_when_measured(tmp_path):
    """A small real model pruned with --latency-ratio 0.7 on onnxruntime (1 thread), then measured again
    independently. On this 2-core VM four interleaved measurements of one pruned/unpruned pair gave ratios from 0.687
    to 0.768 (the absolute latency of the same file from 1.9 to 3.0 ms), so the bounds below are that spread, not a
    speed goal: the latency model within 25 % of the measurement (benchmarks/latency_budget.py measured 0.87-1.21
    across runtimes), and the independent mean of two measurements within 0.7 x 1.15."""
    from pacb_edge.export.onnx import deployable, export_onnx
    from pacb_edge.training.checkpoint import load_checkpoint

    out = tmp_path / "run"
    args = ["train", "--model", "mobilenetv3_large", "--attention", "ca", "--width-mult", "0.5"]
    args += ["--grayscale-to-rgb", "--epochs", "1", "--limit", "200", "--finetune-epochs", "0", "--threads", "1"]
    result = runner.invoke(app, [*args, "--prune", "bn-scale", "--latency-ratio", "0.7", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    lat = metrics["stages"]["prune"]["latency"]
    assert lat["met"] and lat["latency_ratio"] <= 0.7
    assert 0.75 <= lat["predicted_over_measured"] <= 1.25
    kept = lat["rounds"][lat["kept_round"] - 1]
    assert len(kept["measured_ratios"]) == 2, "a met round is confirmed by a second measurement"
    assert kept["latency_ratio"] == pytest.approx(float(np.mean(kept["measured_ratios"])))
    paths = []
    for stage in ("base", "pruned"):
        model, spec = load_checkpoint(out / stage)
        paths.append(export_onnx(deployable(model), spec, tmp_path / f"{stage}.onnx"))
    measurer = lp.Measurer(lp.LatencyTargetOptions(threads=1, runs=600), np.zeros((1, 3, 32, 32)), tmp_path)
    ratios = [pruned["p50"] / base["p50"] for base, pruned in (measurer.measure(paths, copies=3) for _ in range(2))]
    assert np.mean(ratios) <= 0.7 * 1.15, ratios


def test_table_key_names_the_stem_the_model_was_built_with():
    """A spec that leaves the stem to the architecture (None) is the same model as one that names its default, so
    both find the same latency table; another stem is another model."""
    import dataclasses

    model, spec = _model("mobilenetv3_large", "ca", width=0.5)
    opts, profile = lp.LatencyTargetOptions(threads=1), lp.ProfileConfig()
    keys = {}
    for stem in (None, "imagenet", "cifar"):
        stem_spec = dataclasses.replace(spec, input_stem=stem)
        stem_model = create_model(stem_spec.arch, **stem_spec.model_kwargs()).eval()
        keys[stem] = lp.expected_key(stem_model, stem_spec, profile, opts).structure
    assert keys[None] == keys["imagenet"] != keys["cifar"]
