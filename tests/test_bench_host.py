"""`pacb-edge bench --device cpu`: one record per artifact, latency next to accuracy, JSON/CSV/PNG; failures stay
isolated."""

import csv
import json

import pytest
from typer.testing import CliRunner

from pacb_edge.cli.main import app
from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.device_bench.bench import BenchOptions, run_bench
from pacb_edge.device_bench.record import latency_stats
from pacb_edge.export.api import export_checkpoint
from pacb_edge.export.runners import time_interleaved

runner = CliRunner()


@pytest.fixture(scope="module")
def onnx_pair(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_export")
    base = export_checkpoint(tiny_run / "base", ["onnx"], out_dir=out / "base")["artifacts"][0]["path"]
    pruned = export_checkpoint(tiny_run / "pruned", ["onnx"], out_dir=out / "pruned")["artifacts"][0]["path"]
    return base, pruned


def test_latency_stats_nearest_rank():
    s = latency_stats([float(x) for x in range(1, 101)])
    assert (s["min"], s["p50"], s["p90"], s["p99"], s["max"]) == (1, 50, 90, 99, 100)
    assert s["mean"] == pytest.approx(50.5) and s["count"] == 100


def test_time_interleaved_alternates_calls_in_rotating_blocks():
    order = []
    calls = {k: (lambda k=k: order.append(k)) for k in "abc"}
    samples = time_interleaved(calls, warmup=1, runs=3, block=1)
    # Warm-up once each, then one run each per round, each round starting one call further on.
    assert order == ["a", "b", "c"] + ["a", "b", "c"] + ["b", "c", "a"] + ["c", "a", "b"]
    assert len(samples["a"]) == len(samples["b"]) == 3
    order.clear()
    samples = time_interleaved(calls, warmup=0, runs=4, block=3)
    # Blocks of 3 runs; the first of each block is untimed, so 2 rounds give 4 samples each.
    assert order == ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["b"] * 3 + ["c"] * 3 + ["a"] * 3
    assert {k: len(v) for k, v in samples.items()} == {"a": 4, "b": 4, "c": 4}
    # 5 samples need 3 rounds (6 timed runs each); exactly the 5 asked for are kept.
    samples = time_interleaved(calls, warmup=0, runs=5, block=3)
    assert {k: len(v) for k, v in samples.items()} == {"a": 5, "b": 5, "c": 5}


def test_bench_cpu_records_latency_and_accuracy(tiny_run, onnx_pair, tmp_path):
    base, pruned = onnx_pair
    r = runner.invoke(
        app,
        [
            "bench",
            base,
            pruned,
            str(tiny_run / "pruned"),
            "--baseline",
            base,
            "--runs",
            "20",
            "--warmup",
            "3",
            "--threads",
            "1",
            "--min-accuracy",
            "0.3",
            "--out",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert [d["artifact"] for d in data] == [base, pruned, str(tiny_run / "pruned")]
    for d in data:
        assert d["status"] == "ok"
        assert d["latency_ms"]["count"] == 20 and d["latency_ms"]["p50"] > 0
        assert d["latency_ms"]["min"] <= d["latency_ms"]["p50"] <= d["latency_ms"]["p90"] <= d["latency_ms"]["p99"]
        assert d["top1"] > 0.3 and d["n_eval"] > 100 and d["accuracy_source"] == "device"
        assert d["params"] and d["flops"] and d["size_bytes"]
        assert d["spec"]["dataset"] == "digits"
    assert data[0]["speedup_vs_baseline"] == pytest.approx(1.0)
    assert data[1]["flops"] < data[0]["flops"]
    # The ONNX file and its source checkpoint classify the same images the same way.
    assert data[1]["top1"] == pytest.approx(data[2]["top1"], abs=0.005)
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert len(rows) == 3 and float(rows[1]["per_image_ms"]) > 0
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    # Piped (not a terminal): a Markdown table with whole names, nothing cut to "mod…".
    assert "| ✅ | model.onnx | onnx | fp32 |" in r.output and "…" not in r.output


def test_bench_failures_are_isolated(onnx_pair, tmp_path):
    base, _ = onnx_pair
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx file")
    (tmp_path / "corrupt.onnx.manifest.json").write_text(json.dumps(json.loads(open(base + ".manifest.json").read())))
    wrong = tmp_path / "model.pt"
    wrong.write_bytes(b"x")
    r = runner.invoke(
        app,
        [
            "bench",
            base,
            str(tmp_path / "missing.onnx"),
            str(corrupt),
            str(wrong),
            "--runs",
            "3",
            "--warmup",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    data = {d["artifact"]: d for d in json.loads((tmp_path / "out" / "bench.json").read_text())["results"]}
    assert data[base]["status"] == "ok"
    assert "does not exist" in data[str(tmp_path / "missing.onnx")]["error"]
    assert data[str(corrupt)]["status"] == "failed" and "onnxruntime cannot load" in data[str(corrupt)]["error"]
    assert data[str(wrong)]["status"] == "failed"


def test_dataset_mismatch_and_low_accuracy(onnx_pair, tmp_path):
    base, _ = onnx_pair
    res = run_bench([base], BenchOptions(dataset="cifar10", runs=2, warmup=0, out_dir=tmp_path))
    assert res[0].status == "failed" and "dataset mismatch" in res[0].error
    res = run_bench([base], BenchOptions(runs=2, warmup=0, min_accuracy=1.01, out_dir=tmp_path))
    assert res[0].status == "low_accuracy"


def test_one_thread_count_pinned_for_every_runner(tiny_run, onnx_pair, tmp_path):
    """Without --threads every host runner gets all cores, the same number, and the record says which."""
    import os

    res = run_bench([onnx_pair[0], str(tiny_run / "pruned")], BenchOptions(runs=2, warmup=0, out_dir=tmp_path))
    assert [r.threads for r in res] == [os.cpu_count()] * 2
    assert all(r.device_facts["threads"] == os.cpu_count() for r in res)
    assert all(r.extra["input"] == "raw pixels 0-255" for r in res)
    res = run_bench([onnx_pair[0]], BenchOptions(runs=2, warmup=0, threads=1, out_dir=tmp_path))
    assert res[0].threads == 1
    with pytest.raises(PacbEdgeError, match="--threads must be at least 1"):
        run_bench([onnx_pair[0]], BenchOptions(runs=2, warmup=0, threads=0, out_dir=tmp_path))


def test_bench_unknown_device_is_one_line(onnx_pair):
    r = runner.invoke(app, ["bench", onnx_pair[0], "--device", "tpu"])
    assert r.exit_code == 1 and "unknown device" in r.output
    r = runner.invoke(app, ["bench", onnx_pair[0], "--device", "jetson"])
    assert r.exit_code == 1 and "--host" in r.output
