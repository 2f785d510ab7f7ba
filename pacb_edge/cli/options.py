"""The command line's options turned into the library's configurations: what `pacb-edge train`, `bench` and
`reproduce` hand to `run_pipeline`, `run_bench` and `run_reproduce`. Each takes the command's parameters as a dict
(typer's `ctx.params`), so the command itself only parses and calls.

Heavy libraries are imported inside the functions (the CLI module imports this one at start-up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError


def split_csv(value: str) -> list[str]:
    """`a, b,,c` -> [a, b, c]."""
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_layer_ratios(values: list[str]) -> dict[str, float]:
    """`--layer-ratio NAME=RATIO` (repeatable) -> {NAME: RATIO}."""
    ratios = {}
    for item in values:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            ratios[name.strip()] = float(value)
        except ValueError:
            raise PacbEdgeError(f"--layer-ratio expects NAME=RATIO, got {item!r}") from None
    return ratios


def ssh_options(
    host: str | None, port: int | None, ssh_config: str | None, identity: str | None, remote_dir: str, python: str
) -> dict[str, Any]:
    """The Jetson connection, as both `export --target trt --host` and `bench --device jetson` take it (`SSHTarget`
    expands `~` in the file paths)."""
    return {
        "host": host,
        "port": port,
        "ssh_config": ssh_config,
        "identity_file": identity,
        "remote_dir": remote_dir,
        "python": python,
    }


MIN_INPUT_SIZE = 8  # the smallest input every stem takes (`pacb-edge models` refuses less too)


def check_run_ranges(p: dict[str, Any]) -> None:
    """Every `train` option with a range, checked whether or not its stage runs, before anything is written."""
    from pacb_edge.models import list_attentions, list_models

    if p["input_size"] is not None and p["input_size"] < MIN_INPUT_SIZE:
        raise PacbEdgeError(f"--input-size must be at least {MIN_INPUT_SIZE}, got {p['input_size']}")
    if p["width_mult"] <= 0:
        raise PacbEdgeError(f"--width-mult must be positive, got {p['width_mult']:g}")
    if p["prune_ratio"] is not None and not 0 <= p["prune_ratio"] < 1:
        raise PacbEdgeError(f"--prune-ratio must be in [0, 1), got {p['prune_ratio']:g}")
    if p["model"] not in list_models():
        raise PacbEdgeError(
            f"unknown model {p['model']!r}; see `pacb-edge models` (e.g. {', '.join(list_models()[:4])})"
        )
    attention = p["attention"]
    if attention not in (None, "none", "") and attention not in list_attentions():
        raise PacbEdgeError(f"unknown attention {attention!r}; choose one of none, {', '.join(list_attentions())}")


def run_options(p: dict[str, Any], command: str):  # -> pacb_edge.studies.pipeline.RunOptions
    """`pacb-edge train`'s options as the pipeline's `RunOptions` (training, fine-tuning and pruning configs)."""
    from pacb_edge.pruning.pruner import PruneConfig
    from pacb_edge.studies.pipeline import RunOptions
    from pacb_edge.training.recipes import recipe_for
    from pacb_edge.training.trainer import TrainConfig

    recipe = recipe_for(p["input_size"])
    r = {k: (p[k] if p.get(k) is not None else v) for k, v in recipe.as_dict(p["model"]).items()}
    common = {
        "batch_size": r["batch_size"],
        "optimizer": p["optimizer"],
        "momentum": p["momentum"],
        "nesterov": p["nesterov"],
        "weight_decay": r["weight_decay"],
        "thin_weight_decay": r["thin_weight_decay"],
        "scheduler": p["scheduler"],
        "label_smoothing": r["label_smoothing"],
        "augment": p["augment"],
        "amp": p["amp"],
        "channels_last": p["channels_last"],
        "sync_bn": p["sync_bn"],
        "seed": p["seed"],
        "num_workers": p["workers"],
    }
    train = TrainConfig(
        epochs=p["epochs"], lr=r["lr"], sparsity=p["sparsity"], warmup_epochs=r["warmup_epochs"], **common
    )
    finetune = TrainConfig(
        epochs=p["finetune_epochs"], lr=p["finetune_lr"] or r["lr"] / 5, warmup_epochs=0, sparsity=0.0, **common
    )
    check_run_ranges(p)
    prune = None
    budget = p["latency_budget"] is not None or p["latency_ratio"] is not None
    latency = target = None
    if p["prune"] != "none":
        given = p["prune_ratio"] is not None or p["prune_threshold"]
        if budget and (given or p["layer_ratio"]):
            raise PacbEdgeError("a latency budget chooses the widths itself: drop --prune-ratio, --prune-threshold "
                                "and --layer-ratio, or the budget")  # fmt: skip
        target = latency_target_options(p["latency_target"], p["threads"], p["latency_table"], budget)
        prune = PruneConfig(
            criterion=p["prune"],
            prune_ratio=p["prune_ratio"] if given else 0.3,
            prune_threshold=p["prune_threshold"],
            layer_ratios=parse_layer_ratios(p["layer_ratio"] or []),
            min_channels=p["min_channels"],
            round_to=p["round_to"],
            latency_target=p["latency_target"],
            target_options=target.multiple_options(),
            seed=p["seed"],
        )
        prune.validate()
        if budget:
            from pacb_edge.studies.latency_profile import LatencyBudget

            latency = LatencyBudget(budget_ms=p["latency_budget"], ratio=p["latency_ratio"])
            latency.validate()
    elif p["stage"] in ("prune", "finetune"):
        raise PacbEdgeError(f"--stage {p['stage']} needs a pruning criterion (--prune ...)")
    elif budget:
        raise PacbEdgeError("--latency-budget and --latency-ratio need a pruning criterion (--prune ...)")
    for cfg in (train, finetune):
        cfg.validate()
    data = ("model", "attention", "dataset", "data_dir", "download", "input_size", "width_mult")
    run = ("grayscale_to_rgb", "limit", "train_limit", "threads", "out", "stage", "checkpoint", "resume", "progress")
    return RunOptions(
        **{k: p[k] for k in data + run},
        input_stem=r["input_stem"],
        recipe={"name": recipe.name, **r},
        command=command,
        train=train,
        finetune=finetune,
        prune=prune,
        latency=latency,
        latency_target=target,
        latency_table=p["latency_table"],
    )


def latency_target_options(target: str, threads: int | None, table: Path | None, budget: bool):
    """Where a prune's latency is measured. Host runtimes run here with the run's threads; a Jetson or a phone is
    reached as the latency table made by `pacb-edge profile` on it says (so the table is required there)."""
    from pacb_edge.core.runtimes import HOST_TARGETS, check_target
    from pacb_edge.studies.latency_profile import LatencyTargetOptions

    check_target(target)
    if target in HOST_TARGETS or not budget:
        return LatencyTargetOptions(target=target, threads=threads)
    if table is None or not Path(table).is_file():
        raise PacbEdgeError(
            f"a latency budget on --latency-target {target} needs the table `pacb-edge profile --target {target}` "
            "made on the device: pass it with --latency-table"
        )
    from pacb_edge.pruning.latency import LatencyTable

    settings = LatencyTable.load(table).target
    if settings.get("target") != target:
        raise PacbEdgeError(f"latency table {table} was measured on {settings.get('target')!r}, not {target}")
    return LatencyTargetOptions.from_settings(settings)


def bench_device_options(p: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """`pacb-edge bench`'s Jetson and Android options for its `--device`: (jetson, android, notes to print)."""
    jetson: dict[str, Any] = {}
    android: dict[str, Any] = {}
    notes: list[str] = []
    if p["device"] == "jetson":
        if not p["host"] and not p["local"]:
            raise PacbEdgeError("--device jetson needs --host user@ip (or --local on the Jetson itself)")
        host = None if p["local"] else p["host"]
        ssh = ssh_options(host, p["port"], p["ssh_config"], p["identity"], p["remote_dir"], p["python"])
        jetson = dict(ssh, backend=p["backend"], precision=p["precision"])
    elif p["device"] == "android":
        delegate = p["delegate"]
        old = [name for name in ("gpu", "nnapi", "xnnpack") if p[f"use_{name}"]]
        if len(old) > 1:
            raise PacbEdgeError("choose one delegate: --delegate cpu|xnnpack|gpu|nnapi")
        if old:
            notes.append(f"note: --use-{old[0]} is deprecated; use --delegate {old[0]}")
            delegate = old[0]
        keys = ("serial", "benchmark_binary", "eval_binary", "taskset")
        android = dict({k: p[k] for k in keys}, delegate=delegate)
    return jetson, android, notes


