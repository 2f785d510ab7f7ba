"""The tables of `pacb-edge reproduce`: our per-seed records aggregated over seeds (mean ± sample std) and laid out
like the papers' tables, the paper's numbers next to ours, as text cells for the terminal and Markdown."""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from pacb_edge.studies.paper_numbers import (
    ARCH_TITLES,
    CPSCA_METHOD_NAMES,
    CPSCA_NOTES,
    CPSCA_PAPER,
    DATASET_TITLES,
    PACB_LATENCY_MS,
    PACB_NOTES,
    PACB_PAPER,
    PACB_TABLES,
    PACB_VARIANTS,
    paper_dataset,
)

DEVICE_TITLES = {"jetson": "Jetson (TensorRT)", "android": "Android (TFLite INT8)"}
METHOD_ORDER = ("l1-norm", "bn-scale", "se-attention", "sca-attention", "random")  # row order in the CPSCA tables
ORDERING = ("sca-attention", "bn-scale", "l1-norm")  # the paper's claim: CPSCA >= Slimming >= L1-norm
STAT_FIELDS = (
    "test_top1",
    "params",
    "macs",
    "flops",
    "host.per_image_ms",
    "host_int8.per_image_ms",
    "device.per_image_ms",
    "device.top1",
    "params_pruned",
    "flops_pruned",
    "acc_change_pp",
    "macs_ratio_vs_ca",
    "host_ratio_vs_ca",
    "host_int8_ratio_vs_ca",
)


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


def _get(record: dict[str, Any], dotted: str) -> Any:
    v: Any = record
    for part in dotted.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


