"""The schedules (budget presets) and experiment grids of `pacb-edge reproduce`.

A grid turns a `ReproduceConfig` and its `Schedule` into cells for one seed, runs them through the one cell engine
(`pacb_edge.studies.cells`) and returns one record per table row.

- `pacb`: for MobileNetV3-Large and RepVGG-A0, Base (the architecture's own attention: SE in MobileNetV3, none in
  RepVGG), Base+CA (sparsity-trained) and Base+CA+Pruned (bn-scale pruning of that very model, then fine-tuning).
- `cpsca`, budget `paper`: for VGG16 and ResNet56, the unpruned baseline, then L1-norm, Network Slimming, CPSE and
  CPSCA at each ratio. L1-norm prunes the plain model trained normally (also the baseline row); Slimming prunes the
  plain model trained with the L1 penalty on BN scales; CPSE prunes a model trained with SE, CPSCA one trained with
  SCA (the attention is removed when pruned). Each pruning is its own cell from a trained checkpoint, so a trained
  model serves every ratio and is never trained again.
- `cpsca`, budget `cpu`: the ordering experiment. One VGG16-SCA model (trained with sparsity, so Slimming's ranking
  is meaningful) is pruned by CPSCA, Slimming, L1-norm and random at 50 % and 80 % of the channels: only the channel
  choice differs between the rows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.names import DATASET_NAMES
from pacb_edge.core.runtimes import resolve_round_to
from pacb_edge.studies.cells import CellConfig, CellRunner
from pacb_edge.studies.paper_numbers import CPSCA_PAPER, PACB_VARIANTS
from pacb_edge.training.recipes import RECIPES, SMALL_IMAGE

PAPERS = ("pacb", "cpsca")
DATASETS = DATASET_NAMES  # every named dataset (not imagefolder: the papers' tables need a known one)
DEVICES = ("cpu", "jetson", "android")
BUDGETS = ("paper", "cpu")
ARCHS = {"pacb": ("mobilenetv3_large", "repvgg_a0"), "cpsca": ("vgg16", "resnet56")}
# Network Slimming's lambda: 1e-4 for plain CNNs (VGG, and PACB's default), 1e-5 for residual nets (ResNet).
SLIMMING_SPARSITY = {"vgg16": 1e-4, "resnet56": 1e-5}
PACB_SPARSITY = 1e-4
QUICK_CPSCA_RATIOS = (0.5,)
ORDERING_ARCH = "vgg16"
ORDERING_METHODS = ("sca-attention", "bn-scale", "l1-norm", "random")
ORDERING_RATIOS = (0.5, 0.8)


_CELL_FIELDS = {f.name for f in dataclasses.fields(CellConfig)}


@dataclass(frozen=True)
class Schedule:
    """Training, fine-tuning and bench settings of one budget; the defaults are the `paper` budget's.

    That is Network Slimming's reference schedule (CPSCA trains the same way; PACB's own schedule was lost in the text
    copy): SGD momentum 0.9, lr 0.1 divided by 10 at 50 % and 75 % of 160 epochs, weight decay 1e-4, batch 64, and
    fine-tuning with the same schedule. Meant for a GPU.
    """

    name: str = "paper"
    epochs: int = 160
    finetune_epochs: int = 160
    lr: float = 0.1
    finetune_lr: float = 0.1
    batch_size: int = 64
    weight_decay: float = 1e-4
    thin_weight_decay: float | None = None  # depthwise and attention weights (None: weight_decay)
    label_smoothing: float = 0.0
    augment: bool = True
    # a `pacb_edge.training.recipes` name whose stem each architecture takes (None: its own stem)
    recipe: str | None = None
    scheduler: str = "step"
    warmup_epochs: int = 0
    nesterov: bool = False
    width_mult: float = 1.0
    limit: int | None = None  # images per split (None = all)
    train_limit: int | None = None  # training images only; the test split stays whole (None = all)
    score_images: int = 10**9  # training images the attention criteria average over: all of them, as CPSCA
    bench_warmup: int = 20
    bench_runs: int = 100
    calibration_images: int = 300
    seeds: int = 1  # the default number of seeds

    def cell(self, cfg: ReproduceConfig, arch: str, attention: str | None, seed: int, **kw: Any) -> CellConfig:
        """The training cell of `arch` under this schedule; `kw` sets sparsity, criterion and prune_ratio."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in _CELL_FIELDS}
        if self.recipe is not None:
            shared["input_stem"] = RECIPES[self.recipe].stem_for(arch)
        data = {"dataset": cfg.dataset, "data_dir": cfg.data_dir, "download": cfg.download}
        return CellConfig(arch=arch, attention=attention, seed=seed, **data, **shared, **kw)

    def caption(self, seeds: int) -> str:
        """What was trained, in one line: the budget, data subset, width, epochs and seeds."""
        if self.limit is not None:
            data = f"{self.limit:,} images per split (seeded, class-balanced; the test split is cut too)"
        elif self.train_limit is not None:
            data = f"{self.train_limit:,} training images (seeded, class-balanced subset), the whole test split"
        else:
            data = "all training images, the whole test split"
        recipe = f"recipe {self.recipe}, " if self.recipe else ""
        recipe += "" if self.augment else "no augmentation, "
        return (
            f"budget {self.name}: {data}; width x{self.width_mult:g}; {self.epochs} epochs + {self.finetune_epochs} "
            f"fine-tuning ({recipe}SGD lr {self.lr:g} {self.scheduler}, batch {self.batch_size}); {seeds} seed(s)"
        )