def reproduce_config(p: dict[str, Any]):  # -> pacb_edge.studies.reproduce.ReproduceConfig
    """`pacb-edge reproduce`'s options as a `ReproduceConfig` (validated)."""
    from pacb_edge.studies.reproduce import ReproduceConfig

    try:
        ratios = tuple(float(r) for r in split_csv(p["ratios"])) if p["ratios"] is not None else None
    except ValueError:
        raise PacbEdgeError(f"--ratios expects comma-separated numbers, got {p['ratios']!r}") from None
    device = p["device"]
    android = ("serial", "benchmark_binary", "eval_binary")
    same = (
        "paper", "dataset", "data_dir", "download", "out", "budget", "quick", "seeds", "prune_ratio", "epochs",
        "latency_ratio", "finetune_epochs", "sparsity", "width_mult", "limit", "train_limit", "device", "threads",
        "jobs", "progress",
    )  # fmt: skip
    cfg = ReproduceConfig(
        **{k: p[k] for k in same},
        ratios=ratios,
        archs=tuple(split_csv(p["archs"])) if p["archs"] is not None else None,
        jetson={k: p[k] for k in ("host", "port", "remote_dir")} if device == "jetson" else {},
        android={k: p[k] for k in android} if device == "android" else {},
    )
    cfg.validate()
    return cfg


