"""Same command, same seed, same machine: identical numbers (seeded loaders, pinned threads, deterministic ops)."""

import hashlib

from pacb_edge.pruning.pruner import PruneConfig
from pacb_edge.studies.pipeline import RunOptions, run_pipeline
from pacb_edge.training.trainer import TrainConfig


def _run(out, seed: int):
    opts = RunOptions(
        model="mobilenetv3_small",
        attention="ca",
        dataset="digits",
        width_mult=0.25,
        train_limit=300,
        threads=2,
        out=out,
        progress=False,
        command="pytest determinism",
        train=TrainConfig(epochs=2, batch_size=32, lr=0.05, warmup_epochs=1, sparsity=1e-4, seed=seed),
        finetune=TrainConfig(epochs=1, batch_size=32, lr=0.01, warmup_epochs=0, seed=seed),
        prune=PruneConfig(criterion="bn-scale", prune_ratio=0.3, seed=seed),
    )
    return run_pipeline(opts)


def _numbers(metrics):
    return {
        stage: {k: m.get(k) for k in ("test_top1", "val_top1", "test_loss", "params", "macs")}
        for stage, m in metrics["stages"].items()
        if stage != "eval"
    }


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_seeded_runs_are_identical(tmp_path):
    a = _run(tmp_path / "a", seed=5)
    b = _run(tmp_path / "b", seed=5)
    assert _numbers(a) == _numbers(b)
    assert a["seed"] == 5 and a["threads"] == 2
    for stage in ("base", "pruned"):
        assert _sha(tmp_path / "a" / stage / "model.safetensors") == _sha(tmp_path / "b" / stage / "model.safetensors")
    _run(tmp_path / "c", seed=6)  # and the seed matters: another seed, other weights
    assert _sha(tmp_path / "c" / "base" / "model.safetensors") != _sha(tmp_path / "a" / "base" / "model.safetensors")
