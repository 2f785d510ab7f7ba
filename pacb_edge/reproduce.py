"""`pacb-edge reproduce`: rerun a paper's experiment grid and lay our numbers next to the paper's, table by table.

- `pacb`: Tables 2-4 of PACB (Chung 2025). For MobileNetV3-Large and RepVGG-A0: Base (the architecture's own
  attention: SE in MobileNetV3, none in RepVGG), Base+CA (sparsity-trained), and Base+CA+Pruned (bn-scale pruning of
  that very model, then fine-tuning). Columns: Acc, Params, FLOPs (= MACs, as the paper counts them), plus our
  per-image latency on the host CPU (ONNX Runtime, batch 1, p50) next to the paper's Table 4.
- `cpsca`: Tables 4-5 of CPSCA (Liu, Fang et al.). For VGG16 and ResNet56: the unpruned baseline, then L1-norm,
  Network Slimming, CPSE and CPSCA at each pruning ratio, with params, GFLOPs (= 2 x MACs, as the paper), per-image
  time and accuracy.

Which model each CPSCA method prunes (each pruning is a separate prune + fine-tune cell from a trained checkpoint, so a
trained model is reused by every ratio and never retrained):
- L1-norm (Li et al.) prunes the plain model trained normally; that model is also the baseline row.
- Network Slimming prunes the plain model trained with the L1 penalty on BN scales (its own training run: Slimming's
  ranking needs sparsity training, Li et al.'s and the baseline's do not).
- CPSE prunes a model trained with SE, CPSCA one trained with SCA (the attention is removed when pruned).

Ratios: our `prune_ratio` is the project's one meaning, the global fraction of prunable channels removed. The papers'
rows are labelled by the fraction of *parameters* removed; the table shows our measured params-pruned % next to the
paper's, and each of our ratios is compared with the paper's level nearest to it in params pruned. The default CPSCA
ratios are derived from the paper's levels with r = 1 - sqrt(1 - p) (conv params scale with the square of the width).

Resume: every cell is a run directory with its `metrics.json`, keyed by its full configuration; a finished cell is
read back, never recomputed, and a changed configuration recomputes only the cells it changes. Exports and bench
results are cached per stage directory in the same way.

This module sits at the top of the data flow (like `experiments.py`) and imports training, export and the bench
runners inside its functions. It prints nothing: `run_reproduce` returns the tables; the CLI prints them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacb_edge.errors import PacbEdgeError
from pacb_edge.fileio import atomic_write_json, atomic_write_text, ensure_dir

PAPERS = ("pacb", "cpsca")
DATASETS = ("digits", "cifar10", "cifar100", "fashion-mnist", "gtsrb")
DEVICES = ("cpu", "jetson", "android")
DATASET_TITLES = {
    "digits": "digits",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "fashion-mnist": "Fashion-MNIST",
    "gtsrb": "GTSRB",
}
RESULT_NAME = "reproduce"  # reproduce.json and reproduce.md in the output folder
CELL_FORMAT = 1  # bump when the meaning of a cell changes, so older cells are recomputed

# ----------------------------------------------------------------------------------------------------------------------
# The papers' numbers, transcribed from /work/shared/papers/*.txt. None = lost in the text copy (with a note).

PAPER_TITLES = {
    "pacb": "PACB: coordinate attention + channel pruning (Chung, Future Internet 2025)",
    "cpsca": "CPSCA: channel pruning guided by spatial and channel attention (Liu, Fang et al.)",
}

# PACB Tables 2 (MobileNetV3) and 3 (RepVGG): acc = (mean, std) in %, params in M, flops in M (= MACs at 32x32).
PACB_PAPER: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "mobilenetv3_large": {
        "cifar10": {
            "Base": {"acc": (95.20, 0.12), "params_m": 16.239, "flops_m": 9.073},
            "CA": {"acc": (87.92, 0.18), "params_m": 11.596, "flops_m": 9.192},
            "CA_Pruned": {"acc": (87.20, 0.21), "params_m": 9.711, "flops_m": 7.388},
        },
        "fashion-mnist": {
            "Base": {"acc": (94.61, 0.09), "params_m": 16.239, "flops_m": 10.156},
            "CA": {"acc": (95.16, 0.11), "params_m": 11.596, "flops_m": 10.225},
            "CA_Pruned": {"acc": (91.94, 0.15), "params_m": 9.709, "flops_m": 7.502},
        },
        "gtsrb": {
            "Base": {"acc": (97.09, 0.14), "params_m": 16.239, "flops_m": 11.297},
            "CA": {"acc": (98.81, 0.10), "params_m": 11.596, "flops_m": 11.652},
            "CA_Pruned": {"acc": (97.37, 0.16), "params_m": 9.871, "flops_m": 8.552},
        },
    },
    "repvgg_a0": {
        "cifar10": {
            "Base": {"acc": (86.61, 0.20), "params_m": 7.683, "flops_m": 27.774},
            "CA": {"acc": (87.47, 0.18), "params_m": 7.893, "flops_m": 27.866},
            "CA_Pruned": {"acc": (87.05, 0.22), "params_m": 7.063, "flops_m": 23.918},
        },
        "fashion-mnist": {
            "Base": {"acc": (93.48, 0.12), "params_m": 7.683, "flops_m": 30.218},
            "CA": {"acc": (93.50, 0.10), "params_m": 7.893, "flops_m": 30.308},
            "CA_Pruned": {"acc": (93.33, 0.14), "params_m": 7.050, "flops_m": 26.955},
        },
        "gtsrb": {
            "Base": {"acc": (97.49, 0.11), "params_m": 7.683, "flops_m": 31.264},
            "CA": {"acc": (97.67, 0.09), "params_m": 7.893, "flops_m": 31.336},
            "CA_Pruned": {"acc": (96.74, 0.15), "params_m": 7.093, "flops_m": 27.918},
        },
    },
}

# PACB Table 4: per-image inference latency (ms) on edge hardware, per dataset.
PACB_LATENCY_MS: dict[str, dict[str, dict[str, float]]] = {
    "mobilenetv3_large": {
        "Base": {"cifar10": 18.7, "fashion-mnist": 19.2, "gtsrb": 20.5},
        "CA": {"cifar10": 19.5, "fashion-mnist": 20.0, "gtsrb": 21.3},
        "CA_Pruned": {"cifar10": 12.4, "fashion-mnist": 13.1, "gtsrb": 14.0},
    },
    "repvgg_a0": {
        "Base": {"cifar10": 27.8, "fashion-mnist": 28.5, "gtsrb": 29.7},
        "CA": {"cifar10": 28.6, "fashion-mnist": 29.3, "gtsrb": 30.5},
        "CA_Pruned": {"cifar10": 19.1, "fashion-mnist": 20.4, "gtsrb": 21.2},
    },
}

PACB_NOTES = (
    "Paper FLOPs (M) are multiply-accumulates at 32x32 input; ours are MACs too (FLOPs = 2 x MACs elsewhere).",
    "The paper's Params column is not a standard count (16.239 M for MobileNetV3-Large, whose usual count is about "
    "4.2 M at 10 classes); compare its relative changes, not its values.",
    "Paper latency (Table 4) is 'edge hardware'; the device, its runtime and the number of runs behind the paper's "
    "'mean ± std' were lost in the text copy. Ours: ONNX Runtime on this host's CPU, batch 1, p50.",
    "The text copy lost the table captions and PACB's training schedule (epochs, lr, lambda, threshold); the full "
    "settings here are Network Slimming's (see the schedule in the JSON).",
)

# CPSCA Tables 4 (VGG16) and 5 (ResNet56). Per dataset: the baseline and the pruning levels. A level's params, GFLOPs
# and time are merged cells in the paper (one value for all four methods); `delta` is |Acc - baseline| as printed.
CPSCA_METHODS = ("l1-norm", "bn-scale", "se-attention", "sca-attention")
CPSCA_METHOD_NAMES = {"l1-norm": "L1-norm", "bn-scale": "Slimming", "se-attention": "CPSE", "sca-attention": "CPSCA"}


def _level(params_m, params_pct, gflops, gflops_pct, time_ms, accs, deltas) -> dict[str, Any]:
    return {
        "params_m": params_m,
        "params_pruned_pct": params_pct,
        "gflops": gflops,
        "gflops_pruned_pct": gflops_pct,
        "time_ms": time_ms,
        "acc": dict(zip(CPSCA_METHODS, accs, strict=True)),
        "delta_abs": dict(zip(CPSCA_METHODS, deltas, strict=True)),
    }


CPSCA_PAPER: dict[str, dict[str, Any]] = {
    "vgg16": {
        "table": "Table 4",
        "cifar10": {
            "baseline": {"params_m": 16.87, "gflops": 0.63163, "time_ms": 12.3, "acc": 93.04},
            "levels": [
                _level(11.43, 32.25, 0.47499, 24.75, 10.2, (93.25, 93.35, 93.43, 93.45), (0.21, 0.31, 0.39, 0.41)),
                _level(8.52, 49.50, 0.21988, 65.05, 4.5, (92.98, 93.01, 92.09, 93.10), (0.06, 0.03, 0.95, 0.06)),
                _level(3.38, 79.96, 0.14407, 77.02, 3.0, (92.13, 92.78, 92.89, 92.96), (0.91, 0.26, 0.15, 0.08)),
                _level(0.72, 95.73, 0.09918, 84.12, 2.1, (88.90, 89.79, 90.11, 91.39), (4.14, 3.25, 2.93, 1.65)),
            ],
        },
        "cifar100": {
            "baseline": {"params_m": 17.24, "gflops": 0.63237, "time_ms": 13.5, "acc": 73.14},
            "levels": [
                _level(11.47, 33.47, 0.47509, 24.87, 9.6, (72.97, 73.34, 73.36, 73.77), (0.17, 0.20, 0.22, 0.63)),
                _level(8.57, 50.29, 0.21997, 65.21, 4.2, (71.76, 71.95, 72.13, 72.89), (1.38, 1.19, 1.01, 0.25)),
                _level(3.89, 77.44, 0.18677, 70.47, 3.9, (70.19, 71.33, 71.09, 72.03), (2.95, 1.81, 2.05, 1.11)),
                _level(0.77, 95.53, 0.09927, 84.30, 2.1, (69.87, 70.25, 70.87, 71.67), (3.27, 2.89, 2.27, 1.47)),
            ],
        },
    },
    "resnet56": {
        "table": "Table 5",
        "cifar10": {
            "baseline": {"params_m": 0.86, "gflops": 0.25257, "time_ms": 30.6, "acc": 92.98},
            "levels": [
                _level(0.45, 47.67, 0.16983, 32.76, 20.7, (92.54, 92.26, 92.55, 93.06), (0.44, 0.72, 0.43, 0.08)),
                _level(0.17, 80.23, 0.06476, 74.36, 8.1, (90.48, 91.09, 91.28, 91.31), (2.50, 1.89, 1.70, 1.67)),
                _level(0.04, 95.35, 0.01351, 94.65, 1.5, (89.32, 89.17, 88.96, 90.18), (3.66, 3.81, 4.02, 2.80)),
            ],
        },
        "cifar100": {
            "baseline": {"params_m": 0.86, "gflops": 0.25258, "time_ms": 30.9, "acc": 75.78},
            "levels": [
                _level(0.45, 47.67, 0.16984, 32.76, 21.0, (74.89, 75.60, 75.55, 75.87), (0.89, 0.18, 0.23, 0.09)),
                _level(0.18, 79.07, 0.06477, 74.36, 7.5, (73.18, 73.19, 73.22, 73.34), (2.60, 2.59, 2.56, 2.44)),
                _level(0.05, 94.19, 0.01352, 94.65, 1.6, (71.23, 71.57, 71.86, 72.61), (4.55, 4.21, 3.92, 3.17)),
            ],
        },
    },
}

CPSCA_NOTES = (
    "GFLOPs are counted as 2 x MACs, as the paper does.",
    "Paper Time = average per-image inference time on an NVIDIA Jetson Nano; ours: ONNX Runtime on this host's CPU, "
    "batch 1, p50.",
    "The paper's Params / GFLOPs / Time (and their Pruned %) are merged cells, one value for all four methods of a "
    "level; they are printed on the level's first row only. Ours are per method.",
    "The sign of the paper's accuracy-change column was lost in the text copy; it is recomputed here as Acc - baseline "
    "(the printed magnitudes match |Acc - baseline| everywhere).",
    "The text copy lost the l1 of 'l1-norm' and the table captions: the text calls Tables 4 and 5 'CIFAR-10 and "
    "CIFAR-100 respectively', but both tables hold both datasets; they differ by model (VGG16: 16.87 M, ResNet56: "
    "0.86 M), so Table 4 = VGG16 and Table 5 = ResNet56 here. ResNet56's baseline reads 0.86 M here but 0.85 M in the "
    "paper's Table 2.",
    "Rows are labelled by our channel ratio; the paper's row is its level nearest in params pruned.",
)

PAPER_DATASETS = {"pacb": ("cifar10", "fashion-mnist", "gtsrb"), "cpsca": ("cifar10", "cifar100")}
ARCHS = {"pacb": ("mobilenetv3_large", "repvgg_a0"), "cpsca": ("vgg16", "resnet56")}
ARCH_TITLES = {"mobilenetv3_large": "MobileNetV3", "repvgg_a0": "RepVGG", "vgg16": "VGG16", "resnet56": "ResNet56"}
PACB_VARIANTS = ("Base", "CA", "CA_Pruned")
PACB_TABLES = {"mobilenetv3_large": "Table 2", "repvgg_a0": "Table 3"}
# Network Slimming's lambda: 1e-4 for plain CNNs (VGG), 1e-5 for residual nets (ResNet, DenseNet).
SLIMMING_SPARSITY = {"vgg16": 1e-4, "resnet56": 1e-5}


# ----------------------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Schedule:
    """Training, fine-tuning and bench settings of one grid."""

    epochs: int
    finetune_epochs: int
    lr: float
    finetune_lr: float
    batch_size: int
    weight_decay: float
    scheduler: str
    warmup_epochs: int
    nesterov: bool
    width_mult: float
    limit: int | None  # images per split (None = all)
    score_images: int  # training images the attention criteria average over
    bench_warmup: int
    bench_runs: int
    calibration_images: int


# Network Slimming's reference schedule (CPSCA trains the same way; PACB's own schedule was lost in the text copy):
# SGD momentum 0.9, lr 0.1 divided by 10 at 50 % and 75 % of 160 epochs, weight decay 1e-4, batch 64, and fine-tuning
# with the same schedule.
FULL = Schedule(
    epochs=160,
    finetune_epochs=160,
    lr=0.1,
    finetune_lr=0.1,
    batch_size=64,
    weight_decay=1e-4,
    scheduler="step",
    warmup_epochs=0,
    nesterov=False,
    width_mult=1.0,
    limit=None,
    score_images=10**9,  # the whole training set, as CPSCA
    bench_warmup=20,
    bench_runs=100,
    calibration_images=200,
)
# A smoke-sized grid for CI: width 0.25, a few hundred images, a few epochs.
QUICK = Schedule(
    epochs=4,
    finetune_epochs=1,
    lr=0.1,
    finetune_lr=0.02,
    batch_size=32,
    weight_decay=5e-4,
    scheduler="cosine",
    warmup_epochs=0,
    nesterov=True,
    width_mult=0.25,
    limit=256,
    score_images=128,
    bench_warmup=3,
    bench_runs=15,
    calibration_images=32,
)
QUICK_CPSCA_RATIOS = (0.5,)


def paper_channel_ratio(params_pruned_pct: float) -> float:
    """The channel ratio that removes about `params_pruned_pct` % of conv params when every layer shrinks alike."""
    return round(1 - math.sqrt(1 - params_pruned_pct / 100), 2)


def default_cpsca_ratios(arch: str) -> tuple[float, ...]:
    """Channel ratios for the paper's CIFAR-10 pruning levels of `arch`."""
    return tuple(paper_channel_ratio(lv["params_pruned_pct"]) for lv in CPSCA_PAPER[arch]["cifar10"]["levels"])


