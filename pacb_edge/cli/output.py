"""How the command line shows its results: one table function for every command, and the rows each command shows.

On a terminal a table is a rich box that fits the window. Anywhere else (CI, `| tee`, a file) it is a Markdown table
at full width, so no artifact name is ever cut: a log keeps every character, and the table pastes into a README.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

SHORT_ARCH = {"mobilenetv3_large": "MBv3-L", "repvgg_a0": "RepVGG-A0"}


def print_table(
    console: Console,
    title: str,
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    label_columns: int = 1,
    caption: str | None = None,
    dim: Sequence[bool] | None = None,
) -> None:
    """Print a table: the first `label_columns` columns left-aligned, the rest right-aligned; `dim[i]` greys column
    `i` on a terminal (the paper's numbers next to ours)."""
    rows = [list(r) for r in rows]
    if not console.is_terminal:
        console.print(markdown_table(title, header, rows, label_columns, caption), highlight=False, soft_wrap=True)
        return
    from rich.table import Table

    table = Table(title=title, caption=caption or None)
    for i, col in enumerate(header):
        style = "dim" if dim is not None and not dim[i] else None
        table.add_column(col, justify="left" if i < label_columns else "right", style=style)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def markdown_table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]], label_columns: int = 1, caption: str | None = None
) -> str:
    """A GitHub Markdown table with its title above and its caption below, every cell whole."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    align = ["---" if i < label_columns else "---:" for i in range(len(header))]
    parts = [f"{title}\n", line(header), line(align), *(line(r) for r in rows)]
    if caption:
        parts.append(f"\n{caption}")
    return "\n".join(parts) + "\n"


def _num(value: float | None, fmt: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(scale * value, fmt)


RUN_HEADER = ("stage", "test top-1 %", "val top-1 %", "params (M)", "MACs (M)", "FLOPs (M)", "wall s")


def run_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """One row per stage of a run's metrics.json (a prune stage shows its before / after)."""
    out = []
    for name, rec in metrics.get("stages", {}).items():
        rows = (
            [(name, rec)]
            if "test_top1" in rec
            else [(f"{name}:{k}", v) for k, v in rec.items() if isinstance(v, dict) and "test_top1" in v]
        )
        for label, r in rows:
            out.append(
                [
                    label,
                    _num(r["test_top1"], ".2f", 100),
                    _num(r["val_top1"], ".2f", 100),
                    _num(r["params"], ".3f", 1e-6),
                    _num(r["macs"], ".2f", 1e-6),
                    _num(r["flops"], ".2f", 1e-6),
                    f"{rec.get('wall_seconds', 0):.1f}",
                ]
            )
    return out


def prune_lines(metrics: dict[str, Any]) -> list[str]:
    """What a run's prune stage did beyond the table: the channel multiple, and a latency budget's outcome."""
    rec = metrics.get("stages", {}).get("prune")
    if not rec:
        return []
    lines = []
    align = rec.get("alignment") or {}
    if align:
        how = "auto: " + str(align.get("target")) if align.get("round_to") == "auto" else "--round-to"
        lines.append(f"pruned widths rounded up to multiples of {align.get('multiple')} ({how})")
    lat = rec.get("latency")
    if lat:
        budget = lat["budget"]
        asked = f"{budget['budget_ms']:g} ms" if budget.get("budget_ms") is not None else f"{budget['ratio']:g} x"
        threads = f"{lat['threads']} thread{'s' if lat['threads'] != 1 else ''}"
        lines.append(
            f"latency budget {asked} on {lat['runtime']} ({threads}): "
            f"{'met' if lat['met'] else 'MISSED'}, measured {lat['measured_ms']:.3f} ms = "
            f"{lat['latency_ratio']:.3f} x unpruned (predicted {lat['predicted_ms']:.3f} ms; MACs "
            f"{lat['macs_ratio']:.2f} x; round {lat['kept_round']} of {len(lat['rounds'])})"
        )
    return lines


EXPORT_HEADER = ("artifact", "format", "precision", "size (KB)", "top-1 %", "agreement %", "max |diff|", "time s")


def export_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per exported artifact, with its verification against PyTorch."""
    rows = []
    for a in report["artifacts"]:
        v = a.get("verification") or {}
        rows.append(
            [
                Path(a["path"]).name,
                a["format"],
                a["precision"],
                _num(a.get("size_bytes") or None, ".1f", 1 / 1024),
                _num(v.get("top1"), ".2f", 100),
                _num(v.get("top1_agreement"), ".2f", 100),
                _num(v.get("max_abs_diff"), ".2e"),
                f"{a['export_seconds']:.1f}",
            ]
        )
    return rows


BENCH_HEADER = (
    "",
    "artifact",
    "format",
    "prec",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "top-1 %",
    "acc. measured on",
    "size KB",
    "speed-up",
)


def bench_rows(results: Sequence[Any], icon: Any) -> list[list[str]]:
    """One row per `BenchResult`; `icon(status)` gives its status mark."""
    rows = []
    for r in results:
        lat = r.latency_ms or {}
        name = Path(r.artifact).name
        rows.append(
            [
                icon(r.status),
                name if name != "model.safetensors" else r.artifact,
                r.format,
                r.precision or "-",
                _num(lat.get("p50"), ".3f"),
                _num(lat.get("p90"), ".3f"),
                _num(lat.get("p99"), ".3f"),
                _num(r.top1, ".2f", 100),
                r.accuracy_source or "-",
                _num(r.size_bytes or None, ".1f", 1 / 1024),
                f"{r.speedup_vs_baseline:.2f}x" if r.speedup_vs_baseline else "-",
            ]
        )
    return rows


DEMO_HEADER = ("model", "acc %", "params M", "MACs M", "ONNX ms", "INT8 ms", "INT8 acc %", "INT8 KB")


def demo_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per demo model."""
    return [
        [
            f"{SHORT_ARCH.get(r['arch'], r['arch'])} {r['variant']}",
            _num(r["test_top1"], ".2f", 100),
            _num(r["params"], ".3f", 1e-6),
            _num(r["macs"], ".2f", 1e-6),
            _num(r.get("onnx_ms") or None, ".3f"),
            _num(r.get("tflite_int8_ms") or None, ".3f"),
            _num(r["int8_top1"], ".2f", 100),
            _num(r["tflite_int8_bytes"], ".1f", 1 / 1024),
        ]
        for r in result["rows"]
    ]


MODELS_HEADER = ("arch", "attention", "params (M)", "MACs (M)", "FLOPs (M) = 2xMACs")


def model_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One row per (architecture, attention) of the model table."""
    return [
        [
            r["arch"],
            r["attention"],
            _num(r["params"], ".3f", 1e-6),
            _num(r["macs"], ".2f", 1e-6),
            _num(r["flops"], ".2f", 1e-6),
        ]
        for r in rows
    ]
