"""The one experiment engine of `pacb-edge demo` and `pacb-edge reproduce`: a cell is one run directory, trained (and
pruned + fine-tuned) through `pipeline.run_pipeline`, cached under one key and resumed cell by cell.

Two kinds of cell:
- a training cell trains a model (with Network Slimming's sparsity when `sparsity` > 0) and, when `criterion` is set,
  prunes and fine-tunes it in the same run directory;
- a pruning cell (`source` set) prunes the trained model of another cell and fine-tunes it, so one trained model serves
  several ratios and criteria without being trained again.

The key of a cell is its configuration as sorted JSON plus `CELL_FORMAT`, without the fields that cannot change its
result (where the data lives, settings its kind does not use); torch's thread count is a setting of the machine
(`CellRunner.threads`), not of the cell. A finished cell has that key in its `metrics.json`; it
is read back, never recomputed. Anything else in its directory (another configuration, an interrupted run) is removed
and the cell computed again.

This module sits at the top of the data flow and imports the pipeline inside its functions.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacb_edge.core.fileio import atomic_write_json

CELL_FORMAT = 4  # bump when the meaning of a cell changes, so older cells are recomputed (4: warm-up cap)
ATTENTION_CRITERIA = ("se-attention", "sca-attention")  # the criteria that average attention over training images
_PLACE_FIELDS = ("data_dir", "download")  # where the data comes from: the test-split hash guards it, not the key
# The fields RunOptions takes under the same name: the data and the model.
_DATA_FIELDS = (
    "attention",
    "dataset",
    "data_dir",
    "download",
    "input_size",
    "input_stem",
    "width_mult",
    "grayscale_to_rgb",
    "limit",
    "train_limit",
)
# The fields the training and the fine-tuning `TrainConfig` both take under the same name.
_TRAIN_FIELDS = (
    "batch_size",
    "weight_decay",
    "thin_weight_decay",
    "label_smoothing",
    "augment",
    "scheduler",
    "nesterov",
    "seed",
)
_PRUNE_FIELDS = (
    "criterion",
    "prune_ratio",
    "round_to",
    "latency_ratio",
    "latency_target",
    "latency_threads",
    "score_images",
    "finetune_epochs",
    "finetune_lr",
)


@dataclass(frozen=True)
class CellConfig:
    """Everything that determines one cell's result: data, model, training, pruning and fine-tuning."""

    arch: str
    attention: str | None = None
    dataset: str = "digits"
    input_size: int = 32
    input_stem: str | None = None
    width_mult: float = 1.0
    grayscale_to_rgb: bool = True
    limit: int | None = None  # images per split (None = all)
    train_limit: int | None = None  # training images only; the test split stays whole (None = all)
    seed: int = 0
    # Training (SGD, momentum 0.9).
    epochs: int = 6
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 5e-4
    thin_weight_decay: float | None = None  # depthwise convs and attention modules (None: weight_decay)
    label_smoothing: float = 0.0
    augment: bool = True  # random crop (and flip where the dataset allows it) on the training images
    scheduler: str = "cosine"  # or "step": lr / 10 at 50 % and 75 % of the epochs
    nesterov: bool = True
    warmup_epochs: int = 1
    sparsity: float = 0.0  # Network Slimming's lambda on the BN scales
    # Pruning and fine-tuning (used only when `criterion` is set).
    criterion: str | None = None
    prune_ratio: float = 0.3
    round_to: int | str = "auto"  # the channel multiple: "auto" (the latency target's) or a number
    # Prune to a measured latency instead of a ratio: this share of the unpruned model's latency on `latency_target`
    # with `latency_threads` threads (`prune_ratio` is then unused).
    latency_ratio: float | None = None
    latency_target: str = "onnxruntime"
    latency_threads: int = 1
    score_images: int = 2048  # training images the attention criteria average over (the others use none)
    finetune_epochs: int = 3
    finetune_lr: float = 0.02
    source: CellConfig | None = None  # prune this trained cell's model instead of training one
    # Where the data lives (not part of the key).
    data_dir: str | None = None
    download: bool = False

    def pruned(self, criterion: str, prune_ratio: float, **finetune: Any) -> CellConfig:
        """The pruning cell that prunes this (trained, unpruned) cell's model with `criterion` and fine-tunes it."""
        assert self.criterion is None and self.source is None, "only an unpruned training cell can be a source"
        return dataclasses.replace(self, criterion=criterion, prune_ratio=prune_ratio, source=self, **finetune)

    def pruned_to_latency(self, criterion: str, latency_ratio: float, **finetune: Any) -> CellConfig:
        """The pruning cell that prunes this cell's model to `latency_ratio` of its measured latency."""
        assert self.criterion is None and self.source is None, "only an unpruned training cell can be a source"
        return dataclasses.replace(self, criterion=criterion, latency_ratio=latency_ratio, source=self, **finetune)

    def describe_prune(self) -> str:
        """How this cell prunes, in a few words."""
        if self.latency_ratio is not None:
            return f"{self.criterion} to {self.latency_ratio:g}x latency on {self.latency_target}"
        return f"{self.criterion} {self.prune_ratio:g}"

    def key_fields(self) -> dict[str, Any]:
        """The fields that determine the result, the source cell's nested."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _PLACE_FIELDS}
        if self.criterion is None:
            for name in _PRUNE_FIELDS:
                d.pop(name)
        elif self.criterion not in ATTENTION_CRITERIA:
            d.pop("score_images")
        if self.criterion is not None and self.latency_ratio is None:
            for name in ("latency_ratio", "latency_threads"):
                d.pop(name)
        elif self.criterion is not None:
            d.pop("prune_ratio")
        if self.source is not None:
            d["source"] = self.source.key_fields()
        return d


def stable_key(fields: dict[str, Any]) -> str:
    """A cache key: `fields` as sorted JSON, with the format version (cells and the bench results cached beside)."""
    return json.dumps({"format": CELL_FORMAT, **fields}, sort_keys=True, default=str)


def cell_key(cfg: CellConfig) -> str:
    """The cache key of a cell: its result-determining fields as sorted JSON, with the format version."""
    return stable_key(cfg.key_fields())


def done_metrics(cell_dir: Path, key: str) -> dict[str, Any] | None:
    """The metrics of the finished cell in `cell_dir` if it was computed under `key`, else None."""
    path = Path(cell_dir) / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return metrics if metrics.get("cell_key") == key and metrics.get("stages") else None


@dataclass(frozen=True)
class Cell:
    """A finished cell: its configuration, run directory, key and metrics."""

    config: CellConfig
    dir: Path
    key: str
    metrics: dict[str, Any]

    @property
    def stage(self) -> str:
        """The stage that holds the cell's final model: `finetune` when pruned, else `train`."""
        return "finetune" if self.config.criterion else "train"

    @property
    def model_dir(self) -> Path:
        """The checkpoint folder of the cell's final model."""
        return self.dir / ("pruned" if self.config.criterion else "base")

    def measure(self, stage: str | None = None) -> dict[str, Any]:
        """Accuracy, size and wall time of `stage` (default: the final model)."""
        rec = self.metrics["stages"][stage or self.stage]
        return {k: rec[k] for k in ("test_top1", "val_top1", "params", "macs", "flops", "wall_seconds")}