def aggregate(records: list[dict[str, Any]], fields: tuple[str, ...] = STAT_FIELDS) -> dict[str, dict[str, Any]]:
    """{row id: {field: stat}} over the seeds of each row."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        rows.setdefault(r["row"], []).append(r)
    return {row: {f: _stat([_get(r, f) for r in rs]) for f in fields} for row, rs in rows.items()}


def _fmt(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 2, signed: bool = False) -> str:
    """'mean' for one seed, 'mean ± std' over several seeds; 'failed' when missing."""
    if stat is None:
        return "failed"
    text = f"{stat['mean'] * scale:{'+' if signed else ''}.{digits}f}"
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
    caption: str = ""  # what was trained: budget, data subset, width, epochs, seeds
    label_columns: int = 2  # leading columns that name the row (left-aligned)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _device_columns(device: str) -> tuple[list[str], list[bool]]:
    if device == "cpu":
        return [], []
    name = DEVICE_TITLES[device]
    return [f"{name} ms ours", f"{name} acc (%) ours"], [True, True]


def _device_cells(device: str, stats: dict[str, Any]) -> list[str]:
    if device == "cpu":
        return []
    return [_fmt(stats.get("device.per_image_ms"), digits=3), _fmt(stats.get("device.top1"), 100, 2)]


def _context(paper: str, records: list[dict[str, Any]], dataset: str) -> tuple[str, str, str, dict, list[str]]:
    """(paper dataset, our dataset's title, the title suffix naming the paper's dataset, stats, archs in order)."""
    pds = paper_dataset(paper, dataset)
    ours, theirs = DATASET_TITLES[dataset], DATASET_TITLES[pds]
    ref = "" if pds == dataset else f" (the paper has no {ours}; its {theirs} numbers are shown)"
    return pds, ours, ref, aggregate(records), list(dict.fromkeys(r["arch"] for r in records))


def _variant_label(arch: str, variant: str) -> str:
    return f"{ARCH_TITLES[arch]} (Base)" if variant == "Base" else f"{ARCH_TITLES[arch]}_{variant}"


def pacb_tables(records: list[dict[str, Any]], dataset: str, device: str, caption: str = "") -> list[Table]:
    """PACB Tables 2 and 3 (one per architecture) and Table 4 (latency and its ratios), ours next to the paper's."""
    pds, ours, ref, stats, archs = _context("pacb", records, dataset)
    dev_header, dev_measured = _device_columns(device)
    multiples = sorted({r["channel_multiple"] for r in records if r.get("channel_multiple")})
    aligned = [f"Pruned widths rounded up to multiples of {', '.join(map(str, multiples))} (--round-to auto)."]
    aligned = aligned if multiples else []
    tables = []
    for arch in archs:
        header = ["Dataset", "Method", "Acc (%) ours", "Acc (%) paper", "Params (M) ours", "Params (M) paper"]
        header += ["FLOPs (M) = MACs ours", "FLOPs (M) paper", "ONNX ms ours", "TFLite INT8 ms ours"]
        table = Table(
            key=PACB_TABLES[arch].lower().replace(" ", ""),
            title=f"PACB {PACB_TABLES[arch]}: {ARCH_TITLES[arch]} variants on {ours}{ref}",
            header=header + ["Latency (ms) paper (Table 4)"] + dev_header,
            measured=[False, False, True, False, True, False, True, False, True, True, False] + dev_measured,
            caption=caption,
            notes=list(PACB_NOTES[:4]) + aligned,
        )
        for i, variant in enumerate(PACB_VARIANTS):
            s, p = stats[f"{arch}/{variant}"], PACB_PAPER[arch][pds][variant]
            table.rows.append(
                [
                    ours if i == 0 else "",
                    _variant_label(arch, variant),
                    _fmt(s["test_top1"], 100, 2),
                    _paper(p["acc"]),
                    _fmt(s["params"], 1e-6, 3),
                    _paper(p["params_m"], 3),
                    _fmt(s["macs"], 1e-6, 3),
                    _paper(p["flops_m"], 3),
                    _fmt(s["host.per_image_ms"], digits=3),
                    _fmt(s["host_int8.per_image_ms"], digits=3),
                    _paper(PACB_LATENCY_MS[arch][variant][pds], 1),
                    *_device_cells(device, s),
                ]
            )
            table.records.append({"row": f"{arch}/{variant}", "ours": s, "paper": {**p, "dataset": pds}})
        tables.append(table)
    header = ["Method", "ONNX ms ours", "TFLite INT8 ms ours", "Latency (ms) paper", "MACs / CA ours"]
    header += ["MACs / CA paper", "ONNX ms / CA ours", "INT8 ms / CA ours", "Latency / CA paper"]
    latency = Table(
        key="table4",
        title=f"PACB Table 4: per-image inference latency on {ours}, and its ratio to the CA model's{ref}",
        header=header + dev_header[:1],
        measured=[False, True, True, False, True, False, True, True, False] + dev_measured[:1],
        caption=caption,
        label_columns=1,
        notes=[PACB_NOTES[2], PACB_NOTES[4], *aligned],
    )
    for arch in archs:
        paper_ca = PACB_PAPER[arch][pds]["CA"]["flops_m"], PACB_LATENCY_MS[arch]["CA"][pds]
        for variant in (*PACB_VARIANTS, "CA_Latency"):
            if f"{arch}/{variant}" not in stats:  # CA_Latency: only with --latency-ratio
                continue
            s = stats[f"{arch}/{variant}"]
            p = PACB_PAPER[arch][pds].get(variant, {"flops_m": None})
            paper_ms = PACB_LATENCY_MS[arch].get(variant, {}).get(pds)
            row = [
                _variant_label(arch, variant),
                _fmt(s["host.per_image_ms"], digits=3),
                _fmt(s["host_int8.per_image_ms"], digits=3),
                _paper(paper_ms, 1),
                _fmt(s["macs_ratio_vs_ca"], digits=3),
                _paper(p["flops_m"] / paper_ca[0] if p["flops_m"] else None, 3),
                _fmt(s["host_ratio_vs_ca"], digits=3),
                _fmt(s["host_int8_ratio_vs_ca"], digits=3),
                _paper(paper_ms / paper_ca[1] if paper_ms else None, 3),
            ]
            latency.rows.append(row + ([_fmt(s["device.per_image_ms"], digits=3)] if device != "cpu" else []))
            latency.records.append(
                {"row": f"{arch}/{variant}", "ours": s, "paper_ms": PACB_LATENCY_MS[arch].get(variant)}
            )
    tables.append(latency)
    return tables