@dataclass
class ReproduceConfig:
    """What `pacb-edge reproduce` was asked to do. None means the paper's (or --quick's) default."""

    paper: str
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False  # let torchvision fetch the dataset into data_dir
    out: Path | None = None  # default runs/reproduce_<paper>_<dataset>[_quick]
    quick: bool = False
    seeds: int = 1
    prune_ratio: float = 0.3  # pacb: bn-scale ratio of the CA model
    ratios: tuple[float, ...] | None = None  # cpsca: channel ratios (default: the paper's levels, or 0.5 quick)
    epochs: int | None = None
    finetune_epochs: int | None = None
    sparsity: float | None = None  # lambda; default 1e-4 (pacb), 1e-4 VGG16 / 1e-5 ResNet56 (cpsca Slimming)
    width_mult: float | None = None
    limit: int | None = None
    archs: tuple[str, ...] | None = None  # a subset of the paper's architectures
    device: str = "cpu"
    jetson: dict[str, Any] = field(default_factory=dict)  # JetsonRunner options: host, port, remote_dir, ...
    android: dict[str, Any] = field(default_factory=dict)  # AndroidRunner options: serial, benchmark_binary, ...
    threads: int | None = None  # host bench threads
    bench_runs: int | None = None
    progress: bool = True

    def validate(self) -> None:
        if self.paper not in PAPERS:
            raise PacbEdgeError(f"unknown paper {self.paper!r}; choose one of {', '.join(PAPERS)}")
        if self.dataset not in DATASETS:
            raise PacbEdgeError(f"unknown dataset {self.dataset!r} for reproduce; choose one of {', '.join(DATASETS)}")
        if self.seeds < 1:
            raise PacbEdgeError(f"--seeds must be at least 1, got {self.seeds}")
        if self.device not in DEVICES:
            raise PacbEdgeError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.device == "jetson" and not self.jetson.get("host"):
            raise PacbEdgeError("--device jetson needs --host user@ip")
        for r in [self.prune_ratio, *(self.ratios or ())]:
            if not 0 < r < 1:
                raise PacbEdgeError(f"pruning ratios must be in (0, 1), got {r}")
        if self.ratios is not None and not self.ratios:
            raise PacbEdgeError("--ratios is empty")
        for name, v in (("--epochs", self.epochs), ("--finetune-epochs", self.finetune_epochs)):
            if v is not None and v < 1:
                raise PacbEdgeError(f"{name} must be at least 1, got {v}")
        if self.sparsity is not None and self.sparsity < 0:
            raise PacbEdgeError(f"--sparsity must be >= 0, got {self.sparsity}")
        if self.width_mult is not None and self.width_mult <= 0:
            raise PacbEdgeError(f"--width-mult must be positive, got {self.width_mult}")
        unknown = set(self.archs or ()) - set(ARCHS[self.paper])
        if unknown:
            raise PacbEdgeError(
                f"{self.paper} has no architecture {sorted(unknown)[0]!r}; it uses {', '.join(ARCHS[self.paper])}"
            )

    def schedule(self) -> Schedule:
        s = QUICK if self.quick else FULL
        overrides = {
            "epochs": self.epochs,
            "finetune_epochs": self.finetune_epochs,
            "width_mult": self.width_mult,
            "limit": self.limit,
            "bench_runs": self.bench_runs,
        }
        return dataclasses.replace(s, **{k: v for k, v in overrides.items() if v is not None})

    def out_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        return Path("runs") / f"reproduce_{self.paper}_{self.dataset}{'_quick' if self.quick else ''}"

    def cpsca_ratios(self, arch: str) -> tuple[float, ...]:
        if self.ratios is not None:
            return tuple(self.ratios)
        return QUICK_CPSCA_RATIOS if self.quick else default_cpsca_ratios(arch)