PAPER = Schedule()
# The short-schedule settings of the cpu budgets (the demo's): 12 + 4 epochs, cosine with 1 warm-up epoch, Nesterov,
# weight decay 5e-4, 4,000 training images (400 per class, so validation holds 706), the whole test set, 3 seeds.
_CPU = dataclasses.replace(
    PAPER,
    name="cpu",
    epochs=12,
    finetune_epochs=4,
    finetune_lr=0.02,
    weight_decay=5e-4,
    scheduler="cosine",
    warmup_epochs=1,
    nesterov=True,
    width_mult=0.5,
    train_limit=4000,
    seeds=3,
)
# `pacb-edge reproduce pacb --dataset fashion-mnist --budget cpu` on a 2-core CPU in <= 90 minutes, the two cores
# training two grid parts (architecture x seed) side by side, one torch thread each: 6,000 training images (so
# 1,059 validation) and the small-image recipe of `pacb-edge train` (`pacb_edge.training.recipes`: the stride-1 stem for
# MobileNetV3, RepVGG keeping its own; batch 32 at lr 0.1; no weight decay on depthwise and attention weights),
# without augmentation: at this length the models under-fit, and the random crop cost the 12-epoch proxy 9.8 pp
# (77.80 -> 87.62 % without it; benchmarks/results/recipe_proxies). The preset before it (lr 0.05, ImageNet stems,
# random crop) took 65.9 min on 2026-11-30.
PACB_CPU = dataclasses.replace(
    _CPU,
    train_limit=6000,
    **SMALL_IMAGE.training_values(),
    finetune_lr=SMALL_IMAGE.lr / 5,
    augment=False,
    recipe=SMALL_IMAGE.name,
)
# `pacb-edge reproduce cpsca --dataset fashion-mnist --budget cpu` (benchmarks/cpsca_vgg16.sh): the short schedule
# (4,000 images, batch 64, lr 0.1) with VGG16 at width x0.25. Estimate ~60 min for 3 seeds on one thread, from the
# same kind of timing run (VGG16-SCA: 6.1 ms per training image per epoch at x0.25, 12.5 ms at x0.5): per seed,
# training 4,000 x 12 x 6.1 ms = 293 s, eight pruned fine-tunings (~2.5 ms per image, 4 epochs) 320 s, eight prune
# cells' data loading and evaluations ~280 s, nine ONNX exports and their bench ~270 s: ~20 min.
CPSCA_CPU = dataclasses.replace(_CPU, width_mult=0.25)
# A smoke-sized grid for CI: width 0.25, a few hundred images, a few epochs.
QUICK = dataclasses.replace(
    _CPU,
    name="quick",
    epochs=4,
    finetune_epochs=1,
    batch_size=32,
    warmup_epochs=0,
    width_mult=0.25,
    limit=256,
    train_limit=None,
    score_images=128,
    bench_warmup=3,
    bench_runs=15,
    calibration_images=32,
    seeds=1,
)
SCHEDULES = {
    ("pacb", "paper"): PAPER,
    ("pacb", "cpu"): PACB_CPU,
    ("cpsca", "paper"): PAPER,
    ("cpsca", "cpu"): CPSCA_CPU,
}