def profile_options(p: dict[str, Any]):  # -> (latency_profile.ProfileConfig, latency_profile.LatencyTargetOptions)
    """`pacb-edge profile`'s options as the profile's configuration and the target's (validated)."""
    from pacb_edge.core.runtimes import check_target, parse_round_to
    from pacb_edge.pruning.pruner import CRITERIA
    from pacb_edge.studies.latency_profile import LatencyTargetOptions, ProfileConfig

    check_target(p["target"])
    if p["prune"] not in CRITERIA:
        raise PacbEdgeError(f"unknown pruning criterion {p['prune']!r}; known: {', '.join(CRITERIA)}")
    if p["min_channels"] < 1:
        raise PacbEdgeError(f"--min-channels must be >= 1, got {p['min_channels']}")
    jetson: dict[str, Any] = {}
    android: dict[str, Any] = {}
    if p["target"] == "jetson":
        host = None if p["local"] else p["host"]
        jetson = dict(ssh_options(host, p["port"], p["ssh_config"], p["identity"], p["remote_dir"], p["python"]))
        jetson.update(backend=p["backend"], precision=p["precision"] or "fp16", local=p["local"])
    elif p["target"] == "android":
        android = {k: p[k] for k in ("serial", "benchmark_binary", "delegate", "taskset")}
        android["precision"] = p["precision"] or "fp32"
    elif p["precision"] is not None:
        raise PacbEdgeError(f"--precision is for jetson and android; --target {p['target']} sets its own")
    profile = ProfileConfig(
        criterion=p["prune"],
        min_channels=p["min_channels"],
        round_to=parse_round_to(p["round_to"]),
        models=p["models"],
        held_out=p["held_out"],
    )
    opts = LatencyTargetOptions(
        target=p["target"], threads=p["threads"], warmup=p["warmup"], runs=p["runs"], jetson=jetson, android=android
    )
    profile.validate()
    opts.validate()
    return profile, opts
