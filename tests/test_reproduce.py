"""`pacb-edge reproduce`: both papers' quick grids run (library and CLI), fill every row of the papers' tables, write
JSON + Markdown, resume without recomputing, average seeds, and carry on-device columns; its cells and the demo's
run through one engine under one key; the budgets name what they train; bad input is one line."""

import dataclasses
import json
import shutil
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pacb_edge.cli import main as cli
from pacb_edge.cli.main import app
from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.runtimes import resolve_round_to
from pacb_edge.studies.cells import CellRunner, cell_key
from pacb_edge.studies.demo import DemoConfig, demo_cells
from pacb_edge.studies.grids import PACB_CPU, proxy_multiple
from pacb_edge.studies.reproduce import (
    CPSCA_METHODS,
    CPSCA_PAPER,
    PACB_LATENCY_MS,
    PACB_PAPER,
    ReproduceConfig,
    Schedule,
    default_cpsca_ratios,
    run_reproduce,
)
from pacb_edge.studies.tables import ordering_notes

runner = CliRunner()
MISSING = ("", "failed", "n/a", "-", "—")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models train faster on one thread, and do not fight a busy 2-core CI box for the second one."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _quick(paper, out, **kw):
    return ReproduceConfig(paper=paper, quick=True, out=out, threads=1, progress=False, **kw)


@pytest.fixture(scope="module")
def pacb(tmp_path_factory):
    """The PACB quick grid, through the library."""
    out = tmp_path_factory.mktemp("reproduce_pacb")
    return out, run_reproduce(_quick("pacb", out))


@pytest.fixture(scope="module")
def cpsca(tmp_path_factory):
    """The CPSCA quick grid, through the CLI."""
    out = tmp_path_factory.mktemp("reproduce_cpsca")
    r = runner.invoke(app, ["reproduce", "cpsca", "--quick", "--out", str(out), "--threads", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "reproduce.json").read_text()), r.output


def _assert_filled(table):
    for row in table["rows"]:
        assert len(row) == len(table["header"])
        for cell, measured, col in zip(row, table["measured"], table["header"], strict=True):
            if measured:
                assert cell not in MISSING, f"{table['key']}: {col} is empty in {row}"


@pytest.mark.slow
def test_pacb_quick_fills_tables_2_to_4(pacb):
    out, result = pacb
    tables = {t["key"]: t for t in result["tables"]}
    assert list(tables) == ["table2", "table3", "table4"]
    assert [r[1] for r in tables["table2"]["rows"]] == [
        "MobileNetV3 (Base)",
        "MobileNetV3_CA",
        "MobileNetV3_CA_Pruned",
    ]
    assert len(tables["table3"]["rows"]) == 3 and len(tables["table4"]["rows"]) == 6
    for t in tables.values():
        _assert_filled(t)
    # The paper's numbers sit next to ours (digits is not in the paper: its CIFAR-10 column is shown).
    assert tables["table2"]["rows"][0][3] == "95.20 ± 0.12" and tables["table3"]["rows"][2][10] == "19.1"
    assert "MACs" in " ".join(tables["table2"]["header"]) and "TFLite INT8 ms ours" in tables["table2"]["header"]
    assert all("width x0.25" in t["caption"] and "4 epochs" in t["caption"] for t in tables.values())
    rows = {r["row"]: r for r in result["records"]}
    for arch in ("mobilenetv3_large", "repvgg_a0"):
        ca, pruned = rows[f"{arch}/CA"], rows[f"{arch}/CA_Pruned"]
        assert pruned["params"] < ca["params"] and pruned["macs"] < ca["macs"]
        for where in ("host", "host_int8"):  # ONNX FP32 and TFLite INT8 on the host CPU
            assert pruned[where]["status"] == "ok" and pruned[where]["per_image_ms"] > 0
        assert pruned["macs_ratio_vs_ca"] < 1 and rows[f"{arch}/CA"]["host_int8_ratio_vs_ca"] == 1.0
        assert pruned["channel_multiple"] == resolve_round_to("auto", "onnxruntime")[0]
    assert any("rounded up to multiples of" in note for note in tables["table4"]["notes"])
    assert {r["seed"] for r in result["records"]} == {0}
    for metrics in out.glob("seed0/*/metrics.json"):
        assert json.loads(metrics.read_text())["seed"] == 0
    assert json.loads((out / "reproduce.json").read_text())["tables"] == result["tables"]
    md = (out / "reproduce.md").read_text()
    assert "## PACB Table 2" in md and "| digits | MobileNetV3 (Base) |" in md and "95.20 ± 0.12" in md


