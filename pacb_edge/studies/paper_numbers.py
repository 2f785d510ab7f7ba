"""The two papers' published numbers, transcribed from their text copies: data only.

PACB (Chung, Future Internet 2025) Tables 2-4 and CPSCA (Liu, Fang et al.) Tables 4-5, with notes on what the text
copy lost.
None marks a value lost in the text copy; a note says so.
"""

from __future__ import annotations

from typing import Any

DATASET_TITLES = {
    "digits": "digits",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "fashion-mnist": "Fashion-MNIST",
    "gtsrb": "GTSRB",
}
PAPER_TITLES = {
    "pacb": "PACB: coordinate attention + channel pruning (Chung, Future Internet 2025)",
    "cpsca": "CPSCA: channel pruning guided by spatial and channel attention (Liu, Fang et al.)",
}
PAPER_DATASETS = {"pacb": ("cifar10", "fashion-mnist", "gtsrb"), "cpsca": ("cifar10", "cifar100")}
ARCH_TITLES = {"mobilenetv3_large": "MobileNetV3", "repvgg_a0": "RepVGG", "vgg16": "VGG16", "resnet56": "ResNet56"}

# ----------------------------------------------------------------------------------------------------------------------
# PACB

PACB_VARIANTS = ("Base", "CA", "CA_Pruned")
PACB_TABLES = {"mobilenetv3_large": "Table 2", "repvgg_a0": "Table 3"}


def _pacb(*rows: tuple[tuple[float, float], float, float]) -> dict[str, dict[str, Any]]:
    """One dataset's Base, CA and CA_Pruned rows, each (acc mean, std), params (M), FLOPs (M)."""
    return {v: {"acc": a, "params_m": p, "flops_m": f} for v, (a, p, f) in zip(PACB_VARIANTS, rows, strict=True)}


# PACB Tables 2 (MobileNetV3) and 3 (RepVGG): acc = (mean, std) in %, params in M, flops in M (= MACs at 32x32).
PACB_PAPER: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "mobilenetv3_large": {
        "cifar10": _pacb(((95.20, 0.12), 16.239, 9.073), ((87.92, 0.18), 11.596, 9.192), ((87.20, 0.21), 9.711, 7.388)),
        "fashion-mnist": _pacb(
            ((94.61, 0.09), 16.239, 10.156), ((95.16, 0.11), 11.596, 10.225), ((91.94, 0.15), 9.709, 7.502)
        ),
        "gtsrb": _pacb(((97.09, 0.14), 16.239, 11.297), ((98.81, 0.10), 11.596, 11.652), ((97.37, 0.16), 9.871, 8.552)),
    },
    "repvgg_a0": {
        "cifar10": _pacb(
            ((86.61, 0.20), 7.683, 27.774), ((87.47, 0.18), 7.893, 27.866), ((87.05, 0.22), 7.063, 23.918)
        ),
        "fashion-mnist": _pacb(
            ((93.48, 0.12), 7.683, 30.218), ((93.50, 0.10), 7.893, 30.308), ((93.33, 0.14), 7.050, 26.955)
        ),
        "gtsrb": _pacb(((97.49, 0.11), 7.683, 31.264), ((97.67, 0.09), 7.893, 31.336), ((96.74, 0.15), 7.093, 27.918)),
    },
}

# PACB Table 4: per-image inference latency (ms) on edge hardware, per variant and dataset.
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
    "'mean ± std' were lost in the text copy. Ours: this host's CPU, batch 1, p50, ONNX Runtime FP32 and TFLite INT8 "
    "benched in one interleaved run.",
    "The text copy lost the table captions and PACB's training schedule (epochs, lr, lambda, threshold); the paper "
    "budget uses Network Slimming's settings (see the schedule in the JSON).",
    "Ratios are per seed against the same seed's CA model, then averaged: a pruned model is only faster if its "
    "latency ratio follows its MACs ratio.",
)

# ----------------------------------------------------------------------------------------------------------------------
# CPSCA

CPSCA_METHODS = ("l1-norm", "bn-scale", "se-attention", "sca-attention")
CPSCA_METHOD_NAMES = {
    "l1-norm": "L1-norm",
    "bn-scale": "Slimming",
    "se-attention": "CPSE",
    "sca-attention": "CPSCA",
    "random": "Random",
}


def _level(params_m, params_pct, gflops, gflops_pct, time_ms, accs, deltas) -> dict[str, Any]:
    """One pruning level of a CPSCA table: the merged cells and each method's accuracy and |change|."""
    return {
        "params_m": params_m,
        "params_pruned_pct": params_pct,
        "gflops": gflops,
        "gflops_pruned_pct": gflops_pct,
        "time_ms": time_ms,
        "acc": dict(zip(CPSCA_METHODS, accs, strict=True)),
        "delta_abs": dict(zip(CPSCA_METHODS, deltas, strict=True)),
    }