def paper_channel_ratio(params_pruned_pct: float) -> float:
    """The channel ratio that removes about `params_pruned_pct` % of conv params when every layer shrinks alike."""
    return round(1 - math.sqrt(1 - params_pruned_pct / 100), 2)


def default_cpsca_ratios(arch: str) -> tuple[float, ...]:
    """Channel ratios for the paper's CIFAR-10 pruning levels of `arch`."""
    return tuple(paper_channel_ratio(lv["params_pruned_pct"]) for lv in CPSCA_PAPER[arch]["cifar10"]["levels"])


def grid_archs(cfg: ReproduceConfig) -> tuple[str, ...]:
    """The architectures a grid trains: `--archs`, else the paper's (the cpsca cpu budget: VGG16 only)."""
    if cfg.archs:
        return tuple(cfg.archs)
    if cfg.paper == "cpsca" and cfg.budget != "paper":
        return (ORDERING_ARCH,)
    return ARCHS[cfg.paper]


def pacb_grid(cfg: ReproduceConfig, sched: Schedule, runner: CellRunner, seed: int) -> list[dict[str, Any]]:
    """Base, CA and CA_Pruned of each architecture for one seed."""
    lam = PACB_SPARSITY if cfg.sparsity is None else cfg.sparsity
    records = []
    for arch in grid_archs(cfg):
        base = runner.run(sched.cell(cfg, arch, None, seed), f"seed{seed}/{arch}_base")
        ca_cfg = sched.cell(cfg, arch, "ca", seed, sparsity=lam, criterion="bn-scale", prune_ratio=cfg.prune_ratio)
        ca = runner.run(ca_cfg, f"seed{seed}/{arch}_ca")
        cells = [
            (variant, cell, stage)
            for variant, cell, stage in zip(PACB_VARIANTS, (base, ca, ca), ("train", "train", "finetune"), strict=True)
        ]
        if cfg.latency_ratio is not None:  # the same seeded training, pruned to a measured latency instead
            latency_cfg = dataclasses.replace(ca_cfg, latency_ratio=cfg.latency_ratio)
            cells.append(("CA_Latency", runner.run(latency_cfg, f"seed{seed}/{arch}_ca_latency"), "finetune"))
        for variant, cell, stage in cells:
            records.append(
                {
                    "row": f"{arch}/{variant}",
                    "arch": arch,
                    "variant": variant,
                    "seed": seed,
                    "stage_dir": str(cell.dir / ("pruned" if stage == "finetune" else "base")),
                    **cell.measure(stage),
                    "sparsity": lam if variant != "Base" else 0.0,
                    "prune_ratio": cfg.prune_ratio if variant == "CA_Pruned" else None,
                    **({"latency": _latency_outcome(cell)} if variant == "CA_Latency" else {}),
                    **({"channel_multiple": _multiple(cell)} if stage == "finetune" else {}),
                }
            )
    return records


def proxy_multiple(width_mult: float, target: str = "onnxruntime") -> int:
    """The channel multiple of a CPSCA grid's prunes: the target runtime's (`--round-to auto`), scaled with the grid's
    width and rounded down to a power of two.

    The CPSCA tables compare criteria by the parameters they remove from the paper's networks. A width-x0.25 proxy
    of ResNet-56 has 4/8/16-channel stages; rounded up to onnxruntime's 16 (AVX-512) it could not be pruned at all,
    while the full-width network, rounded alike, keeps all but its 16-channel stage prunable. Scaling the multiple
    with the width keeps the proxy's pruning as the full-width network's would be. The PACB grids, which report
    latency, prune at the runtime's own multiple.
    """
    full, _ = resolve_round_to("auto", target)
    return max(1, 2 ** math.floor(math.log2(max(1.0, full * width_mult))))


