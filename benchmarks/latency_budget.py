"""Pruning that buys latency, measured: aligned channels and pruning to a latency budget on Fashion-MNIST.

For MobileNetV3-L CA and RepVGG-A0 CA (x0.5, 32x32, the `reproduce pacb --budget cpu` schedule: 6,000 training
images, 12 epochs with Network Slimming's lambda 1e-4, 4 fine-tuning epochs), through the `pacb-edge` CLI only:

1. bn-scale 30 % with `--round-to auto` (the default) and with `--round-to 1`, and the 90 % floor: ONNX latency
   ratios against the unpruned CA model from one interleaved `pacb-edge bench` run, beside the MACs ratios;
2. `--latency-ratio 0.5` on onnxruntime, TFLite FP32 and TFLite INT8 (each profiles its own latency table in the
   run): measured / budget, predicted / measured, rounds;
3. top-1 at equal measured latency: the onnxruntime latency-budget prune against the bn-scale global ratio whose
   ONNX latency (one interleaved run with it) comes closest, both fine-tuned alike;
4. the same latency ratios at 224x224 (one short epoch of training: latency does not need accuracy).

Every figure is a ratio within one run, with one inference thread for every runner (`THREADS`). Writes
`latency_budget.{json,md}` into OUT (default runs/latency_budget) and copies them to
benchmarks/results/latency_budget/. Resumable: finished runs are read back. Run it alone on the machine:

    .venv/bin/python benchmarks/latency_budget.py [--out DIR] [--archs mobilenetv3_large,repvgg_a0] [--no-224]
        [--archs-224 mobilenetv3_large]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PCB = str(Path(sys.executable).parent / "pacb-edge")
THREADS = "1"
SCHEDULE = [  # the reproduce cpu budget's PACB schedule (pacb_edge/studies/grids.py, PACB_CPU)
    "--dataset", "fashion-mnist", "--grayscale-to-rgb", "--train-limit", "6000", "--width-mult", "0.5",
    "--epochs", "12", "--lr", "0.05", "--scheduler", "cosine", "--warmup-epochs", "1", "--nesterov",
    "--weight-decay", "5e-4", "--batch-size", "32", "--seed", "0",
]  # fmt: skip
FINETUNE = ["--finetune-epochs", "4", "--finetune-lr", "0.01"]
TARGETS = ("onnxruntime", "tflite", "tflite-int8")
MATCH_RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # bn-scale global ratios tried for the equal-latency comparison
LOG: list[dict] = []


def sh(*args: str, log: Path | None = None) -> float:
    """Run the CLI; returns seconds. Output goes to `log` (the run's own folder)."""
    cmd = [PCB, *args, "--no-progress"] if args[0] == "train" else [PCB, *args]
    t0 = time.perf_counter()
    with open(log or os.devnull, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    LOG.append({"command": " ".join(cmd), "seconds": round(seconds, 1), "rc": rc})
    print(f"[{seconds:7.1f} s] {' '.join(cmd[:4])} ... {args[-1] if len(args) > 1 else ''}", flush=True)
    if rc != 0:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}; see {log}")
    return seconds


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def done(run: Path, stage: str) -> bool:
    return (run / "metrics.json").is_file() and stage in metrics(run).get("stages", {})


def schedule(size: int) -> list[str]:
    """The data and training options: the cpu budget's at 32 px; at larger sizes one epoch on 500 images per split
    (latency does not depend on the accuracy, and a 224-px pass over 10,000 test images would dominate the run)."""
    return SCHEDULE if size == 32 else [*SCHEDULE, "--input-size", str(size), "--epochs", "1", "--limit", "500"]


def train_base(run: Path, arch: str, size: int) -> None:
    if done(run, "train"):
        return
    if run.exists():
        shutil.rmtree(run)
    run.parent.mkdir(parents=True, exist_ok=True)
    extra = schedule(size)
    sh(
        "train",
        "--model",
        arch,
        "--attention",
        "ca",
        "--sparsity",
        "1e-4",
        *extra,
        "--threads",
        THREADS,
        "--out",
        str(run),
        log=run.parent / f"{run.name}.log",
    )


def prune(base: Path, run: Path, size: int, *opts: str, finetune: bool = False) -> dict:
    """Prune the base model into `run` (stage prune), optionally fine-tune it; returns the run's metrics."""

    def stage(name: str, *first: str) -> None:
        sh("train", "--stage", name, *first, "--prune", "bn-scale", *opts, *schedule(size), *FINETUNE,
           "--threads", THREADS, "--out", str(run), log=run.parent / f"{run.name}.log")  # fmt: skip

    if not done(run, "prune"):
        if run.exists():
            shutil.rmtree(run)
        stage("prune", "--checkpoint", str(base / "base"))
    if finetune and not done(run, "finetune"):
        stage("finetune")
    return metrics(run)


def onnx_of(stage_dir: Path) -> Path:
    found = sorted((stage_dir / "export").glob("*.onnx"))
    if not found:
        sh("export", str(stage_dir), "--target", "onnx", "--out", str(stage_dir / "export"))
        found = sorted((stage_dir / "export").glob("*.onnx"))
    return found[0]


def bench(files: dict[str, Path], out: Path, runs: int) -> dict[str, float]:
    """One interleaved ONNX Runtime run of every file: name -> per-image ms (p50)."""
    report = out / "bench.json"
    if not report.is_file():
        sh("bench", *map(str, files.values()), "--threads", THREADS, "--runs", str(runs), "--warmup", "20",
           "--eval-limit", "100", "--out", str(out), log=out.parent / f"{out.name}.log")  # fmt: skip
    by_path = {r["artifact"]: r["per_image_ms"] for r in json.loads(report.read_text())["results"]}
    return {name: by_path[str(path)] for name, path in files.items()}


def stage_macs(run: Path, stage: str) -> float:
    return float(metrics(run)["stages"][stage]["macs"])


def arch_rows(out: Path, arch: str, size: int, runs: int, skip: set[str] = frozenset()) -> dict:
    """Every figure of one architecture at one input size."""
    root = out / f"{arch}_{size}"
    root.mkdir(parents=True, exist_ok=True)
    base = root / "ca"
    train_base(base, arch, size)
    base_onnx = onnx_of(base / "base")
    base_macs = stage_macs(base, "train")
    result: dict = {"arch": arch, "input_size": size, "unpruned_macs": base_macs}

    # 1. Aligned versus unaligned ratio pruning, and the floor.
    variants = {"auto_30": ("0.3", "auto"), "one_30": ("0.3", "1"), "auto_90": ("0.9", "auto")}
    files = {"ca": base_onnx}
    for name, (ratio, round_to) in variants.items():
        run = root / f"bn{name}"
        prune(base, run, size, "--prune-ratio", ratio, "--round-to", round_to)
        files[name] = onnx_of(run / "pruned")
    ms = bench(files, root / "bench_ratio", runs)
    result["ratio_prune"] = {
        name: {
            "prune_ratio": float(ratio),
            "round_to": round_to,
            "multiple": metrics(root / f"bn{name}")["stages"]["prune"].get("alignment", {}).get("multiple"),
            "macs_ratio": stage_macs(root / f"bn{name}", "prune") / base_macs,
            "latency_ratio": ms[name] / ms["ca"],
        }
        for name, (ratio, round_to) in variants.items()
    }
    result["ratio_prune_ms"] = ms

    # 2. Pruning to half the unpruned latency on each runtime (at 224 px: onnxruntime only).
    result["latency_ratio_0.5"] = {}
    for target in [t for t in (TARGETS if size == 32 else ("onnxruntime",)) if t not in skip]:
        run = root / f"latency_{target}"
        table = []
        if size != 32:  # fewer timed runs per candidate at 224 px: profile first, then prune with the table
            path = root / f"latency_table_{target}.json"
            if not path.is_file():
                sh("profile", str(base), "--target", target, "--threads", THREADS, "--runs", str(runs // 2),
                   "--warmup", "5", "--out", str(path), log=root / f"profile_{target}.log")  # fmt: skip
            table = ["--latency-table", str(path)]
        m = prune(base, run, size, "--latency-ratio", "0.5", "--latency-target", target, *table,
                  finetune=(target == "onnxruntime" and size == 32))  # fmt: skip
        lat = m["stages"]["prune"]["latency"]
        keys = ("met", "budget_ms", "measured_ms", "predicted_ms", "unpruned_ms", "latency_ratio", "macs_ratio",
                "measured_over_budget", "predicted_over_measured", "runtime", "runtime_version", "threads",
                "multiple", "floor_ms", "widths")  # fmt: skip
        result["latency_ratio_0.5"][target] = {k: lat.get(k) for k in keys}
        result["latency_ratio_0.5"][target]["rounds"] = len(lat["rounds"])
        result["latency_ratio_0.5"][target]["table_validation"] = lat["table"]["validation"]
        result["latency_ratio_0.5"][target]["seconds"] = m["stages"]["prune"].get("wall_seconds")

    # 3. Top-1 at equal measured latency (32 px, onnxruntime).
    if size == 32:
        lat_run = root / "latency_onnxruntime"
        files = {"latency": onnx_of(lat_run / "pruned")}
        for r in MATCH_RATIOS:
            run = root / f"bnmatch_{r:.2f}"
            prune(base, run, size, "--prune-ratio", str(r))
            files[f"{r:.2f}"] = onnx_of(run / "pruned")
        ms = bench(files, root / "bench_match", runs)
        target_ms = ms["latency"]
        # the global ratios on either side of the latency-budget model's latency, both fine-tuned alike
        faster = [r for r in MATCH_RATIOS if ms[f"{r:.2f}"] <= target_ms]
        slower = [r for r in MATCH_RATIOS if ms[f"{r:.2f}"] > target_ms]
        neighbours = ([max(slower)] if slower else []) + ([min(faster)] if faster else [])
        lat_m = metrics(lat_run)
        rows = []
        for r in neighbours:
            run = root / f"bnmatch_{r:.2f}"
            prune(base, run, size, "--prune-ratio", str(r), finetune=True)
            rows.append(
                {
                    "ratio": r,
                    "top1": metrics(run)["stages"]["finetune"]["test_top1"],
                    "latency_over_budget_model": ms[f"{r:.2f}"] / target_ms,
                    "macs_ratio": stage_macs(run, "finetune") / base_macs,
                }
            )
        result["equal_latency"] = {
            "ms": ms,
            "unpruned_top1": metrics(base)["stages"]["train"]["test_top1"],
            "latency_budget_top1": lat_m["stages"]["finetune"]["test_top1"],
            "latency_budget_macs_ratio": stage_macs(lat_run, "finetune") / base_macs,
            "global": rows,
        }
    return result


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"Measured on {meta['date']} on {meta['machine']}, one inference thread; `{meta['command']}` "
           f"({meta['seconds'] / 60:.0f} min in its last invocation; finished runs are read back).", ""]  # fmt: skip
    out += ["| model, input | bn-scale 30 %: latency ratio, `--round-to 1` | `--round-to auto` | MACs ratio (auto) | "
            "90 % (floor): latency ratio | MACs ratio |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        p = r["ratio_prune"]
        out.append(
            f"| {r['arch']} CA, {r['input_size']}px | {p['one_30']['latency_ratio']:.2f} | "
            f"{p['auto_30']['latency_ratio']:.2f} | {p['auto_30']['macs_ratio']:.2f} | "
            f"{p['auto_90']['latency_ratio']:.2f} | {p['auto_90']['macs_ratio']:.2f} |"
        )
    out += ["", "| model, input | `--latency-ratio 0.5` on | measured / budget | predicted / measured | MACs ratio | "
            "rounds | met |", "|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        for target, t in r["latency_ratio_0.5"].items():
            out.append(
                f"| {r['arch']} CA, {r['input_size']}px | {target} | {t['measured_over_budget']:.3f} | "
                f"{t['predicted_over_measured']:.3f} | {t['macs_ratio']:.2f} | {t['rounds']} | "
                f"{'yes' if t['met'] else 'no'} |"
            )
    out += ["", "| model | pruned by | top-1 (%) | latency / the latency-budget model's | MACs ratio |",
            "|---|---|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        e = r.get("equal_latency")
        if e:
            name = f"{r['arch']} CA"
            budget = r["latency_ratio_0.5"]["onnxruntime"]
            out.append(f"| {name} | none (unpruned) | {100 * e['unpruned_top1']:.2f} | "
                       f"{1 / budget['latency_ratio']:.2f}* | 1.00 |")  # fmt: skip
            out.append(f"| {name} | `--latency-ratio 0.5` (onnxruntime) | {100 * e['latency_budget_top1']:.2f} "
                       f"| 1.00 | {e['latency_budget_macs_ratio']:.2f} |")  # fmt: skip
            for g in e["global"]:
                out.append(f"| {name} | bn-scale global {g['ratio']:g} | {100 * g['top1']:.2f} | "
                           f"{g['latency_over_budget_model']:.2f} | {g['macs_ratio']:.2f} |")  # fmt: skip
    out.append("")
    out.append("\\* the latency-budget prune's own measurement of the pruned model against the unpruned one.")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/latency_budget"))
    ap.add_argument("--archs", default="mobilenetv3_large,repvgg_a0")
    ap.add_argument("--no-224", dest="big", action="store_false")
    ap.add_argument("--archs-224", default=None, help="architectures measured at 224x224 (default: --archs)")
    ap.add_argument(
        "--skip", default="", help="ARCH:TARGET pairs whose latency-ratio prune is left out, comma-separated"
    )
    ap.add_argument("--jobs", type=int, default=2, help="base models trained side by side")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per model in each interleaved bench")
    args = ap.parse_args()
    t0 = time.perf_counter()
    sizes = (32, 224) if args.big else (32,)
    archs = args.archs.split(",")
    # Training times nothing: the base models train side by side first; everything timed then runs alone.
    from concurrent.futures import ThreadPoolExecutor

    archs_at = {32: archs, 224: args.archs_224.split(",") if args.archs_224 else archs}
    with ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(train_base, args.out / f"{a}_{s}" / "ca", a, s) for s in sizes for a in archs_at[s]]:
            f.result()
    rows = []
    for size in sizes:
        for arch in archs_at[size]:
            skip = {t for a, _, t in (p.partition(":") for p in args.skip.split(",") if p) if a == arch}
            rows.append(arch_rows(args.out, arch, size, args.runs if size == 32 else args.runs // 3, skip))
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores ({platform.processor() or 'cpu'})",
        "command": "python benchmarks/latency_budget.py " + " ".join(sys.argv[1:]),
        "seconds": time.perf_counter() - t0,
        "threads": int(THREADS),
        "commands": LOG,
    }
    from pacb_edge.core.fileio import atomic_write_json, atomic_write_text

    for folder in (args.out, ROOT / "benchmarks" / "results" / "latency_budget"):
        atomic_write_json(Path(folder) / "latency_budget.json", {"meta": meta, "rows": rows})
        atomic_write_text(Path(folder) / "latency_budget.md", markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