def paper_dataset(paper: str, dataset: str) -> str:
    """The dataset whose paper numbers are shown: the same one, or CIFAR-10 when the paper has no such table."""
    return dataset if dataset in PAPER_DATASETS[paper] else "cifar10"


# ----------------------------------------------------------------------------------------------------------------------
# Cells: one run directory each, keyed by everything that determines its result


@dataclass
class _Ctx:
    cfg: ReproduceConfig
    sched: Schedule
    out: Path
    log: Callable[[str], None]
    computed: int = 0
    cached: int = 0
    cells: list[Path] = field(default_factory=list)


def _train_configs(ctx: _Ctx, seed: int, sparsity: float):
    from pacb_edge.train import TrainConfig

    s = ctx.sched
    common = dict(
        batch_size=s.batch_size,
        weight_decay=s.weight_decay,
        scheduler=s.scheduler,
        nesterov=s.nesterov,
        seed=seed,
    )
    train = TrainConfig(epochs=s.epochs, lr=s.lr, warmup_epochs=s.warmup_epochs, sparsity=sparsity, **common)
    finetune = TrainConfig(epochs=s.finetune_epochs, lr=s.finetune_lr, warmup_epochs=0, sparsity=0.0, **common)
    return train, finetune


def _key(d: dict[str, Any]) -> str:
    return json.dumps({"format": CELL_FORMAT, **d}, sort_keys=True, default=str)