@dataclass
class CellRunner:
    """Runs cells under `root`, each in its own folder; counts what was computed and what was read back."""

    root: Path
    command: str = "pacb-edge"
    progress: bool = True
    threads: int | None = None  # torch threads for training (None: the pipeline's default)
    log: Callable[[str], None] = lambda _: None
    computed: int = 0
    cached: int = 0
    cells: list[Cell] = field(default_factory=list)

    def run(self, cfg: CellConfig, name: str, source: Cell | None = None) -> Cell:
        """The cell `cfg` in `root/name`: read back when finished under the same key, else computed.

        A pruning cell needs its `source`, the finished cell whose trained model it prunes.
        """
        cell_dir = Path(self.root) / name
        key = cell_key(cfg)
        assert (source.config if source else None) == cfg.source, f"cell {name}: not the source its config names"
        metrics = done_metrics(cell_dir, key)
        if metrics is not None:
            self.cached += 1
            self.log(f"{name} (done, cached)")
        else:
            steps = ["train"] if source is None else []
            steps += [f"prune ({cfg.describe_prune()}) and fine-tune"] if cfg.criterion else []
            self.log(f"{name}: {' and '.join(steps)}")
            if cell_dir.is_dir():
                shutil.rmtree(cell_dir)  # another configuration's, or an interrupted run's
            metrics = _compute(cfg, cell_dir, source, self, f"{self.command} (cell {name})")
            metrics.update(cell_key=key, cell=cfg.key_fields(), seed=cfg.seed)
            atomic_write_json(cell_dir / "metrics.json", metrics)
            self.computed += 1
        cell = Cell(cfg, cell_dir, key, metrics)
        self.cells.append(cell)
        return cell


def _compute(cfg: CellConfig, cell_dir: Path, source: Cell | None, run: CellRunner, command: str) -> dict[str, Any]:
    """Train (and prune + fine-tune) a training cell, or prune + fine-tune a source's model, through the pipeline."""
    from pacb_edge.pruning.pruner import PruneConfig
    from pacb_edge.studies.pipeline import RunOptions, run_pipeline
    from pacb_edge.training.trainer import TrainConfig

    common = {name: getattr(cfg, name) for name in _TRAIN_FIELDS}
    train = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, warmup_epochs=cfg.warmup_epochs, sparsity=cfg.sparsity, **common)
    finetune = TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, warmup_epochs=0, **common)
    prune = None
    if cfg.criterion:
        prune = PruneConfig(
            criterion=cfg.criterion,
            prune_ratio=cfg.prune_ratio,
            round_to=cfg.round_to,
            latency_target=cfg.latency_target,
            seed=cfg.seed,
        )
    latency = {}
    if cfg.criterion and cfg.latency_ratio is not None:
        from pacb_edge.studies.latency_profile import LatencyBudget, LatencyTargetOptions

        latency = {
            "latency": LatencyBudget(ratio=cfg.latency_ratio),
            "latency_target": LatencyTargetOptions(target=cfg.latency_target, threads=cfg.latency_threads),
        }
    opts = RunOptions(
        model=cfg.arch,
        **{name: getattr(cfg, name) for name in _DATA_FIELDS},
        threads=run.threads,
        out=cell_dir,
        progress=run.progress,
        score_images=cfg.score_images if cfg.criterion in ATTENTION_CRITERIA else 1,
        command=command,
        train=train,
        finetune=finetune,
        prune=prune,
        **latency,
    )
    if source is None:
        return run_pipeline(opts)
    run_pipeline(dataclasses.replace(opts, stage="prune", checkpoint=source.dir / "base"))
    return run_pipeline(dataclasses.replace(opts, stage="finetune"))