def _paper_levels(arch: str, pds: str, ratios: list[float], stats, methods, defaults: bool) -> dict[float, dict]:
    """The paper level each of our ratios is compared with: by position for the paper-derived default ratios, else the
    level nearest in params pruned (mean over the methods)."""
    levels = CPSCA_PAPER[arch][pds]["levels"]
    if defaults and len(ratios) == len(levels):
        return dict(zip(ratios, levels, strict=True))
    out = {}
    for ratio in ratios:
        pruned = [stats[f"{arch}/{m}/{ratio:.2f}"]["params_pruned"] for m in methods]
        mean = 100 * statistics.fmean(p["mean"] for p in pruned if p)
        out[ratio] = min(levels, key=lambda lv, m=mean: abs(lv["params_pruned_pct"] - m))
    return out


def ordering_notes(stats: dict[str, dict[str, Any]], arch: str, ratios: list[float]) -> list[str]:
    """Whether CPSCA >= Slimming >= L1-norm holds in our mean accuracy at each ratio, and by how many standard
    deviations (each gap over the pooled sample std of its two methods over the seeds)."""
    notes = []
    for ratio in ratios:
        accs = [stats.get(f"{arch}/{m}/{ratio:.2f}", {}).get("test_top1") for m in ORDERING]
        if any(a is None for a in accs):
            continue
        means, stds, n = [100 * a["mean"] for a in accs], [100 * a["std"] for a in accs], accs[0]["n"]
        gaps = []
        for i in (0, 1):
            gap, pooled = means[i] - means[i + 1], math.sqrt((stds[i] ** 2 + stds[i + 1] ** 2) / 2)
            in_std = f" = {gap / pooled:+.1f} std" if n > 1 and pooled > 0 else ""
            names = CPSCA_METHOD_NAMES[ORDERING[i]], CPSCA_METHOD_NAMES[ORDERING[i + 1]]
            gaps.append(f"{names[0]} - {names[1]} = {gap:+.2f} pp{in_std}")
        holds = "holds" if means[0] >= means[1] >= means[2] else "does not hold"
        spread = f"std: pooled sample std of the two methods over {n} seeds" if n > 1 else "one seed: no std"
        notes.append(
            f"{ARCH_TITLES[arch]} at channel ratio {ratio:.2f}: CPSCA >= Slimming >= L1-norm {holds} in our mean "
            f"accuracy ({'; '.join(gaps)}; {spread})."
        )
    return notes


# The paper's merged cells of a CPSCA level (key, digits), in column order.
MERGED_COLUMNS = (("params_m", 2), ("params_pruned_pct", 2), ("gflops", 5), ("gflops_pruned_pct", 2), ("time_ms", 1))


def _merged(level: dict[str, Any], key: str, digits: int, first: bool, baseline: bool) -> str:
    """A merged paper cell: its value on the level's first row only; the baseline has no pruned %."""
    if baseline and key.endswith("_pct"):
        return "—"
    return _paper(level[key], digits) if first else ""


def _cpsca_aligned(records: list[dict[str, Any]], arch: str) -> list[str]:
    """The note on the channel multiple an architecture's prunes rounded up to (see `proxy_multiple`)."""
    multiples = sorted({r["channel_multiple"] for r in records if r["arch"] == arch and r.get("channel_multiple")})
    if not multiples:
        return []
    return [
        f"Pruned widths rounded up to multiples of {', '.join(map(str, multiples))}: onnxruntime's multiple "
        "(--round-to auto) scaled with the grid's width, so a narrow proxy prunes as its full-width network would."
    ]