def _multiple(cell) -> int | None:
    """The channel multiple a pruned cell's widths were rounded up to (None for cells made before it was recorded)."""
    return (cell.metrics["stages"].get("prune", {}).get("alignment") or {}).get("multiple")


def _latency_outcome(cell) -> dict[str, Any]:
    """What a latency-budget cell's prune measured: budget, measured and predicted latency, whether it was met."""
    lat = cell.metrics["stages"]["prune"].get("latency") or {}
    keys = ("met", "budget_ms", "measured_ms", "predicted_ms", "latency_ratio", "macs_ratio", "runtime", "threads")
    return {k: lat.get(k) for k in keys}


def cpsca_grid(cfg: ReproduceConfig, sched: Schedule, runner: CellRunner, seed: int) -> list[dict[str, Any]]:
    """The baseline and every method at every ratio, for one seed: the paper's grid or the ordering experiment."""
    records = []
    multiple = proxy_multiple(sched.width_mult)
    for arch in grid_archs(cfg):
        lam = SLIMMING_SPARSITY[arch] if cfg.sparsity is None else cfg.sparsity
        if cfg.budget == "paper":
            plain = runner.run(sched.cell(cfg, arch, None, seed), f"seed{seed}/{arch}_plain")
            sources = {
                "l1-norm": plain,
                "bn-scale": runner.run(sched.cell(cfg, arch, None, seed, sparsity=lam), f"seed{seed}/{arch}_slimming"),
                "se-attention": runner.run(sched.cell(cfg, arch, "se", seed), f"seed{seed}/{arch}_se"),
                "sca-attention": runner.run(sched.cell(cfg, arch, "sca", seed), f"seed{seed}/{arch}_sca"),
            }
        else:
            plain = runner.run(sched.cell(cfg, arch, "sca", seed, sparsity=lam), f"seed{seed}/{arch}_sca_sparse")
            sources = dict.fromkeys(ORDERING_METHODS, plain)
        base = {"row": f"{arch}/baseline", "arch": arch, "method": "baseline", "ratio": None, "seed": seed}
        records.append({**base, "stage_dir": str(plain.dir / "base"), **plain.measure("train")})
        for ratio in cfg.cpsca_ratios(arch):
            for method, source in sources.items():
                pruned = source.config.pruned(method, ratio, round_to=multiple)
                cell = runner.run(pruned, f"seed{seed}/{arch}_{method}_r{ratio:.2f}", source=source)
                records.append(
                    {
                        "row": f"{arch}/{method}/{ratio:.2f}",
                        "arch": arch,
                        "method": method,
                        "ratio": ratio,
                        "seed": seed,
                        "stage_dir": str(cell.model_dir),
                        "source_dir": str(source.dir / "base"),
                        **cell.measure(),
                        "sparsity": source.config.sparsity,
                        "channel_multiple": _multiple(cell),
                    }
                )
    baselines = {r["arch"]: r for r in records if r["method"] == "baseline"}
    for r in records:
        b = baselines[r["arch"]]
        r["params_pruned"] = 1 - r["params"] / b["params"]
        r["flops_pruned"] = 1 - r["flops"] / b["flops"]
        r["acc_change_pp"] = 100 * (r["test_top1"] - b["test_top1"])
    return records


GRIDS = {"pacb": pacb_grid, "cpsca": cpsca_grid}


