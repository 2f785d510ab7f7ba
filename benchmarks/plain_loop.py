"""Peer check: `pacb-edge train` against a plain PyTorch loop with the standard small-image recipe, same model.

The plain loop reads Fashion-MNIST's IDX files itself, takes a seeded, class-balanced subset of the training images,
resizes 28 -> 32 and trains the same architecture (`pacb_edge.models.create_model`) with what a CIFAR tutorial does:
SGD momentum 0.9, lr 0.1, weight decay 5e-4 on every weight, batch 128, cosine annealing per step, random crop
with 4 px padding and horizontal flip, no warm-up, no validation split. `pacb-edge train` runs as the command a user
types, with its defaults, on as many training images, for as many epochs. Both run side by side, one torch thread
each, and are tested on the same 10,000 test images.

    python benchmarks/plain_loop.py --epochs 3 --train-images 6000 --out benchmarks/results/plain_loop

Writes plain_loop.json and plain_loop.md in OUT (a row per epoch count, appended to what OUT holds).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

FASHION = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530


def read_idx(path: Path):
    import numpy as np

    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def plain_loop(arch: str, attention: str, width: float, epochs: int, n_train: int, seed: int) -> dict[str, Any]:
    """The tutorial loop; returns its test top-1 and wall time."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torchvision.transforms import v2

    from pacb_edge.models import create_model

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    x_train, y_train = (
        read_idx(FASHION / f"train-{kind}-idx{n}-ubyte.gz") for kind, n in (("images", 3), ("labels", 1))
    )
    x_test, y_test = (read_idx(FASHION / f"t10k-{kind}-idx{n}-ubyte.gz") for kind, n in (("images", 3), ("labels", 1)))
    rng = np.random.default_rng(seed)
    per_class = n_train // 10
    idx = np.concatenate([rng.choice(np.flatnonzero(y_train == c), per_class, replace=False) for c in range(10)])

    def prep(x):
        t = torch.from_numpy(np.array(x)).float().div(255).unsqueeze(1)
        t = F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        return (t - MEAN) / STD

    xs, ys = prep(x_train[idx]), torch.from_numpy(y_train[idx].astype(np.int64))
    xt, yt = prep(x_test), torch.from_numpy(y_test.astype(np.int64))
    augment = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
    model = create_model(arch, num_classes=10, in_chans=1, attention=attention, width_mult=width)
    batch = 128
    steps = epochs * ((len(xs) + batch - 1) // batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xs))
        for i in range(0, len(xs), batch):
            b = order[i : i + batch]
            x = torch.stack([augment(img) for img in xs[b]])
            loss = F.cross_entropy(model(x), ys[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    wall = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[i : i + 500]).argmax(1) for i in range(0, len(xt), 500)])
    return {"test_top1": float((pred == yt).float().mean()), "train_seconds": round(wall, 1)}


def pacb_edge_train(arch: str, attention: str, width: float, epochs: int, n_train: int, seed: int) -> dict[str, Any]:
    """`pacb-edge train` with its defaults (no pruning); returns its test top-1 and wall time."""
    pcb = Path(sys.executable).with_name("pacb-edge")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            str(pcb), "train", "--model", arch, "--attention", attention, "--width-mult", str(width),
            "--dataset", "fashion-mnist", "--train-limit", str(n_train), "--epochs", str(epochs),
            "--seed", str(seed), "--threads", "1", "--no-progress", "--out", str(Path(tmp) / "run"),
        ]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    return {
        "test_top1": metrics["stages"]["train"]["test_top1"],
        "train_seconds": round(wall, 1),
        "command": shlex.join(cmd),
    }


def main(argv: list[str] | None = None) -> int:
    from pacb_edge.core.fileio import atomic_write_json, atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenetv3_large")
    parser.add_argument("--attention", default="ca")
    parser.add_argument("--width-mult", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/plain_loop"))
    args = parser.parse_args(argv)
    job = (args.arch, args.attention, args.width_mult, args.epochs, args.train_images, args.seed)
    with ProcessPoolExecutor(max_workers=2) as pool:
        ours, plain = pool.submit(pacb_edge_train, *job), pool.submit(plain_loop, *job)
        ours, plain = ours.result(), plain.result()
    row = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, one torch thread each",
        "command": shlex.join(["python", "benchmarks/plain_loop.py", *(argv if argv is not None else sys.argv[1:])]),
        "arch": args.arch,
        "attention": args.attention,
        "width_mult": args.width_mult,
        "epochs": args.epochs,
        "train_images": args.train_images,
        "seed": args.seed,
        "pacb_edge": ours,
        "plain_loop": plain,
        "difference_pp": round(100 * (ours["test_top1"] - plain["test_top1"]), 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "plain_loop.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    rows = [r for r in rows if r["command"] != row["command"]] + [row]
    lines = [
        "# `pacb-edge train` against a plain PyTorch loop (Fashion-MNIST)",
        "",
        "Plain loop: SGD momentum 0.9, lr 0.1, weight decay 5e-4 on every weight, batch 128, cosine per step, random "
        "crop (4 px padding) and horizontal flip. `pacb-edge train`: its defaults. Same architecture, as many "
        "training images and epochs, one torch thread each, side by side; top-1 on the 10,000 test images.",
        "",
        "| date | model | images | epochs | seed | pacb-edge train top-1 | plain loop top-1 | difference (pp) | "
        "pacb-edge s | plain s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['date']} | {r['arch']} {r['attention']} x{r['width_mult']:g} | {r['train_images']:,} | "
            f"{r['epochs']} | {r['seed']} | {100 * r['pacb_edge']['test_top1']:.2f} | "
            f"{100 * r['plain_loop']['test_top1']:.2f} | {r['difference_pp']:+.2f} | "
            f"{r['pacb_edge']['train_seconds']:.0f} | {r['plain_loop']['train_seconds']:.0f} |"
        )
    lines += ["", "Commands: " + "; ".join(f"`{r['command']}` ({r['machine']})" for r in rows)]
    atomic_write_json(args.out / "plain_loop.json", {"rows": rows})
    atomic_write_text(args.out / "plain_loop.md", "\n".join(lines) + "\n")
    print(f"pacb-edge train {100 * ours['test_top1']:.2f} %, plain loop {100 * plain['test_top1']:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
