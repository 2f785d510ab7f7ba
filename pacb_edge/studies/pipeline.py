"""The `pacb-edge train` pipeline: train (with sparsity) -> score -> prune structurally -> fine-tune -> evaluate.

The run directory holds `base/` and `pruned/` checkpoints (safetensors + spec), `metrics.json` with every stage's
accuracy, params, FLOPs, MACs, per-layer widths, wall time and the exact command, and the plots.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_json, ensure_dir

STAGES = ("all", "train", "prune", "finetune", "eval")


@dataclass
class RunOptions:
    """What `pacb-edge train` was asked to do."""

    model: str = "mobilenetv3_large"
    attention: str | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    input_size: int = 32
    input_stem: str | None = None
    width_mult: float = 1.0
    grayscale_to_rgb: bool = False
    limit: int | None = None
    train_limit: int | None = None
    threads: int | None = None  # torch's intra-op threads, fixed for the run (default: all cores)
    out: Path = Path("runs/default")
    stage: str = "all"
    checkpoint: Path | None = None
    resume: bool = False
    progress: bool = True
    score_images: int = 2048
    command: str = ""
    train: Any = None  # TrainConfig
    finetune: Any = None  # TrainConfig
    prune: Any = None  # PruneConfig, or None for no pruning
    # Pruning to a latency budget (`latency_profile.LatencyBudget`) measured on `latency_target`
    # (`latency_profile.LatencyTargetOptions`), with the latency table at `latency_table` (default: in the run).
    latency: Any = None
    latency_target: Any = None
    latency_table: Path | None = None
    attention_kwargs: dict[str, Any] = field(default_factory=dict)
    # The defaults' recipe (`pacb_edge.training.recipes`) and the values the run took, recorded in the model spec.
    recipe: dict[str, Any] = field(default_factory=dict)


def pin_threads(threads: int | None) -> int:
    """Fix torch's intra-op thread count (all cores unless given): one count, one summation order, one result."""
    import os

    import torch

    n = int(threads) if threads else (os.cpu_count() or 1)
    if n < 1:
        raise PacbEdgeError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(n)
    return n


def _read_metrics(out: Path) -> dict[str, Any]:
    path = out / "metrics.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def _model_facts(model, spec) -> dict[str, Any]:
    from pacb_edge.models.counting import count_flops, count_params, layer_widths

    counts = count_flops(model, spec.input_size, spec.in_chans)
    return {
        "params": count_params(model),
        "macs": counts["macs"],
        "flops": counts["flops"],
        "widths": layer_widths(model),
    }


def _evaluate_stage(model, spec, bundle, out_dir: Path, title: str) -> dict[str, Any]:
    from pacb_edge.core.plots import plot_confusion_matrix
    from pacb_edge.training.trainer import evaluate

    test = evaluate(model, bundle.test, spec.num_classes)
    val = evaluate(model, bundle.val, spec.num_classes)
    plot_confusion_matrix(test["confusion"], spec.class_names, out_dir / "confusion.png", title=f"{title} (test)")
    return {
        "test_top1": test["top1"],
        "val_top1": val["top1"],
        "test_loss": test["loss"],
        "n_test": test["n"],
        "confusion": test["confusion"],
    }


def _fit_stage(
    model, spec, bundle, opts: RunOptions, stage: str, out: Path, title: str, is_main: bool
) -> dict[str, Any]:
    """Train (`stage` "train") or fine-tune the model into `out`, then (on the main process) plot its curves and
    evaluate it: the stage's record; {} on the other DDP processes."""
    from pacb_edge.core.plots import plot_training_curves
    from pacb_edge.training.trainer import fit

    cfg = opts.train if stage == "train" else opts.finetune
    verb = "train" if stage == "train" else "fine-tune"
    model, history = fit(
        model,
        bundle.train,
        bundle.val,
        spec,
        cfg,
        out,
        resume=opts.resume,
        progress=opts.progress,
        description=f"{verb} {spec.arch}",
    )
    if not is_main:
        return {}
    if history:
        plot_training_curves(history, out / "curves.png", title=title)
    label = f"{spec.arch} base" if stage == "train" else f"{spec.arch} pruned+fine-tuned"
    return {**_evaluate_stage(model, spec, bundle, out, label), **_model_facts(model, spec), "epochs": cfg.epochs}


