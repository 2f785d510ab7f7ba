"""What each change to the training recipe buys, on few-minute proxies of the PACB Fashion-MNIST runs.

The proxy: MobileNetV3-Large with CA at width x0.5, 6,000 Fashion-MNIST training images (seeded, class-balanced),
3 epochs, tested on the whole 10,000-image test split, for each seed of `--seeds`. Each row changes one thing from
the row it names as its base, so the table reads as a path from the old default to the new one. Two more groups: the
RepVGG-A0 stem, and the short run that used not to learn (MobileNetV3-Small CA x0.5, 2,000 images, 1 epoch).

Every row trains through `pacb_edge.training.trainer.fit`, the trainer of `pacb-edge train`, with one torch thread;
`--jobs` rows run side by side. A finished row is kept in OUT/rows/ and read back on the next run (delete it to
redo it).

    python benchmarks/recipe_proxies.py --out benchmarks/results/recipe_proxies [--rows a,b] [--seeds 0,1] [--jobs 2]

Writes recipe_proxies.json and recipe_proxies.md (the table) in OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

# The old default at 32x32: ImageNet stem, batch 64, lr 0.05, 1 warm-up epoch (a third of a 3-epoch run), weight
# decay 5e-4 on every conv, random crop only, no label smoothing.
OLD = {
    "arch": "mobilenetv3_large",
    "attention": "ca",
    "width_mult": 0.5,
    "stem": "imagenet",
    "train_limit": 6000,
    "epochs": 3,
    "optimizer": "sgd",
    "batch_size": 64,
    "lr": 0.05,
    "warmup_epochs": 1,
    "max_warmup_share": 1.0,
    "weight_decay": 5e-4,
    "thin_weight_decay": None,
    "label_smoothing": 0.0,
    "flip": False,
    "augment": True,
}

# name: (base row, what changes, overrides of the base). Order matters: a row's base comes before it.
ROWS: dict[str, tuple[str | None, str, dict[str, Any]]] = {
    "old-default": (None, "old default (ImageNet stem at 32x32)", {}),
    "cifar-stem": ("old-default", "stride-1 stem (total stride 16)", {"stem": "cifar"}),
    "warmup-cap": ("cifar-stem", "warm-up capped at 20 % of the run", {"max_warmup_share": 0.2}),
    "no-warmup": ("cifar-stem", "no warm-up", {"warmup_epochs": 0}),
    "batch-32": ("warmup-cap", "batch 32 (lr kept)", {"batch_size": 32}),
    "lr-0.1": ("warmup-cap", "lr 0.1", {"lr": 0.1}),
    "thin-wd-0": ("warmup-cap", "no weight decay on depthwise and attention weights", {"thin_weight_decay": 0.0}),
    "flip": ("warmup-cap", "+ horizontal flip", {"flip": True}),
    "no-augment": ("warmup-cap", "no augmentation", {"augment": False}),
    "smoothing-0.1": ("warmup-cap", "label smoothing 0.1", {"label_smoothing": 0.1}),
    "epochs-6": ("warmup-cap", "6 epochs", {"epochs": 6}),
    "new-recipe": (
        "warmup-cap",
        "the small-image recipe: batch 32, lr 0.1, no depthwise/attention decay",
        {"batch_size": 32, "lr": 0.1, "thin_weight_decay": 0.0},
    ),
    "new-recipe-flip": ("new-recipe", "+ horizontal flip", {"flip": True}),
    "new-recipe-no-augment": ("new-recipe", "no augmentation", {"augment": False}),
    "new-recipe-12-epochs": ("new-recipe", "12 epochs (the PACB cpu budget's)", {"epochs": 12}),
    "new-recipe-12-epochs-no-augment": ("new-recipe-12-epochs", "no augmentation", {"augment": False}),
    "repvgg-imagenet": (
        None,
        "RepVGG-A0 CA x0.5, ImageNet stem, new recipe",
        {"arch": "repvgg_a0", "stem": "imagenet", "max_warmup_share": 0.2},
    ),
    "repvgg-cifar": ("repvgg-imagenet", "RepVGG-A0: stride-1 first two stages (total stride 8)", {"stem": "cifar"}),
    "short-old": (
        None,
        "MobileNetV3-Small CA x0.5, 2,000 images, 1 epoch, old default",
        {"arch": "mobilenetv3_small", "train_limit": 2000, "epochs": 1},
    ),
    "short-cifar": ("short-old", "stride-1 stem", {"stem": "cifar"}),
    "short-batch-32": ("short-cifar", "batch 32", {"batch_size": 32}),
    "short-new": (
        "short-old",
        "the small-image recipe",
        {
            "stem": "cifar",
            "max_warmup_share": 0.2,
            "batch_size": 32,
            "lr": 0.1,
            "thin_weight_decay": 0.0,
        },
    ),
    "short-new-lr-0.2": ("short-new", "lr 0.2", {"lr": 0.2}),
    "short-new-batch-16": ("short-new", "batch 16", {"batch_size": 16}),
    "short-new-no-warmup": ("short-new", "no warm-up", {"warmup_epochs": 0}),
    "short-new-no-augment": ("short-new", "no augmentation", {"augment": False}),
    "short-new-adamw": ("short-new", "AdamW lr 2e-3", {"optimizer": "adamw", "lr": 2e-3}),
}


def row_settings(name: str) -> dict[str, Any]:
    """The full settings of a row: the old default, then each base's overrides down to the row's own."""
    chain = []
    while name is not None:
        chain.append(name)
        name = ROWS[name][0]
    settings = dict(OLD)
    for n in reversed(chain):
        settings.update(ROWS[n][2])
    return settings


def run_row(name: str, settings: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Train one proxy with one torch thread and test it; the record of the row at `seed` (the initial weights and
    the batch order; the 6,000 images are the same for every seed)."""
    import torch

    torch.set_num_threads(1)
    import pacb_edge.training.trainer as train_mod
    from pacb_edge.data.datasets import load_dataset, train_augmentation
    from pacb_edge.models import ModelSpec, count_flops, create_model
    from pacb_edge.training.trainer import TrainConfig, evaluate, fit

    train_mod.MAX_WARMUP_SHARE = settings["max_warmup_share"]
    bundle = load_dataset("fashion-mnist", train_limit=settings["train_limit"], seed=0)
    bundle.train.augment = train_augmentation(32, settings["flip"]) if settings["augment"] else None
    kw = dict(num_classes=10, in_chans=1, attention=settings["attention"], width_mult=settings["width_mult"])
    torch.manual_seed(seed)  # the same initial weights for every row of one architecture and seed
    model = create_model(settings["arch"], input_stem=settings["stem"], **kw)
    spec = ModelSpec(arch=settings["arch"], input_stem=settings["stem"], input_size=32, **kw)
    cfg = TrainConfig(
        **{
            k: settings[k]
            for k in ("epochs", "optimizer", "batch_size", "lr", "warmup_epochs", "weight_decay", "label_smoothing")
        },
        thin_weight_decay=settings["thin_weight_decay"],
        augment=settings["augment"],
        seed=seed,
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, history = fit(model, bundle.train, bundle.val, spec, cfg, tmp, progress=False)
    wall = time.perf_counter() - t0
    test = evaluate(model, bundle.test, 10)
    return {
        "row": name,
        "seed": seed,
        "base": ROWS[name][0],
        "change": ROWS[name][1],
        "settings": settings,
        "test_top1": test["top1"],
        "train_top1_last_epoch": history[-1]["train_top1"],
        "val_top1": history[-1]["val_top1"],
        "predicted_classes": sum(1 for i in range(10) if sum(r[i] for r in test["confusion"]) > 0),
        "macs": count_flops(model, 32)["macs"],
        "train_seconds": round(wall, 1),
    }


def _mean(records: list[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in records) / len(records)


def _markdown(records: dict[str, list[dict[str, Any]]], command: str) -> str:
    lines = [
        "# Training-recipe proxies (Fashion-MNIST)",
        "",
        f"Measured {date.today().isoformat()} on {platform.machine()} ({os.cpu_count()} cores, one torch thread per "
        f"row, two rows side by side, so `train s` is indicative), Python {platform.python_version()}. "
        f"Command: `{command}`.",
        "",
        "Proxy: MobileNetV3-Large CA x0.5, 6,000 training images, 3 epochs; top-1 on the 10,000 test images. Each "
        "row changes one thing from its base row; Δ is the mean over the seeds both rows ran of (row − base). The "
        "seed sets the initial weights and the batch order; at 3 epochs two seeds of one setting differ by up to "
        "4 pp, so a Δ smaller than that is not a finding.",
        "",
        "| row | change | base | seeds | test top-1 (mean) | per seed | Δ vs base (pp) | last-epoch train top-1 | "
        "MACs | train s |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name in ROWS:
        rs = records.get(name)
        if not rs:
            continue
        base = records.get(ROWS[name][0] or "", [])
        pairs = [(r, b) for r in rs for b in base if b["seed"] == r["seed"]]
        delta = f"{100 * sum(r['test_top1'] - b['test_top1'] for r, b in pairs) / len(pairs):+.2f}" if pairs else ""
        per_seed = " / ".join(f"{100 * r['test_top1']:.2f}" for r in rs)
        lines.append(
            f"| {name} | {ROWS[name][1]} | {ROWS[name][0] or ''} | {len(rs)} | {100 * _mean(rs, 'test_top1'):.2f} | "
            f"{per_seed} | {delta} | {100 * _mean(rs, 'train_top1_last_epoch'):.2f} | {rs[0]['macs'] / 1e6:.2f} M | "
            f"{_mean(rs, 'train_seconds'):.0f} |"
        )
    return "\n".join(lines) + "\n"


def _row_file(name: str, seed: int) -> str:
    return f"{name}.json" if seed == 0 else f"{name}@seed{seed}.json"


def main(argv: list[str] | None = None) -> int:
    from pacb_edge.core.fileio import atomic_write_json, atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recipe_proxies"))
    parser.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    names = [n for n in args.rows.split(",") if n] or list(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        print(f"unknown row(s): {', '.join(unknown)}; known: {', '.join(ROWS)}", file=sys.stderr)
        return 2
    rows_dir = args.out / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    todo = [(n, seed) for seed in seeds for n in names if not (rows_dir / _row_file(n, seed)).is_file()]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {(n, seed): pool.submit(run_row, n, row_settings(n), seed) for n, seed in todo}
        for (n, seed), fut in futures.items():
            record = fut.result()
            atomic_write_json(rows_dir / _row_file(n, seed), record)
            print(
                f"{n} seed {seed}: test {100 * record['test_top1']:.2f} % ({record['train_seconds']:.0f} s)", flush=True
            )
    records: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(rows_dir.glob("*.json")):
        record = json.loads(path.read_text())
        records.setdefault(record["row"], []).append({"seed": 0, **record})
    for rs in records.values():
        rs.sort(key=lambda r: r["seed"])
    command = shlex.join(["python", "benchmarks/recipe_proxies.py", *(argv if argv is not None else sys.argv[1:])])
    atomic_write_json(args.out / "recipe_proxies.json", {"command": command, "rows": records})
    atomic_write_text(args.out / "recipe_proxies.md", _markdown(records, command))
    print((args.out / "recipe_proxies.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