@dataclass
class ReproduceConfig:
    """What `pacb-edge reproduce` was asked to do. None means the budget's (or --quick's) default."""

    paper: str
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False  # let torchvision fetch the dataset into data_dir
    out: Path | None = None  # default runs/reproduce_<paper>_<dataset>[_cpu][_quick]
    budget: str = "paper"  # paper (the papers' schedule, for a GPU) or cpu (sized for a 2-core CPU)
    quick: bool = False  # a smoke-sized schedule, whatever the budget
    seeds: int | None = None
    prune_ratio: float = 0.3  # pacb: bn-scale ratio of the CA model
    # pacb: also prune the CA model to this share of its measured onnxruntime latency (one thread): CA_Latency rows
    latency_ratio: float | None = None
    ratios: tuple[float, ...] | None = None  # cpsca: channel ratios (default: the paper's levels, or the budget's)
    epochs: int | None = None
    finetune_epochs: int | None = None
    sparsity: float | None = None  # lambda; default 1e-4 (pacb), 1e-4 VGG16 / 1e-5 ResNet56 (cpsca Slimming)
    width_mult: float | None = None
    limit: int | None = None
    train_limit: int | None = None
    archs: tuple[str, ...] | None = None  # a subset of the paper's architectures
    device: str = "cpu"
    jetson: dict[str, Any] = field(default_factory=dict)  # JetsonRunner options: host, port, remote_dir, ...
    android: dict[str, Any] = field(default_factory=dict)  # AndroidRunner options: serial, benchmark_binary, ...
    threads: int | None = None  # torch threads in all (default: all cores): the host bench's, split over the jobs
    jobs: int | None = None  # grid parts (one architecture, one seed) trained side by side (default: one per thread)
    bench_runs: int | None = None
    progress: bool = True

    def validate(self) -> None:
        """Refuse what cannot run, with a one-line `PacbEdgeError`."""
        for what, value, known in (
            ("paper", self.paper, PAPERS),
            ("budget", self.budget, BUDGETS),
            ("device", self.device, DEVICES),
        ):
            if value not in known:
                raise PacbEdgeError(f"unknown {what} {value!r}; choose one of {', '.join(known)}")
        if self.dataset not in DATASETS:
            raise PacbEdgeError(f"unknown dataset {self.dataset!r} for reproduce; choose one of {', '.join(DATASETS)}")
        if self.device == "jetson" and not self.jetson.get("host"):
            raise PacbEdgeError("--device jetson needs --host user@ip")
        for r in [self.prune_ratio, *(self.ratios or ())]:
            if not 0 < r < 1:
                raise PacbEdgeError(f"pruning ratios must be in (0, 1), got {r}")
        if self.latency_ratio is not None and not 0 < self.latency_ratio < 1:
            raise PacbEdgeError(f"--latency-ratio must be in (0, 1), got {self.latency_ratio}")
        if self.ratios is not None and not self.ratios:
            raise PacbEdgeError("--ratios is empty")
        for name, v in (
            ("--seeds", self.seeds),
            ("--epochs", self.epochs),
            ("--finetune-epochs", self.finetune_epochs),
            ("--limit", self.limit),
            ("--train-limit", self.train_limit),
            ("--jobs", self.jobs),
        ):
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
        """The budget's schedule (or --quick's), with this config's overrides."""
        s = QUICK if self.quick else SCHEDULES[(self.paper, self.budget)]
        overrides = {
            "epochs": self.epochs,
            "finetune_epochs": self.finetune_epochs,
            "width_mult": self.width_mult,
            "limit": self.limit,
            "train_limit": self.train_limit,
            "bench_runs": self.bench_runs,
            "seeds": self.seeds,
        }
        return dataclasses.replace(s, **{k: v for k, v in overrides.items() if v is not None})

    def out_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        budget = "" if self.budget == "paper" else f"_{self.budget}"
        return Path("runs") / f"reproduce_{self.paper}_{self.dataset}{budget}{'_quick' if self.quick else ''}"

    def cpsca_ratios(self, arch: str) -> tuple[float, ...]:
        if self.ratios is not None:
            return tuple(self.ratios)
        if self.budget == "cpu":
            return ORDERING_RATIOS
        return QUICK_CPSCA_RATIOS if self.quick else default_cpsca_ratios(arch)

    def measurements(self) -> dict[str, tuple[str, str]]:
        """What is benched for each record: {record field: (device, artifact kind)}."""
        where = {"host": ("cpu", "onnx")}
        if self.paper == "pacb":
            where["host_int8"] = ("cpu", "tflite-int8")
        if self.device != "cpu":
            where["device"] = (self.device, "trt-bundle" if self.device == "jetson" else "tflite-int8")
        return where