def _done(cell_dir: Path, key: str, stage: str) -> dict[str, Any] | None:
    path = cell_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if metrics.get("reproduce_cell") == key and stage in metrics.get("stages", {}):
        return metrics
    return None


def _fresh(cell_dir: Path) -> None:
    """Empty a cell directory whose content belongs to another configuration (or an interrupted run)."""
    if cell_dir.is_dir():
        shutil.rmtree(cell_dir)


def _finish(cell_dir: Path, metrics: dict[str, Any], key: str, seed: int) -> dict[str, Any]:
    metrics["reproduce_cell"] = key
    metrics["seed"] = seed
    atomic_write_json(cell_dir / "metrics.json", metrics)
    return metrics


ATTENTION_CRITERIA = ("se-attention", "sca-attention")


def _score_images(ctx: _Ctx, criterion: str | None) -> int:
    """Training images the criterion averages attention over (the others need none: 1 keeps the pipeline cheap)."""
    return ctx.sched.score_images if criterion in ATTENTION_CRITERIA else 1


def _run_options(ctx: _Ctx, arch: str, attention: str | None, cell_dir: Path, name: str, criterion=None, **kw):
    from pacb_edge.pipeline import RunOptions

    return RunOptions(
        model=arch,
        attention=attention,
        dataset=ctx.cfg.dataset,
        data_dir=ctx.cfg.data_dir,
        download=ctx.cfg.download,
        input_size=32,
        width_mult=ctx.sched.width_mult,
        grayscale_to_rgb=True,
        limit=ctx.sched.limit,
        out=cell_dir,
        progress=ctx.cfg.progress,
        score_images=_score_images(ctx, criterion),
        command=f"pacb-edge reproduce {ctx.cfg.paper} (cell {name})",
        **kw,
    )


def train_model_cell(
    ctx: _Ctx,
    name: str,
    seed: int,
    arch: str,
    attention: str | None,
    sparsity: float = 0.0,
    criterion: str | None = None,
    prune_ratio: float | None = None,
) -> tuple[Path, str, dict[str, Any]]:
    """Train one model (and prune + fine-tune it when `criterion` is set) into `out/seed<seed>/<name>`.

    Returns (cell dir, cell key, metrics); a finished cell with the same key is read back, not recomputed.
    """
    from pacb_edge.prune import PruneConfig

    cell_dir = ctx.out / f"seed{seed}" / name
    train, finetune = _train_configs(ctx, seed, sparsity)
    prune = PruneConfig(criterion=criterion, prune_ratio=prune_ratio, seed=seed) if criterion else None
    key = _key(
        {
            "kind": "train",
            "arch": arch,
            "attention": attention,
            "dataset": ctx.cfg.dataset,
            "width_mult": ctx.sched.width_mult,
            "limit": ctx.sched.limit,
            "score_images": _score_images(ctx, criterion),
            "train": dataclasses.asdict(train),
            "finetune": dataclasses.asdict(finetune) if prune else None,
            "prune": dataclasses.asdict(prune) if prune else None,
        }
    )
    ctx.cells.append(cell_dir)
    metrics = _done(cell_dir, key, "eval")
    if metrics is not None:
        ctx.cached += 1
        ctx.log(f"seed {seed}: {name} (done, cached)")
        return cell_dir, key, metrics
    from pacb_edge.pipeline import run_pipeline

    ctx.log(f"seed {seed}: train {name}" + (f" and prune {criterion} {prune_ratio:g}" if prune else ""))
    _fresh(cell_dir)
    opts = _run_options(
        ctx, arch, attention, cell_dir, name, criterion=criterion, train=train, finetune=finetune, prune=prune
    )
    metrics = _finish(cell_dir, run_pipeline(opts), key, seed)
    ctx.computed += 1
    return cell_dir, key, metrics