@pytest.mark.slow
def test_cpsca_quick_cli_fills_tables_4_and_5(cpsca):
    out, result, output = cpsca
    tables = {t["key"]: t for t in result["tables"]}
    assert list(tables) == ["table4", "table5"]
    for t in tables.values():
        _assert_filled(t)
        assert [r[0] for r in t["rows"]] == ["baseline", "L1-norm", "Slimming", "CPSE", "CPSCA"]
    vgg = tables["table4"]["rows"]
    assert vgg[0][3] == "16.87" and vgg[0][13] == "93.04"  # the paper's baseline params and accuracy
    rows = {r["row"]: r for r in result["records"]}
    # Our 0.5 channel ratio is compared with the paper's level nearest in params pruned (mean over the methods).
    ours = 100 * statistics.fmean(rows[f"vgg16/{m}/0.50"]["params_pruned"] for m in CPSCA_METHODS)
    levels = [lv["params_pruned_pct"] for lv in CPSCA_PAPER["vgg16"]["cifar10"]["levels"]]
    assert vgg[1][5] == f"{min(levels, key=lambda p: abs(p - ours)):.2f}"
    for arch in ("vgg16", "resnet56"):
        for method in CPSCA_METHODS:
            r = rows[f"{arch}/{method}/0.50"]
            assert r["params"] < rows[f"{arch}/baseline"]["params"] and r["params_pruned"] > 0.2
            # a x0.25 proxy rounds to the runtime's multiple scaled by its width (16 -> 4, 8 -> 2)
            assert (
                r["channel_multiple"] == proxy_multiple(0.25) == max(1, resolve_round_to("auto", "onnxruntime")[0] // 4)
            )
    assert any("scaled with the grid's width" in note for note in tables["table5"]["notes"])
    assert rows["vgg16/bn-scale/0.50"]["sparsity"] == 1e-4 and rows["vgg16/l1-norm/0.50"]["sparsity"] == 0.0
    assert "CPSCA Table 4" in output and "reused" in output
    assert (out / "reproduce.md").read_text().count("## CPSCA Table") == 2


@pytest.mark.slow
def test_rerun_recomputes_nothing(pacb, cpsca, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    for target in (
        "pacb_edge.training.trainer.fit",
        "pacb_edge.studies.pipeline.run_pipeline",
        "pacb_edge.export.api.export_checkpoint",
        "pacb_edge.device_bench.bench.run_bench",
    ):
        monkeypatch.setattr(target, boom)
    for (out, first, *_), paper, cells in ((pacb, "pacb", 4), (cpsca, "cpsca", 16)):
        mtimes = {p: p.stat().st_mtime_ns for p in out.glob("seed0/*/metrics.json")}
        again = run_reproduce(_quick(paper, out))
        assert again["timings"]["cells_computed"] == 0 and again["timings"]["cells_cached"] == cells
        assert again["tables"] == first["tables"]
        assert {p: p.stat().st_mtime_ns for p in out.glob("seed0/*/metrics.json")} == mtimes


@pytest.mark.slow
def test_cli_prints_the_papers_layout(pacb, monkeypatch):
    out, _ = pacb
    monkeypatch.setattr(cli.console, "width", 240)
    r = runner.invoke(app, ["reproduce", "pacb", "--quick", "--out", str(out), "--threads", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    for text in ("PACB Table 2", "PACB Table 3", "PACB Table 4", "MobileNetV3_CA_Pruned", "95.20 ± 0.12", "= MACs"):
        assert text in r.output
    assert "0 cell(s) computed, 4 reused" in r.output


@pytest.mark.slow
def test_seeds_give_mean_and_std(pacb, tmp_path):
    out = tmp_path / "seeds"
    shutil.copytree(pacb[0], out)  # seed 0 is reused, seed 1 is trained
    result = run_reproduce(_quick("pacb", out, seeds=2, archs=("mobilenetv3_large",)))
    assert result["timings"]["cells_computed"] == 2 and result["timings"]["cells_cached"] == 2
    assert [t["key"] for t in result["tables"]] == ["table2", "table4"]
    table = result["tables"][0]
    _assert_filled(table)
    for i, variant in enumerate(("Base", "CA", "CA_Pruned")):
        accs = [100 * r["test_top1"] for r in result["records"] if r["row"] == f"mobilenetv3_large/{variant}"]
        assert len(accs) == 2
        assert table["rows"][i][2] == f"{statistics.fmean(accs):.2f} ± {statistics.stdev(accs):.2f}"
    assert {r["seed"] for r in result["records"]} == {0, 1}
    assert json.loads((out / "seed1" / "mobilenetv3_large_ca" / "metrics.json").read_text())["seed"] == 1


@pytest.mark.slow
def test_device_columns_come_from_the_device_runner(pacb, tmp_path, monkeypatch):
    from pacb_edge.device_bench.record import BenchResult, latency_stats

    out = tmp_path / "jetson"
    shutil.copytree(pacb[0], out)
    calls = []

    def fake_export(checkpoint, targets, out_dir=None, **kw):
        assert targets == ["trt"]
        (out_dir / "jetson_bundle").mkdir(parents=True)
        return {"artifacts": [{"path": str(out_dir / "jetson_bundle"), "format": "trt-bundle"}]}

    def fake_bench(paths, opts):
        calls.append((opts.device, opts.jetson["host"], len(paths)))
        return [
            BenchResult(p, "trt", opts.device, "stub", latency_ms=latency_stats([2.0, 2.5, 3.0]), top1=0.5)
            for p in paths
        ]

    monkeypatch.setattr("pacb_edge.export.api.export_checkpoint", fake_export)
    monkeypatch.setattr("pacb_edge.device_bench.bench.run_bench", fake_bench)
    cfg = _quick("pacb", out, device="jetson", jetson={"host": "nano@10.0.0.2"})
    result = run_reproduce(cfg)
    assert calls == [("jetson", "nano@10.0.0.2", 6)]  # the host CPU numbers were cached
    tables = {t["key"]: t for t in result["tables"]}
    assert tables["table2"]["header"][-2:] == ["Jetson (TensorRT) ms ours", "Jetson (TensorRT) acc (%) ours"]
    assert all(row[-2:] == ["2.500", "50.00"] for row in tables["table2"]["rows"])
    assert tables["table4"]["header"][-1] == "Jetson (TensorRT) ms ours"
    _assert_filled(tables["table2"])
    run_reproduce(cfg)  # cached on the second run
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reproduce", "nope"], "unknown paper 'nope'"),
        (["reproduce", "pacb", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["reproduce", "cpsca", "--ratios", "a,b"], "--ratios expects comma-separated numbers"),
        (["reproduce", "cpsca", "--ratios", "1.5"], "pruning ratios must be in (0, 1)"),
        (["reproduce", "pacb", "--device", "jetson"], "--device jetson needs --host"),
        (["reproduce", "pacb", "--budget", "gpu"], "unknown budget 'gpu'; choose one of paper, cpu"),
        (["reproduce", "pacb", "--archs", "vgg16"], "pacb has no architecture 'vgg16'"),
        (["reproduce", "pacb", "--latency-ratio", "1.2"], "--latency-ratio must be in (0, 1), got 1.2"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path):
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert r.exit_code == 1, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_missing_dataset_files_give_the_data_layers_error(tmp_path):
    r = runner.invoke(
        app,
        [
            "reproduce",
            "pacb",
            "--quick",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ],
    )
    assert r.exit_code == 1, r.output
    assert "cifar10" in r.output and "not found" in r.output and "Traceback" not in r.output


def test_transcribed_paper_numbers_are_consistent():
    """The paper's own redundancy checks the transcription: |Acc - baseline| is its change column, and a level's
    pruned % agrees with its params and GFLOPs."""
    for arch, paper in CPSCA_PAPER.items():
        for ds in ("cifar10", "cifar100"):
            base, levels = paper[ds]["baseline"], paper[ds]["levels"]
            for lv in levels:
                for m in CPSCA_METHODS:
                    assert round(abs(lv["acc"][m] - base["acc"]), 2) == lv["delta_abs"][m], (arch, ds, m)
                assert abs(100 * (1 - lv["params_m"] / base["params_m"]) - lv["params_pruned_pct"]) < 1.5
                assert abs(100 * (1 - lv["gflops"] / base["gflops"]) - lv["gflops_pruned_pct"]) < 0.5
            assert [lv["params_pruned_pct"] for lv in levels] == sorted(lv["params_pruned_pct"] for lv in levels)
    assert default_cpsca_ratios("vgg16") == (0.18, 0.29, 0.55, 0.79)
    assert default_cpsca_ratios("resnet56") == (0.28, 0.56, 0.78)
    for arch, by_ds in PACB_PAPER.items():
        for ds, rows in by_ds.items():
            assert rows["CA_Pruned"]["flops_m"] < rows["CA"]["flops_m"]
            assert rows["CA_Pruned"]["params_m"] < rows["CA"]["params_m"]
            assert PACB_LATENCY_MS[arch]["CA_Pruned"][ds] < PACB_LATENCY_MS[arch]["CA"][ds]


def _demo_schedule() -> Schedule:
    """A schedule with the demo's settings (DemoConfig's defaults; the cpu budget has its scheduler; the demo trains
    at CellConfig's batch 64, with each architecture's own stem, augmentation and one weight decay)."""
    demo = DemoConfig()
    return dataclasses.replace(
        PACB_CPU,
        name="demo",
        batch_size=64,
        epochs=demo.epochs,
        finetune_epochs=demo.finetune_epochs,
        lr=demo.lr,
        finetune_lr=demo.lr / 5,
        width_mult=1.0,
        train_limit=None,
        thin_weight_decay=None,
        augment=True,
        recipe=None,
    )


def test_demo_and_reproduce_cells_share_one_engine(tmp_path, monkeypatch):
    """The same configuration is one cell, whoever asks for it: one key, and a cell the demo finished is read back
    by reproduce; what changes the result changes the key, where the data lives does not."""
    demo = {(arch, label): cell for arch, label, cell in demo_cells(DemoConfig())}
    sched, cfg = _demo_schedule(), ReproduceConfig(paper="pacb", data_dir="/elsewhere")
    ca = sched.cell(cfg, "mobilenetv3_large", "ca", 0, sparsity=1e-4, criterion="bn-scale", prune_ratio=0.3)
    assert cell_key(ca) == cell_key(demo[("mobilenetv3_large", "CA")])
    assert cell_key(sched.cell(cfg, "repvgg_a0", None, 0)) == cell_key(demo[("repvgg_a0", "Base")])
    for change in ({"seed": 1}, {"train_limit": 4000}, {"scheduler": "step"}, {"finetune_lr": 0.1}):
        assert cell_key(dataclasses.replace(ca, **change)) != cell_key(ca), change
    computed = []

    def fake_compute(cell, cell_dir, source, run, command):
        computed.append(cell)
        cell_dir.mkdir(parents=True)
        return {"stages": {"train": {"test_top1": 0.5}, "finetune": {"test_top1": 0.4}}}

    monkeypatch.setattr("pacb_edge.studies.cells._compute", fake_compute)
    CellRunner(tmp_path, "pacb-edge demo", progress=False).run(demo[("mobilenetv3_large", "CA")], "cell")
    again = CellRunner(tmp_path, "pacb-edge reproduce pacb", progress=False)
    assert again.run(ca, "cell").metrics["stages"]["finetune"]["test_top1"] == 0.4
    assert again.cached == 1 and again.computed == 0 and len(computed) == 1
    # A pruning cell reuses a trained cell's model; its key holds its source's.
    source = sched.cell(cfg, "vgg16", "sca", 0, sparsity=1e-4)
    pruned = source.pruned("l1-norm", 0.5)
    assert json.loads(cell_key(pruned))["source"]["attention"] == "sca"
    longer = dataclasses.replace(source, epochs=7)
    assert cell_key(longer.pruned("l1-norm", 0.5)) != cell_key(pruned)


def test_latency_budget_cells_sit_beside_the_ratio_cells():
    """`--latency-ratio` adds a CA_Latency cell per architecture: the CA cell's training, pruned to a measured
    latency; its key holds the ratio and target, not the unused prune ratio, and differs from the ratio cell's."""
    plain = demo_cells(DemoConfig())
    cells = {(arch, label): cell for arch, label, cell in demo_cells(DemoConfig(latency_ratio=0.5))}
    assert len(cells) == len(plain) + 2
    ca, latency = cells[("repvgg_a0", "CA")], cells[("repvgg_a0", "CA_Latency")]
    assert latency == dataclasses.replace(ca, latency_ratio=0.5) and ca.latency_ratio is None
    assert ca.round_to == "auto"
    key, ca_key = json.loads(cell_key(latency)), json.loads(cell_key(ca))
    assert key["latency_ratio"] == 0.5 and key["latency_target"] == "onnxruntime" and "prune_ratio" not in key
    assert "latency_ratio" not in ca_key and ca_key["prune_ratio"] == 0.3 and ca_key["round_to"] == "auto"
    assert cell_key(dataclasses.replace(latency, latency_ratio=0.6)) != cell_key(latency)
    assert cell_key(dataclasses.replace(latency, prune_ratio=0.9)) == cell_key(latency)
    with pytest.raises(PacbEdgeError, match="--latency-ratio must be in"):
        DemoConfig(latency_ratio=0).validate()


def test_cpu_budget_names_its_subset_width_and_epochs():
    cfg = ReproduceConfig(paper="pacb", dataset="fashion-mnist", budget="cpu")
    sched = cfg.schedule()
    assert sched.limit is None and sched.train_limit is not None  # the test split stays whole
    assert sched.epochs < 160 and sched.width_mult < 1 and sched.seeds == 3
    caption = sched.caption(sched.seeds)
    for text in (
        "budget cpu",
        f"{sched.train_limit:,} training images",
        "the whole test split",
        f"width x{sched.width_mult:g}",
        f"{sched.epochs} epochs + {sched.finetune_epochs} fine-tuning",
        "3 seed(s)",
    ):
        assert text in caption
    cell = sched.cell(cfg, "mobilenetv3_large", "ca", 0)
    assert (cell.train_limit, cell.limit, cell.width_mult) == (sched.train_limit, None, sched.width_mult)
    assert ReproduceConfig(paper="pacb").schedule().epochs == 160  # budget paper: the papers' schedule
    assert ReproduceConfig(paper="pacb", budget="cpu", seeds=1).schedule().seeds == 1
    assert ReproduceConfig(paper="cpsca", budget="cpu").cpsca_ratios("vgg16") == (0.5, 0.8)


def test_ordering_note_counts_standard_deviations():
    def stat(*accs):
        return {"test_top1": {"mean": statistics.fmean(accs), "std": statistics.stdev(accs), "n": len(accs)}}

    stats = {
        "vgg16/sca-attention/0.50": stat(0.92, 0.93, 0.94),
        "vgg16/bn-scale/0.50": stat(0.91, 0.92, 0.93),
        "vgg16/l1-norm/0.50": stat(0.93, 0.94, 0.95),
    }
    (note,) = ordering_notes(stats, "vgg16", [0.5])
    assert "CPSCA >= Slimming >= L1-norm does not hold" in note
    assert "CPSCA - Slimming = +1.00 pp = +1.0 std" in note and "Slimming - L1-norm = -2.00 pp = -2.0 std" in note


@pytest.mark.skipif(
    not FASHION_MNIST.is_file(),
    reason=f"Debian's Fashion-MNIST files are absent ({FASHION_MNIST}; apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_table_carries_the_papers_fashion_mnist_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 320)
    args = ["reproduce", "pacb", "--dataset", "fashion-mnist", "--quick", "--archs", "mobilenetv3_large"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path), "--threads", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    for text in ("PACB Table 2: MobileNetV3 variants on Fashion-MNIST", "94.61 ± 0.09", "95.16 ± 0.11", "91.94"):
        assert text in r.output
    assert "the paper has no" not in r.output
    result = json.loads((tmp_path / "reproduce.json").read_text())
    tables = {t["key"]: t for t in result["tables"]}
    for t in tables.values():
        _assert_filled(t)
    assert [row[7] for row in tables["table2"]["rows"]] == ["10.156", "10.225", "7.502"]  # the paper's MACs (M)
    pruned = tables["table4"]["rows"][2]
    assert pruned[3] == "13.1" and pruned[5] == f"{7.502 / 10.225:.3f}" and pruned[8] == f"{13.1 / 20.0:.3f}"
    assert result["records"][0]["host"]["status"] == "ok"