def _initial_spec(opts: RunOptions, bundle, split_record: dict[str, Any]):
    from pacb_edge.models import ModelSpec

    return ModelSpec(
        arch=opts.model,
        num_classes=len(bundle.class_names),
        in_chans=bundle.in_chans,
        attention=opts.attention,
        width_mult=opts.width_mult,
        input_size=opts.input_size,
        input_stem=opts.input_stem,
        attention_kwargs=dict(opts.attention_kwargs),
        mean=tuple(bundle.mean),
        std=tuple(bundle.std),
        class_names=list(bundle.class_names),
        dataset=bundle.name,
        split=split_record,
        recipe=dict(opts.recipe),
    )


def latency_table_path(opts: RunOptions) -> Path:
    from pacb_edge.studies.latency_profile import table_name

    return Path(opts.latency_table) if opts.latency_table else Path(opts.out) / table_name(opts.latency_target.target)


def _latency_preflight(opts: RunOptions, bundle, split_record: dict[str, Any], stages: list[str], log):
    """Before anything is trained or written: the latency table of the model this run will prune (found, or
    profiled now; latency does not depend on the weights) and the budget checked against its measured floor.
    Returns (table, whether it still needs saving)."""
    from pacb_edge.models import create_model
    from pacb_edge.studies.latency_profile import ProfileConfig, check_floor, table_for
    from pacb_edge.training.checkpoint import load_checkpoint

    base = Path(opts.out) / "base"
    source = opts.checkpoint if (opts.stage == "prune" and opts.checkpoint) else None
    if source is not None or ("train" not in stages and (base / "model.safetensors").is_file()):
        model, spec = load_checkpoint(source or base)
    else:
        spec = _initial_spec(opts, bundle, split_record)
        model = create_model(spec.arch, **spec.model_kwargs()).eval()
    profile = ProfileConfig(
        criterion=opts.prune.criterion,
        min_channels=opts.prune.min_channels,
        round_to=opts.prune.round_to,
        seed=opts.train.seed,
    )
    calibration = latency_calibration(bundle, opts.train.seed)
    table, fresh = table_for(
        model,
        spec,
        calibration,
        profile,
        opts.latency_target,
        latency_table_path(opts),
        explicit=opts.latency_table is not None,
        log=log,
        command=opts.command,
    )
    check_floor(table, opts.latency)
    return table, fresh


def latency_calibration(bundle, seed: int):
    """A few real training images as raw pixels: what an INT8 candidate is calibrated on while profiling."""
    import numpy as np

    return bundle.calibration_images(32, seed=seed, raw=True).astype(np.float32)