def prune_cell(
    ctx: _Ctx,
    name: str,
    seed: int,
    source: tuple[Path, str],
    arch: str,
    attention: str | None,
    criterion: str,
    prune_ratio: float,
) -> tuple[Path, dict[str, Any]]:
    """Prune the trained model of cell `source` (dir, key) with `criterion` and fine-tune it, into its own cell."""
    from pacb_edge.prune import PruneConfig

    cell_dir = ctx.out / f"seed{seed}" / name
    train, finetune = _train_configs(ctx, seed, 0.0)
    prune = PruneConfig(criterion=criterion, prune_ratio=prune_ratio, seed=seed)
    key = _key(
        {
            "kind": "prune",
            "source": source[1],
            "score_images": _score_images(ctx, criterion),
            "finetune": dataclasses.asdict(finetune),
            "prune": dataclasses.asdict(prune),
        }
    )
    ctx.cells.append(cell_dir)
    metrics = _done(cell_dir, key, "finetune")
    if metrics is not None:
        ctx.cached += 1
        ctx.log(f"seed {seed}: {name} (done, cached)")
        return cell_dir, metrics
    from pacb_edge.pipeline import run_pipeline

    ctx.log(f"seed {seed}: prune {name} ({criterion}, ratio {prune_ratio:g}) and fine-tune")
    _fresh(cell_dir)
    common = dict(criterion=criterion, train=train, finetune=finetune, prune=prune)
    run_pipeline(
        _run_options(ctx, arch, attention, cell_dir, name, stage="prune", checkpoint=source[0] / "base", **common)
    )
    metrics = run_pipeline(_run_options(ctx, arch, attention, cell_dir, name, stage="finetune", **common))
    metrics = _finish(cell_dir, metrics, key, seed)
    ctx.computed += 1
    return cell_dir, metrics


def _measure(metrics: dict[str, Any], stage: str) -> dict[str, Any]:
    rec = metrics["stages"][stage]
    return {k: rec[k] for k in ("test_top1", "val_top1", "params", "macs", "flops", "wall_seconds")}


# ----------------------------------------------------------------------------------------------------------------------
# Export and bench, cached per stage directory

BENCH_CACHE = "reproduce_bench.json"


def _artifact(ctx: _Ctx, stage_dir: Path, device: str) -> str:
    """The deployable file for `device` (exported once, then reused): ONNX for the host, a Jetson bundle (TensorRT is
    built on the device) or an INT8 .tflite for Android."""
    from pacb_edge.export.api import REPORT_NAME

    sub = {"cpu": "export", "jetson": "export_jetson", "android": "export_android"}[device]
    out = stage_dir / sub
    expected = {"cpu": out / "model.onnx", "jetson": out / "jetson_bundle", "android": out / "model_int8.tflite"}
    if (out / REPORT_NAME).is_file():
        report = json.loads((out / REPORT_NAME).read_text())
        found = _pick_artifact(report, device, expected[device])
        if found and Path(found).exists():
            return found
    from pacb_edge.export import api

    common = dict(
        out_dir=out,
        data_dir=ctx.cfg.data_dir,
        eval_limit=ctx.sched.limit,
        calibration_images=ctx.sched.calibration_images,
    )
    if device == "cpu":
        report = api.export_checkpoint(stage_dir, ["onnx"], **common)
    elif device == "jetson":
        report = api.export_checkpoint(stage_dir, ["trt"], **common)
    else:
        report = api.export_checkpoint(stage_dir, ["tflite"], precision="int8", allow_drop=True, **common)
    found = _pick_artifact(report, device, expected[device])
    if not found:
        raise PacbEdgeError(f"export of {stage_dir} for {device} produced no artifact")
    return found


def _pick_artifact(report: dict[str, Any], device: str, expected: Path) -> str | None:
    """The artifact for `device` in an export report, located in the report's folder (so a moved results folder still
    finds its own files)."""
    if device == "jetson":  # the bundle folder, whether or not an engine was also built here
        return str(expected) if expected.is_dir() else None
    want = ("onnx", "fp32") if device == "cpu" else ("tflite", "int8")
    for a in report.get("artifacts", []):
        if (a.get("format"), a.get("precision")) == want:
            try:
                return str(expected.parent / Path(a["path"]).relative_to(report["out_dir"]))
            except (KeyError, ValueError):
                return a["path"]
    return None


def _bench_key(ctx: _Ctx, device: str, sched: Schedule) -> str:
    opts = {"cpu": {"threads": ctx.cfg.threads}, "jetson": ctx.cfg.jetson, "android": ctx.cfg.android}[device]
    return _key(
        {"device": device, "runs": sched.bench_runs, "warmup": sched.bench_warmup, "limit": sched.limit, **opts}
    )


def _read_bench_cache(stage_dir: Path) -> dict[str, Any]:
    path = stage_dir / BENCH_CACHE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def bench_stages(ctx: _Ctx, stage_dirs: list[Path], device: str) -> dict[Path, dict[str, Any]]:
    """Per-image latency and accuracy of each stage's deployable artifact on `device`.

    Results are cached in each stage directory; the ones not cached are exported and measured in one interleaved
    bench run. Failed measurements are returned but not cached, so a rerun tries them again.
    """
    from pacb_edge.device_bench import bench

    key = _bench_key(ctx, device, ctx.sched)
    results: dict[Path, dict[str, Any]] = {}
    todo: dict[str, Path] = {}
    for d in stage_dirs:
        cached = _read_bench_cache(d).get(device)
        if cached and cached.get("key") == key:
            results[d] = cached["result"]
        else:
            ctx.log(f"export {d.relative_to(ctx.out)} for {device} (or reuse its export)")
            todo[_artifact(ctx, d, device)] = d
    if not todo:
        return results
    ctx.log(f"bench {len(todo)} artifact(s) on {device}")
    opts = bench.BenchOptions(
        device=device,
        threads=ctx.cfg.threads,
        warmup=ctx.sched.bench_warmup,
        runs=ctx.sched.bench_runs,
        eval_limit=ctx.sched.limit,
        data_dir=ctx.cfg.data_dir,
        out_dir=ctx.out / "bench",
        jetson=dict(ctx.cfg.jetson),
        android=dict(ctx.cfg.android),
    )
    for rec in bench.run_bench(list(todo), opts):
        d = todo[rec.artifact]
        result = rec.to_dict()
        results[d] = result
        if rec.status != "failed":
            cache = _read_bench_cache(d)
            cache[device] = {"key": key, "result": result}
            atomic_write_json(d / BENCH_CACHE, cache)
    return results


def _bench_fields(result: dict[str, Any] | None) -> dict[str, Any]:
    if not result:
        return {"per_image_ms": None, "top1": None, "status": "missing", "error": None}
    return {
        "per_image_ms": result.get("per_image_ms"),
        "top1": result.get("top1"),
        "accuracy_source": result.get("accuracy_source"),
        "status": result.get("status"),
        "error": result.get("error"),
        "runner": result.get("runner"),
        "artifact": result.get("artifact"),
    }