def cpsca_tables(
    records: list[dict[str, Any]],
    dataset: str,
    device: str,
    default_ratios: bool = False,
    caption: str = "",
    extra_notes: tuple[str, ...] = (),
) -> list[Table]:
    """CPSCA Tables 4 (VGG16) and 5 (ResNet56), our numbers next to the paper's, for the methods in `records`."""
    pds, ours, ref, stats, archs = _context("cpsca", records, dataset)
    dev_header, dev_measured = _device_columns(device)
    pairs = ["Params (M)", "Params pruned (%)", "GFLOPs = 2xMACs", "GFLOPs pruned (%)", "Time (ms)", "Acc (%)"]
    header = ["Method", "Ratio"] + [f"{p} {w}" for p in pairs + ["Acc change (pp)"] for w in ("ours", "paper")]
    measured = [False, False] + [True, False] * (len(pairs) + 1)
    methods = [m for m in METHOD_ORDER if any(r.get("method") == m for r in records)]
    tables = []
    for arch in archs:
        paper, number = CPSCA_PAPER[arch][pds], CPSCA_PAPER[arch]["table"]
        ratios = sorted({r["ratio"] for r in records if r["arch"] == arch and r["ratio"] is not None})
        table = Table(
            key=number.lower().replace(" ", ""),
            title=f"CPSCA {number}: pruning {ARCH_TITLES[arch]} on {ours}{ref}",
            header=header + dev_header,
            measured=measured + dev_measured,
            caption=caption,
            notes=[*CPSCA_NOTES, *extra_notes, *_cpsca_aligned(records, arch), *ordering_notes(stats, arch, ratios)],
        )
        b = paper["baseline"]
        rows = [("baseline", None, f"{arch}/baseline", b, b["acc"], True)]
        level_of = _paper_levels(arch, pds, ratios, stats, methods, default_ratios)
        for ratio in ratios:
            lv = level_of[ratio]
            for i, method in enumerate(methods):  # the paper's merged cells: one value per level, on its first row
                rows.append((method, ratio, f"{arch}/{method}/{ratio:.2f}", lv, lv["acc"].get(method), i == 0))
        for method, ratio, row_id, lv, acc, first in rows:
            s = stats[row_id]
            baseline = ratio is None
            merged = [_merged(lv, key, digits, first, baseline) for key, digits in MERGED_COLUMNS]
            table.rows.append(
                [
                    CPSCA_METHOD_NAMES.get(method, method),
                    "-" if baseline else f"{ratio:.2f}",
                    _fmt(s["params"], 1e-6, 3),
                    merged[0],
                    _fmt(s["params_pruned"], 100, 2),
                    merged[1],
                    _fmt(s["flops"], 1e-9, 5),
                    merged[2],
                    _fmt(s["flops_pruned"], 100, 2),
                    merged[3],
                    _fmt(s["host.per_image_ms"], digits=3),
                    merged[4],
                    _fmt(s["test_top1"], 100, 2),
                    _paper(acc, 2),
                    _fmt(s["acc_change_pp"], digits=2, signed=True),
                    "—" if baseline else _paper(None if acc is None else acc - b["acc"], 2, signed=True),
                    *_device_cells(device, s),
                ]
            )
            table.records.append({"row": row_id, "ours": s, "paper": lv if baseline else {**lv, "dataset": pds}})
        tables.append(table)
    return tables


def tables_markdown(title: str, tables: list[Table], preamble: list[str]) -> str:
    """The tables as one Markdown document; each note follows the first table it applies to."""
    lines = [f"# {title}", ""] + [f"- {p}" for p in preamble] + [""]
    said: set[str] = set()
    for t in tables:
        lines += [f"## {t.title}", ""] + ([f"*{t.caption}*", ""] if t.caption else [])
        lines.append("| " + " | ".join(t.header) + " |")
        lines.append("|" + "|".join("---" if i < t.label_columns else "---:" for i in range(len(t.header))) + "|")
        for row in t.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        lines.append("")
        notes = [n for n in t.notes if n not in said]
        said.update(notes)
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    return "\n".join(lines)