def run_pipeline(opts: RunOptions, before_write=lambda: None, log=lambda _: None) -> dict[str, Any]:
    """Run the requested stage(s); returns the updated metrics dict (also written to `out/metrics.json`).

    Every check that can refuse the run (a latency budget under its floor included) happens before the run
    directory is made; `before_write()` is called then, before the first file is written."""
    from pacb_edge.data.datasets import load_dataset
    from pacb_edge.models import create_model
    from pacb_edge.training.checkpoint import load_checkpoint, save_checkpoint
    from pacb_edge.training.trainer import seed_everything, setup_distributed

    if opts.stage not in STAGES:
        raise PacbEdgeError(f"unknown stage {opts.stage!r}; choose one of {', '.join(STAGES)}")
    if opts.latency is not None:
        opts.latency.validate()
        opts.latency_target.validate()
    info = setup_distributed()
    threads = pin_threads(opts.threads)
    bundle = load_dataset(
        opts.dataset,
        data_dir=opts.data_dir,
        download=opts.download,
        input_size=opts.input_size,
        grayscale_to_rgb=opts.grayscale_to_rgb,
        seed=opts.train.seed,
        limit=opts.limit,
        train_limit=opts.train_limit,
    )
    split_record = bundle.split_record()
    stages = ["train", "prune", "finetune", "eval"] if opts.stage == "all" else [opts.stage]
    if opts.prune is None:
        stages = [s for s in stages if s not in ("prune", "finetune")]
    table = None
    if opts.latency is not None and "prune" in stages and info.is_main:
        table, fresh = _latency_preflight(opts, bundle, split_record, stages, log)
    out = ensure_dir(opts.out)
    before_write()
    if table is not None and fresh:
        table.save(latency_table_path(opts))
    metrics = _read_metrics(out)
    metrics.setdefault("stages", {})
    metrics["command"] = opts.command
    metrics["seed"] = opts.train.seed
    metrics["threads"] = threads
    metrics["dataset"] = {
        "name": bundle.name,
        "n_train": len(bundle.train),
        "n_val": len(bundle.val),
        "n_test": len(bundle.test),
        "classes": len(bundle.class_names),
        "split": split_record,
    }
    base_dir, pruned_dir = out / "base", out / "pruned"

    def load_on_this_split(source):
        """A checkpoint that this run trains, prunes or fine-tunes further: its spec records this run's split."""
        model, spec = load_checkpoint(source, expect_num_classes=len(bundle.class_names))
        return model, dataclasses.replace(spec, split=split_record)

    def save_metrics() -> None:
        if info.is_main:
            atomic_write_json(out / "metrics.json", metrics)

    for stage in stages:
        t0 = time.perf_counter()
        if stage == "train":
            seed_everything(opts.train.seed)  # the initial weights come from the seed too, not from earlier RNG use
            spec = _initial_spec(opts, bundle, split_record)
            model = create_model(spec.arch, **spec.model_kwargs())
            if opts.checkpoint is not None:
                model, spec = load_on_this_split(opts.checkpoint)
            done = _fit_stage(
                model, spec, bundle, opts, "train", base_dir, f"{spec.arch} ({spec.attention})", info.is_main
            )
            if not info.is_main:
                continue
            record = {**done, "sparsity": opts.train.sparsity, "train": dataclasses.asdict(opts.train)}
        elif stage == "prune":
            if not info.is_main:
                continue
            from pacb_edge.pruning.pruner import prune_model

            source = opts.checkpoint if (opts.stage == "prune" and opts.checkpoint) else base_dir
            model, spec = load_on_this_split(source)
            images = bundle.calibration_images(min(opts.score_images, len(bundle.train)), seed=opts.train.seed)
            if table is not None:
                from pacb_edge.studies.latency_profile import prune_to_latency

                pruned, pruned_spec, report = prune_to_latency(
                    model,
                    spec,
                    opts.prune,
                    opts.latency,
                    table,
                    opts.latency_target,
                    latency_calibration(bundle, opts.train.seed),
                    score_images=images,
                    log=log,
                )
            else:
                pruned, pruned_spec, report = prune_model(model, spec, opts.prune, score_images=images)
            save_checkpoint(pruned, pruned_spec, pruned_dir)
            for name in ("train_state.pt",):  # a fresh prune invalidates an older fine-tune's resume state
                (pruned_dir / name).unlink(missing_ok=True)
            record = {
                **_evaluate_stage(pruned, pruned_spec, bundle, pruned_dir, f"{spec.arch} pruned"),
                **_model_facts(pruned, pruned_spec),
                **{
                    k: report[k]
                    for k in (
                        "criterion",
                        "config",
                        "removed_channels",
                        "prunable_channels",
                        "removed_fraction",
                        "removed_modules",
                        "flops_ratio",
                        "params_ratio",
                        "alignment",
                    )
                },
                **({"latency": report["latency"]} if "latency" in report else {}),
                "widths_before": report["before"]["widths"],
            }
        elif stage == "finetune":
            source = opts.checkpoint if (opts.stage == "finetune" and opts.checkpoint) else pruned_dir
            model, spec = load_on_this_split(source)
            model.train()
            record = _fit_stage(
                model, spec, bundle, opts, "finetune", pruned_dir, f"{spec.arch} pruned, fine-tuned", info.is_main
            )
            if not info.is_main:
                continue
        else:  # eval
            if not info.is_main:
                continue
            record = {}
            targets = (
                [("checkpoint", Path(opts.checkpoint))]
                if opts.checkpoint
                else [
                    (name, d)
                    for name, d in (("base", base_dir), ("pruned", pruned_dir))
                    if (d / "model.safetensors").is_file()
                ]
            )
            if not targets:
                raise PacbEdgeError(f"nothing to evaluate: no checkpoint in {base_dir} or {pruned_dir}")
            for name, path in targets:
                model, spec = load_checkpoint(path, expect_num_classes=len(bundle.class_names))
                stage_dir = path if path.is_dir() else path.parent
                record[name] = {
                    **_evaluate_stage(model, spec, bundle, stage_dir, f"{spec.arch} {name}"),
                    **_model_facts(model, spec),
                }
        record["wall_seconds"] = time.perf_counter() - t0
        record["command"] = opts.command
        metrics["stages"][stage] = record
        save_metrics()
    return metrics