# ----------------------------------------------------------------------------------------------------------------------
# The grids


def _pacb_grid(ctx: _Ctx, seed: int, archs: tuple[str, ...]) -> list[dict[str, Any]]:
    cfg = ctx.cfg
    lam = 1e-4 if cfg.sparsity is None else cfg.sparsity
    records = []
    for arch in archs:
        base_dir, _, base = train_model_cell(ctx, f"{arch}_base", seed, arch, None)
        ca_dir, _, ca = train_model_cell(
            ctx, f"{arch}_ca", seed, arch, "ca", sparsity=lam, criterion="bn-scale", prune_ratio=cfg.prune_ratio
        )
        for variant, metrics, stage, stage_dir in (
            ("Base", base, "train", base_dir / "base"),
            ("CA", ca, "train", ca_dir / "base"),
            ("CA_Pruned", ca, "finetune", ca_dir / "pruned"),
        ):
            records.append(
                {
                    "row": f"{arch}/{variant}",
                    "arch": arch,
                    "variant": variant,
                    "seed": seed,
                    "stage_dir": str(stage_dir),
                    **_measure(metrics, stage),
                    "sparsity": lam if variant != "Base" else 0.0,
                    "prune_ratio": cfg.prune_ratio if variant == "CA_Pruned" else None,
                }
            )
    return records


def _cpsca_grid(ctx: _Ctx, seed: int, archs: tuple[str, ...]) -> list[dict[str, Any]]:
    cfg = ctx.cfg
    records = []
    for arch in archs:
        lam = SLIMMING_SPARSITY[arch] if cfg.sparsity is None else cfg.sparsity
        plain = train_model_cell(ctx, f"{arch}_plain", seed, arch, None)
        trained = {
            "l1-norm": (plain, None),
            "bn-scale": (train_model_cell(ctx, f"{arch}_slimming", seed, arch, None, sparsity=lam), None),
            "se-attention": (train_model_cell(ctx, f"{arch}_se", seed, arch, "se"), "se"),
            "sca-attention": (train_model_cell(ctx, f"{arch}_sca", seed, arch, "sca"), "sca"),
        }
        base = {"row": f"{arch}/baseline", "arch": arch, "method": "baseline", "ratio": None, "seed": seed}
        records.append({**base, "stage_dir": str(plain[0] / "base"), **_measure(plain[2], "train")})
        for ratio in cfg.cpsca_ratios(arch):
            for method in CPSCA_METHODS:
                (src_dir, src_key, _), attention = trained[method]
                name = f"{arch}_{method}_r{ratio:.2f}"
                cell_dir, metrics = prune_cell(ctx, name, seed, (src_dir, src_key), arch, attention, method, ratio)
                records.append(
                    {
                        "row": f"{arch}/{method}/{ratio:.2f}",
                        "arch": arch,
                        "method": method,
                        "ratio": ratio,
                        "seed": seed,
                        "stage_dir": str(cell_dir / "pruned"),
                        "source_dir": str(src_dir / "base"),
                        **_measure(metrics, "finetune"),
                        "sparsity": lam if method == "bn-scale" else 0.0,
                    }
                )
    by_seed_base = {r["arch"]: r for r in records if r["method"] == "baseline"}
    for r in records:
        b = by_seed_base[r["arch"]]
        r["params_pruned"] = 1 - r["params"] / b["params"]
        r["flops_pruned"] = 1 - r["flops"] / b["flops"]
        r["acc_change_pp"] = 100 * (r["test_top1"] - b["test_top1"])
    return records


# ----------------------------------------------------------------------------------------------------------------------
# Aggregation over seeds and the tables


def _stat(values: list[float | None]) -> dict[str, Any] | None:
    """Mean and sample std (0 for one value) over seeds; None when any seed lacks the value."""
    if not values or any(v is None for v in values):
        return None
    xs = [float(v) for v in values]
    return {
        "mean": statistics.fmean(xs),
        "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "n": len(xs),
        "values": xs,
    }