def _cpsca(params_m: float, gflops: float, time_ms: float, acc: float, *levels: dict[str, Any]) -> dict[str, Any]:
    """One dataset of a CPSCA table: the unpruned baseline and its pruning levels."""
    return {
        "baseline": {"params_m": params_m, "gflops": gflops, "time_ms": time_ms, "acc": acc},
        "levels": list(levels),
    }


# CPSCA Tables 4 (VGG16) and 5 (ResNet56). A level's params, GFLOPs and time are merged cells in the paper (one value
# for all four methods); `delta_abs` is |Acc - baseline| as printed.
CPSCA_PAPER: dict[str, dict[str, Any]] = {
    "vgg16": {
        "table": "Table 4",
        "cifar10": _cpsca(
            16.87,
            0.63163,
            12.3,
            93.04,
            _level(11.43, 32.25, 0.47499, 24.75, 10.2, (93.25, 93.35, 93.43, 93.45), (0.21, 0.31, 0.39, 0.41)),
            _level(8.52, 49.50, 0.21988, 65.05, 4.5, (92.98, 93.01, 92.09, 93.10), (0.06, 0.03, 0.95, 0.06)),
            _level(3.38, 79.96, 0.14407, 77.02, 3.0, (92.13, 92.78, 92.89, 92.96), (0.91, 0.26, 0.15, 0.08)),
            _level(0.72, 95.73, 0.09918, 84.12, 2.1, (88.90, 89.79, 90.11, 91.39), (4.14, 3.25, 2.93, 1.65)),
        ),
        "cifar100": _cpsca(
            17.24,
            0.63237,
            13.5,
            73.14,
            _level(11.47, 33.47, 0.47509, 24.87, 9.6, (72.97, 73.34, 73.36, 73.77), (0.17, 0.20, 0.22, 0.63)),
            _level(8.57, 50.29, 0.21997, 65.21, 4.2, (71.76, 71.95, 72.13, 72.89), (1.38, 1.19, 1.01, 0.25)),
            _level(3.89, 77.44, 0.18677, 70.47, 3.9, (70.19, 71.33, 71.09, 72.03), (2.95, 1.81, 2.05, 1.11)),
            _level(0.77, 95.53, 0.09927, 84.30, 2.1, (69.87, 70.25, 70.87, 71.67), (3.27, 2.89, 2.27, 1.47)),
        ),
    },
    "resnet56": {
        "table": "Table 5",
        "cifar10": _cpsca(
            0.86,
            0.25257,
            30.6,
            92.98,
            _level(0.45, 47.67, 0.16983, 32.76, 20.7, (92.54, 92.26, 92.55, 93.06), (0.44, 0.72, 0.43, 0.08)),
            _level(0.17, 80.23, 0.06476, 74.36, 8.1, (90.48, 91.09, 91.28, 91.31), (2.50, 1.89, 1.70, 1.67)),
            _level(0.04, 95.35, 0.01351, 94.65, 1.5, (89.32, 89.17, 88.96, 90.18), (3.66, 3.81, 4.02, 2.80)),
        ),
        "cifar100": _cpsca(
            0.86,
            0.25258,
            30.9,
            75.78,
            _level(0.45, 47.67, 0.16984, 32.76, 21.0, (74.89, 75.60, 75.55, 75.87), (0.89, 0.18, 0.23, 0.09)),
            _level(0.18, 79.07, 0.06477, 74.36, 7.5, (73.18, 73.19, 73.22, 73.34), (2.60, 2.59, 2.56, 2.44)),
            _level(0.05, 94.19, 0.01352, 94.65, 1.6, (71.23, 71.57, 71.86, 72.61), (4.55, 4.21, 3.92, 3.17)),
        ),
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


def paper_dataset(paper: str, dataset: str) -> str:
    """The dataset whose paper numbers are shown: the same one, or CIFAR-10 when the paper has no such table."""
    return dataset if dataset in PAPER_DATASETS[paper] else "cifar10"


def paper_numbers(paper: str) -> dict[str, Any]:
    """A paper's transcribed numbers and notes, as written into reproduce.json."""
    if paper == "pacb":
        return {"tables_2_3": PACB_PAPER, "table_4_latency_ms": PACB_LATENCY_MS, "notes": list(PACB_NOTES)}
    return {"tables_4_5": CPSCA_PAPER, "notes": list(CPSCA_NOTES)}
