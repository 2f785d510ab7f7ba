"""The trainer: SGD/AdamW, cosine/step LR with warm-up, label smoothing, Network-Slimming sparsity, resumable
checkpoints, rich progress, JSONL/CSV metrics, and DDP under `torchrun`.

Determinism: batches come from a `DistributedSampler` seeded by (seed, epoch) in every mode, so one process and N DDP
processes see the same global batches, and a resumed run replays the RNG state saved at the last epoch boundary.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_path, atomic_write_text
from pacb_edge.models.attention import ChannelAttentionBase
from pacb_edge.models.spec import ModelSpec
from pacb_edge.training.checkpoint import save_checkpoint

STATE_NAME = "train_state.pt"
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "step")
MAX_WARMUP_SHARE = 0.2  # the longest warm-up, as a share of the run's steps


@dataclass
class TrainConfig:
    """Trainer settings; `sparsity` is Network Slimming's lambda for the L1 penalty on BN scaling factors."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # Weight decay of depthwise convs and attention-module weights (None: `weight_decay`). These layers hold few
    # weights each; decaying them as hard as a dense conv shrinks the per-channel filters and the attention gates.
    thin_weight_decay: float | None = None
    scheduler: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    sparsity: float = 0.0
    amp: bool = True
    channels_last: bool = True
    sync_bn: bool = False
    seed: int = 0
    num_workers: int = 0
    augment: bool = True
    stop_after_epochs: int | None = None  # end this invocation early (tests simulate an interrupt with it)

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise PacbEdgeError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise PacbEdgeError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise PacbEdgeError("epochs must be >= 0, batch size >= 1 and lr > 0")
        if self.sparsity < 0:
            raise PacbEdgeError(f"--sparsity must be >= 0, got {self.sparsity}")
        if self.weight_decay < 0 or (self.thin_weight_decay is not None and self.thin_weight_decay < 0):
            raise PacbEdgeError("weight decay must be >= 0")


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistInfo:
    """Join the process group when started by `torchrun` (gloo on CPU, nccl on CUDA); otherwise one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return DistInfo(device=torch.device("cuda" if cuda else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def seed_everything(seed: int) -> None:
    """Seed every RNG and ask torch for its deterministic algorithms, so one seed gives one result on one machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def _seed_worker(worker_id: int) -> None:
    """DataLoader workers draw their augmentation from a seed derived from the loader's seeded generator."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def prunable_batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """BatchNorm layers whose channels structural pruning removes: all but those inside attention modules."""
    inside_attention = set()
    for m in model.modules():
        if isinstance(m, ChannelAttentionBase):
            inside_attention.update(id(x) for x in m.modules())
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in inside_attention]


def add_sparsity_subgradient(bns: Iterable[nn.BatchNorm2d], lam: float) -> None:
    """Add lambda * sign(gamma) to each BN scale's gradient: the subgradient of lambda * sum|gamma| (Network
    Slimming)."""
    for bn in bns:
        if bn.weight is not None and bn.weight.grad is not None:
            bn.weight.grad.add_(torch.sign(bn.weight.detach()), alpha=lam)


def bn_gamma_l1(model: nn.Module) -> float:
    """Mean |gamma| over the prunable BN layers (what sparsity training drives down)."""
    gammas = [bn.weight.detach().abs().flatten() for bn in prunable_batchnorms(model) if bn.weight is not None]
    return float(torch.cat(gammas).mean()) if gammas else 0.0


def thin_parameters(model: nn.Module) -> set[int]:
    """ids of the weights of depthwise convs (groups == in_channels > 1) and of attention modules."""
    ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, ChannelAttentionBase):
            ids.update(id(p) for p in m.parameters())
        elif isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
            ids.add(id(m.weight))
    return ids


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW with three weight-decay groups: dense weights (`weight_decay`), depthwise and attention weights
    (`thin_weight_decay`), and BN scales/shifts and biases (none)."""
    thin_decay = cfg.weight_decay if cfg.thin_weight_decay is None else cfg.thin_weight_decay
    thin = thin_parameters(model) if thin_decay != cfg.weight_decay else set()
    decay, thin_group, no_decay = [], [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else thin_group if id(p) in thin else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if thin_group:
        groups.append({"params": thin_group, "weight_decay": thin_decay})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Per-step LR: linear warm-up, then cosine to zero or step decay at `milestones` (fractions of training).

    The warm-up never takes more than `MAX_WARMUP_SHARE` of the run: a 1-epoch warm-up in a 3-epoch run would spend a
    third of the steps below the peak LR and leave the cosine two epochs to do all the learning.
    """
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(cfg.warmup_epochs * steps_per_epoch, int(MAX_WARMUP_SHARE * total))
    milestones = [int(m * total) for m in cfg.milestones]

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return cfg.gamma ** sum(step >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, cfg: TrainConfig, info: DistInfo):
    sampler = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=cfg.seed, drop_last=False
    )
    per_rank = max(1, batch_size // info.world_size) if shuffle else batch_size
    loader = DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=info.device.type == "cuda",
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(cfg.seed + info.rank),
    )
    return loader, sampler


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, num_classes: int, batch_size: int = 256, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Top-1 accuracy, mean cross-entropy and the confusion matrix of `model` on `dataset` (single process)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    loss_sum, n = 0.0, 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        logits = model(x).float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        pred = logits.argmax(1)
        confusion += torch.bincount((y * num_classes + pred).cpu(), minlength=num_classes**2).view(num_classes, -1)
        n += len(y)
    model.train(was_training)
    correct = int(confusion.diag().sum())
    return {"top1": correct / max(n, 1), "loss": loss_sum / max(n, 1), "n": n, "confusion": confusion.tolist()}


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": repr(random.getstate()),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(ast.literal_eval(state["python"]))


def save_train_state(
    path: Path, model: nn.Module, optimizer, scheduler, scaler, epoch: int, history: list[dict], cfg: TrainConfig
) -> None:
    """Everything `--resume` needs, saved atomically; loaded back with `weights_only=True` (no arbitrary pickle)."""
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": _rng_state(),
        "history_json": json.dumps(history),
        "config_json": json.dumps(asdict(cfg)),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_train_state(path: Path) -> dict[str, Any]:
    """Read a resume state written by `save_train_state`; a damaged file is a one-line user error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PacbEdgeError(f"resume state {path} is corrupt or truncated ({type(e).__name__})") from None


def _write_metrics(out_dir: Path, history: list[dict]) -> None:
    atomic_write_text(out_dir / "history.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    buf = io.StringIO()
    if history:
        writer = csv.DictWriter(buf, fieldnames=list(history[0].keys()))
        writer.writeheader()
        writer.writerows(history)
    atomic_write_text(out_dir / "history.csv", buf.getvalue())


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    spec: ModelSpec,
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    description: str = "train",
    on_epoch_end: Callable[[dict], None] | None = None,
) -> tuple[nn.Module, list[dict]]:
    """Train `model` and leave `out_dir/model.safetensors` + `spec.json`, `history.{jsonl,csv}` and a resume state.

    Returns the trained (unwrapped) model and the per-epoch history.
    """
    cfg.validate()
    out_dir = Path(out_dir)
    info = setup_distributed()
    state_path = out_dir / STATE_NAME
    if resume and not state_path.is_file():
        raise PacbEdgeError(f"--resume: no checkpoint to resume from in {out_dir} (expected {STATE_NAME})")
    seed_everything(cfg.seed)
    model = model.to(info.device)
    use_cuda = info.device.type == "cuda"
    if cfg.channels_last and use_cuda:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and info.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not cfg.augment and getattr(train_set, "augment", None) is not None:
        train_set = copy.copy(train_set)
        train_set.augment = None
    train_loader, sampler = _loader(train_set, cfg.batch_size, True, cfg, info)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(train_loader))
    scaler = torch.amp.GradScaler("cuda") if (cfg.amp and use_cuda) else None
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    sparse_bns = prunable_batchnorms(model) if cfg.sparsity > 0 else []
    history: list[dict] = []
    start_epoch = 0
    if resume:
        state = load_train_state(state_path)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError:
            raise PacbEdgeError(f"resume state {state_path} belongs to a different model") from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        history = json.loads(state["history_json"])
        start_epoch = int(state["epoch"])
    ddp_model = model
    if info.world_size > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[info.device] if use_cuda else None)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pacb_edge.core.consoles import stderr_console

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
        console=stderr_console(),
        disable=not (progress and info.is_main),
        transient=False,
    )
    end_epoch = cfg.epochs if cfg.stop_after_epochs is None else min(cfg.epochs, start_epoch + cfg.stop_after_epochs)
    with bar:
        task = bar.add_task(
            description, total=cfg.epochs * len(train_loader), completed=start_epoch * len(train_loader), stats=""
        )
        for epoch in range(start_epoch, end_epoch):
            sampler.set_epoch(epoch)
            ddp_model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), dtype=torch.float64)
            correct = torch.zeros((), dtype=torch.float64)
            seen = torch.zeros((), dtype=torch.float64)
            for x, y in train_loader:
                x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
                if cfg.channels_last and use_cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=info.device.type, enabled=scaler is not None):
                    logits = ddp_model(x)
                    loss = criterion(logits, y)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if sparse_bns:
                    add_sparsity_subgradient(sparse_bns, cfg.sparsity)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += float((logits.detach().argmax(1) == y).sum())
                seen += len(y)
                elapsed = time.perf_counter() - t0
                bar.update(
                    task,
                    advance=1,
                    stats=(
                        f"ep {epoch + 1}/{cfg.epochs} loss {float(loss_sum / seen):.3f} "
                        f"acc {100 * float(correct / seen):.1f}% "
                        f"{float(seen) * info.world_size / max(elapsed, 1e-9):.0f} img/s"
                    ),
                )
            if info.world_size > 1:
                for t in (loss_sum, correct, seen):
                    dist.all_reduce(t)
            wall = time.perf_counter() - t0
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": float(loss_sum / seen),
                "train_top1": float(correct / seen),
                "epoch_seconds": wall,
                "imgs_per_s": float(seen) / max(wall, 1e-9),
                "bn_gamma_l1": bn_gamma_l1(model),
            }
            if info.is_main:
                val = evaluate(model, val_set, spec.num_classes, device=info.device)
                record.update(val_loss=val["loss"], val_top1=val["top1"])
                history.append(record)
                save_checkpoint(model, spec, out_dir)
                save_train_state(state_path, model, optimizer, scheduler, scaler, epoch + 1, history, cfg)
                _write_metrics(out_dir, history)
                if on_epoch_end is not None:
                    on_epoch_end(record)
            else:
                history.append(record)
            if info.world_size > 1:
                dist.barrier()
    if info.is_main and not history:
        save_checkpoint(model, spec, out_dir)
    return model, history