def aggregate(records: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """{row id: {field: stat}} over the seeds of each row."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        rows.setdefault(r["row"], []).append(r)
    return {row: {f: _stat([_get(r, f) for r in rs]) for f in fields} for row, rs in rows.items()}


def _get(record: dict[str, Any], dotted: str) -> Any:
    v: Any = record
    for part in dotted.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


def _fmt(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 2, signed: bool = False) -> str:
    """'mean' for one seed, 'mean ± std' over several seeds; 'failed' when missing."""
    if stat is None:
        return "failed"
    sign = "+" if signed else ""
    text = f"{stat['mean'] * scale:{sign}.{digits}f}"
    if stat["n"] > 1:
        text += f" ± {stat['std'] * scale:.{digits}f}"
    return text


def _paper(v: Any, digits: int = 2, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, tuple):
        return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"
    return f"{v:{'+' if signed else ''}.{digits}f}"


@dataclass
class Table:
    """One paper table with our numbers: formatted cells (for the terminal and Markdown) and the numbers behind."""

    key: str
    title: str
    header: list[str]
    measured: list[bool]  # True for the columns holding our measurements
    label_columns: int = 2  # leading columns that name the row (left-aligned)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEVICE_TITLES = {"jetson": "Jetson (TensorRT)", "android": "Android (TFLite INT8)"}


def _device_columns(device: str) -> tuple[list[str], list[bool]]:
    if device == "cpu":
        return [], []
    name = DEVICE_TITLES[device]
    return [f"{name} ms ours", f"{name} acc (%) ours"], [True, True]


def _device_cells(device: str, stats: dict[str, Any]) -> list[str]:
    if device == "cpu":
        return []
    return [_fmt(stats.get("device.per_image_ms"), digits=3), _fmt(stats.get("device.top1"), 100, 2)]


STAT_FIELDS = (
    "test_top1",
    "params",
    "macs",
    "flops",
    "host.per_image_ms",
    "device.per_image_ms",
    "device.top1",
    "params_pruned",
    "flops_pruned",
    "acc_change_pp",
)


def pacb_tables(records: list[dict[str, Any]], dataset: str, device: str) -> list[Table]:
    """PACB Tables 2 and 3 (one per architecture) and Table 4 (latency), our numbers next to the paper's."""
    pds = paper_dataset("pacb", dataset)
    ours, theirs = DATASET_TITLES[dataset], DATASET_TITLES[pds]
    ref = "" if pds == dataset else f" (the paper has no {ours}; its {theirs} numbers are shown)"
    stats = aggregate(records, STAT_FIELDS)
    archs = list(dict.fromkeys(r["arch"] for r in records))
    dev_header, dev_measured = _device_columns(device)
    tables = []
    for arch in archs:
        name = ARCH_TITLES[arch]
        header = ["Dataset", "Method", "Acc (%) ours", "Acc (%) paper", "Params (M) ours", "Params (M) paper"]
        header += ["FLOPs (M) = MACs ours", "FLOPs (M) paper", "Latency (ms) ours", "Latency (ms) paper (Table 4)"]
        table = Table(
            key=PACB_TABLES[arch].lower().replace(" ", ""),
            title=f"PACB {PACB_TABLES[arch]}: {name} variants on {ours}{ref}",
            header=header + dev_header,
            measured=[False, False, True, False, True, False, True, False, True, False] + dev_measured,
            notes=list(PACB_NOTES),
        )
        for i, variant in enumerate(PACB_VARIANTS):
            s = stats[f"{arch}/{variant}"]
            p = PACB_PAPER[arch][pds][variant]
            label = f"{name} (Base)" if variant == "Base" else f"{name}_{variant}"
            table.rows.append(
                [
                    ours if i == 0 else "",
                    label,
                    _fmt(s["test_top1"], 100, 2),
                    _paper(p["acc"]),
                    _fmt(s["params"], 1e-6, 3),
                    _paper(p["params_m"], 3),
                    _fmt(s["macs"], 1e-6, 3),
                    _paper(p["flops_m"], 3),
                    _fmt(s["host.per_image_ms"], digits=3),
                    _paper(PACB_LATENCY_MS[arch][variant][pds], 1),
                    *_device_cells(device, s),
                ]
            )
            table.records.append({"row": f"{arch}/{variant}", "ours": s, "paper": {**p, "dataset": pds}})
        tables.append(table)
    header = ["Method", f"{ours} ours (ms)", f"{theirs} paper (ms)"]
    latency = Table(
        key="table4",
        title=f"PACB Table 4: per-image inference latency (ms){ref}",
        header=header + dev_header[:1],
        measured=[False, True, False] + dev_measured[:1],
        label_columns=1,
        notes=[PACB_NOTES[2]],
    )
    for arch in archs:
        for variant in PACB_VARIANTS:
            s = stats[f"{arch}/{variant}"]
            label = f"{ARCH_TITLES[arch]} (Base)" if variant == "Base" else f"{ARCH_TITLES[arch]}_{variant}"
            row = [label, _fmt(s["host.per_image_ms"], digits=3), _paper(PACB_LATENCY_MS[arch][variant][pds], 1)]
            if device != "cpu":
                row.append(_fmt(s["device.per_image_ms"], digits=3))
            latency.rows.append(row)
            latency.records.append({"row": f"{arch}/{variant}", "ours": s, "paper_ms": PACB_LATENCY_MS[arch][variant]})
    tables.append(latency)
    return tables


def _paper_levels(arch: str, pds: str, ratios: list[float], stats, defaults: bool) -> dict[float, dict[str, Any]]:
    """The paper level each of our ratios is compared with: by position for the paper-derived default ratios, else the
    level nearest in params pruned (mean over the four methods)."""
    levels = CPSCA_PAPER[arch][pds]["levels"]
    if defaults and len(ratios) == len(levels):
        return dict(zip(ratios, levels, strict=True))
    out = {}
    for ratio in ratios:
        pruned = [stats[f"{arch}/{m}/{ratio:.2f}"]["params_pruned"] for m in CPSCA_METHODS]
        mean = 100 * statistics.fmean(p["mean"] for p in pruned if p)
        out[ratio] = min(levels, key=lambda lv, m=mean: abs(lv["params_pruned_pct"] - m))
    return out


def cpsca_tables(records: list[dict[str, Any]], dataset: str, device: str, default_ratios: bool = False) -> list[Table]:
    """CPSCA Tables 4 (VGG16) and 5 (ResNet56), our numbers next to the paper's."""
    pds = paper_dataset("cpsca", dataset)
    ours, theirs = DATASET_TITLES[dataset], DATASET_TITLES[pds]
    ref = "" if pds == dataset else f" (the paper has no {ours}; its {theirs} columns are shown)"
    stats = aggregate(records, STAT_FIELDS)
    archs = list(dict.fromkeys(r["arch"] for r in records))
    dev_header, dev_measured = _device_columns(device)
    pairs = ["Params (M)", "Params pruned (%)", "GFLOPs = 2xMACs", "GFLOPs pruned (%)", "Time (ms)", "Acc (%)"]
    header = ["Method", "Ratio"] + [f"{p} {w}" for p in pairs + ["Acc change (pp)"] for w in ("ours", "paper")]
    measured = [False, False] + [True, False] * (len(pairs) + 1)
    tables = []
    for arch in archs:
        paper = CPSCA_PAPER[arch][pds]
        number = CPSCA_PAPER[arch]["table"]
        table = Table(
            key=number.lower().replace(" ", ""),
            title=f"CPSCA {number}: pruning {ARCH_TITLES[arch]} on {ours}{ref}",
            header=header + dev_header,
            measured=measured + dev_measured,
            notes=list(CPSCA_NOTES),
        )
        s = stats[f"{arch}/baseline"]
        b = paper["baseline"]
        table.rows.append(
            [
                "baseline",
                "-",
                _fmt(s["params"], 1e-6, 3),
                _paper(b["params_m"], 2),
                _fmt(s["params_pruned"], 100, 2),
                "—",
                _fmt(s["flops"], 1e-9, 5),
                _paper(b["gflops"], 5),
                _fmt(s["flops_pruned"], 100, 2),
                "—",
                _fmt(s["host.per_image_ms"], digits=3),
                _paper(b["time_ms"], 1),
                _fmt(s["test_top1"], 100, 2),
                _paper(b["acc"], 2),
                _fmt(s["acc_change_pp"], digits=2, signed=True),
                "—",
                *_device_cells(device, s),
            ]
        )
        table.records.append({"row": f"{arch}/baseline", "ours": s, "paper": b})
        ratios = sorted({r["ratio"] for r in records if r["arch"] == arch and r["ratio"] is not None})
        level_of = _paper_levels(arch, pds, ratios, stats, default_ratios)
        for ratio in ratios:
            lv = level_of[ratio]
            for i, method in enumerate(CPSCA_METHODS):
                s = stats[f"{arch}/{method}/{ratio:.2f}"]
                first = i == 0  # the paper's merged cells: one value per level, on its first row
                acc = lv["acc"][method]
                table.rows.append(
                    [
                        CPSCA_METHOD_NAMES[method],
                        f"{ratio:.2f}",
                        _fmt(s["params"], 1e-6, 3),
                        _paper(lv["params_m"], 2) if first else "",
                        _fmt(s["params_pruned"], 100, 2),
                        _paper(lv["params_pruned_pct"], 2) if first else "",
                        _fmt(s["flops"], 1e-9, 5),
                        _paper(lv["gflops"], 5) if first else "",
                        _fmt(s["flops_pruned"], 100, 2),
                        _paper(lv["gflops_pruned_pct"], 2) if first else "",
                        _fmt(s["host.per_image_ms"], digits=3),
                        _paper(lv["time_ms"], 1) if first else "",
                        _fmt(s["test_top1"], 100, 2),
                        _paper(acc, 2),
                        _fmt(s["acc_change_pp"], digits=2, signed=True),
                        _paper(None if acc is None else acc - b["acc"], 2, signed=True),
                        *_device_cells(device, s),
                    ]
                )
                table.records.append(
                    {"row": f"{arch}/{method}/{ratio:.2f}", "ours": s, "paper": {**lv, "dataset": pds}}
                )
        tables.append(table)
    return tables


def tables_markdown(title: str, tables: list[Table], preamble: list[str]) -> str:
    """The tables as one Markdown document; each note follows the first table it applies to."""
    lines = [f"# {title}", ""] + [f"- {p}" for p in preamble] + [""]
    said: set[str] = set()
    for t in tables:
        lines += [f"## {t.title}", ""]
        lines.append("| " + " | ".join(t.header) + " |")
        lines.append("|" + "|".join("---" if i < t.label_columns else "---:" for i in range(len(t.header))) + "|")
        for row in t.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        lines.append("")
        notes = [n for n in t.notes if n not in said]
        said.update(notes)
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# The job


def run_reproduce(cfg: ReproduceConfig, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run (or resume) a paper's grid for every seed, bench every model, and write `reproduce.{json,md}` in the
    output folder. Returns the result: config, schedule, per-seed records, the tables and the files written."""
    cfg.validate()
    sched = cfg.schedule()
    out = ensure_dir(cfg.out_dir())
    ctx = _Ctx(cfg=cfg, sched=sched, out=out, log=log)
    archs = tuple(cfg.archs or ARCHS[cfg.paper])
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    grid = _pacb_grid if cfg.paper == "pacb" else _cpsca_grid
    for seed in range(cfg.seeds):
        records += grid(ctx, seed, archs)
    t_train = time.perf_counter() - t0
    stage_dirs = list(dict.fromkeys(Path(r["stage_dir"]) for r in records))
    host = bench_stages(ctx, stage_dirs, "cpu")
    device = bench_stages(ctx, stage_dirs, cfg.device) if cfg.device != "cpu" else {}
    for r in records:
        r["host"] = _bench_fields(host.get(Path(r["stage_dir"])))
        if cfg.device != "cpu":
            r["device"] = _bench_fields(device.get(Path(r["stage_dir"])))
    if cfg.paper == "pacb":
        tables = pacb_tables(records, cfg.dataset, cfg.device)
    else:
        tables = cpsca_tables(records, cfg.dataset, cfg.device, default_ratios=cfg.ratios is None and not cfg.quick)
    failures = [
        f"{r['row']} seed {r['seed']} on {where}: {r[where]['error'] or r[where]['status']}"
        for r in records
        for where in ("host", "device")
        if where in r and r[where]["status"] not in ("ok", "low_accuracy")
    ]
    seeds = list(range(cfg.seeds))
    preamble = [
        f"paper: {PAPER_TITLES[cfg.paper]}",
        f"dataset: {cfg.dataset}; seeds: {', '.join(map(str, seeds))}"
        + ("; values are mean ± sample std over the seeds" if cfg.seeds > 1 else ""),
        f"settings: {'--quick (smoke-sized: not comparable to the paper)' if cfg.quick else 'full'}; "
        f"{sched.epochs} epochs + {sched.finetune_epochs} fine-tuning, width x{sched.width_mult:g}, "
        f"{'all images' if sched.limit is None else f'{sched.limit} images per split'}",
        f"latency: {'host CPU, ONNX Runtime' if cfg.device == 'cpu' else f'host CPU and {cfg.device}'}, batch 1, "
        f"p50 of {sched.bench_runs} runs after {sched.bench_warmup} warm-up",
    ] + [f"measurement failed: {f}" for f in failures]
    timings = {
        "grid_s": t_train,
        "total_s": time.perf_counter() - t0,
        "cells_computed": ctx.computed,
        "cells_cached": ctx.cached,
        "cell_wall_s": sum(
            float(s.get("wall_seconds", 0.0))
            for d in dict.fromkeys(ctx.cells)
            for s in json.loads((d / "metrics.json").read_text()).get("stages", {}).values()
        ),
    }
    paths = {"json": str(out / f"{RESULT_NAME}.json"), "md": str(out / f"{RESULT_NAME}.md")}
    result = {
        "paper": cfg.paper,
        "title": PAPER_TITLES[cfg.paper],
        "dataset": cfg.dataset,
        "paper_dataset": paper_dataset(cfg.paper, cfg.dataset),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
        "schedule": dataclasses.asdict(sched),
        "seeds": seeds,
        "preamble": preamble,
        "records": records,
        "tables": [t.to_dict() for t in tables],
        "paper_numbers": _paper_numbers(cfg.paper),
        "failures": failures,
        "timings": timings,
        "files": paths,
    }
    result = json.loads(json.dumps(result, default=str))  # what the JSON file holds (tuples become lists)
    atomic_write_json(paths["json"], result)
    atomic_write_text(paths["md"], tables_markdown(f"Reproduction of {PAPER_TITLES[cfg.paper]}", tables, preamble))
    return result


def _paper_numbers(paper: str) -> dict[str, Any]:
    if paper == "pacb":
        return {"tables_2_3": PACB_PAPER, "table_4_latency_ms": PACB_LATENCY_MS, "notes": list(PACB_NOTES)}
    return {"tables_4_5": CPSCA_PAPER, "notes": list(CPSCA_NOTES)}
