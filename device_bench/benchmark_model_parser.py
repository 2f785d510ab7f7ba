"""Parse the text TFLite's `benchmark_model` prints, in its three forms: native, `INFO:`-prefixed, and logcat.

Pure functions, no adb. `parse_benchmark_output` turns one run's output into a dict (times in milliseconds);
`latency_from_parsed` turns that dict into the `latency_ms` dict of a `BenchResult`.

What the tool gives and what it does not: each stats line is `count= first= curr= min= max= avg= std=` in
microseconds, and newer binaries add `p5= median= p95=`. It prints no p90 or p99, so those stay None: they are
never made up from the other numbers.
"""

from __future__ import annotations

import re
from typing import Any

from pacb_edge.errors import PacbEdgeError

# Prefixes a line may carry, stripped before parsing.
#   logcat threadtime: "11-20 14:02:11.104  8123  8123 I tflite  : msg"
#   logcat brief:      "I/tflite  ( 8123): msg"
#   TFLITE_LOG:        "INFO: msg", "WARNING: msg", "ERROR: msg"
_LOGCAT_THREADTIME = re.compile(
    r"^\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+(?P<level>[VDIWEF])\s+(?P<tag>[^:]*?)\s*:\s?(?P<msg>.*)$"
)
_LOGCAT_BRIEF = re.compile(r"^(?P<level>[VDIWEF])/(?P<tag>[^(:]*?)\s*\(\s*\d+\):\s?(?P<msg>.*)$")
_TFLITE_LEVEL = re.compile(r"^(?P<level>INFO|WARNING|WARN|ERROR|VERBOSE|FATAL):\s?(?P<msg>.*)$")
_LOGCAT_LEVELS = {"V": "VERBOSE", "D": "VERBOSE", "I": "INFO", "W": "WARNING", "E": "ERROR", "F": "FATAL"}

_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_KEY_VALUE = re.compile(rf"(\w+)=({_NUMBER})")
_STATS_KEYS = ("first", "curr", "min", "max", "avg", "std", "p5", "median", "p95")

_GRAPH = re.compile(r"^Graph: \[(?P<path>.*)\]$")
_LOADED = re.compile(r"^Loaded model (?P<path>.*)$")
_THREADS = re.compile(r"^(?:#threads used for CPU inference|Num threads): \[(?P<n>-?\d+)\]$")
_USE_DELEGATE = re.compile(r"^Use (?P<name>gpu|nnapi|xnnpack|hexagon|coreml): \[(?P<on>\w+)\]$")
_INIT = re.compile(rf"^Initialized session in (?P<ms>{_NUMBER})ms\.?$")
_MODEL_SIZE = re.compile(rf"^The input model file size \(MB\): (?P<mb>{_NUMBER})$")
_SUMMARY = re.compile(
    rf"^Inference timings in us: Init: (?P<init>{_NUMBER}), First inference: (?P<first>{_NUMBER}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUMBER}), Inference \(avg\): (?P<inference>{_NUMBER})"
)
_MEMORY = re.compile(
    rf"^(?P<kind>Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
    rf"init=(?P<init>{_NUMBER}) overall=(?P<overall>{_NUMBER})"
)
_PEAK_MONITOR = re.compile(rf"^Overall peak memory footprint \(MB\) via periodic monitoring: (?P<mb>{_NUMBER})")
_REPLACING = re.compile(
    r"^Replacing (?P<n>\d+) out of (?P<m>\d+) node\(s\) with delegate \((?P<name>[^)]*)\) node"
    r"(?:, yielding (?P<parts>\d+) partitions?)?"
)
_APPLIED = re.compile(
    r"^Explicitly applied (?P<name>\S+) delegate, and the model graph will be (?P<how>completely|partially) "
    r"executed by the delegate(?: w/ (?P<kernels>\d+) delegate kernels)?"
)
_NOT_EXECUTED = re.compile(
    r"^Though (?P<name>\S+) delegate is explicitly applied, "
    r"the model graph will not be executed by the delegate"
)
_GPU_SPLIT = re.compile(r"(?P<n>\d+) operations will run on the GPU, and the remaining (?P<rest>\d+)")
_GPU_SPLIT_OLD = re.compile(r"Only the first (?P<n>\d+) ops will run on the GPU, and the remaining (?P<rest>\d+)")
# Lines a delegate prints (some at ERROR level) when it leaves part of the graph to the CPU:
# warnings, not failures.
_FALLBACK = re.compile(
    r"not supported by (?:the )?\w+ delegate|operations will run on the GPU|ops will run on the GPU"
    r"|will be partially executed|will not be executed by the delegate|cannot be handled by this delegate"
    r"|Failed to apply \w+ delegate|falling back|fall back|fallback",
    re.IGNORECASE,
)
_FAILED = re.compile(r"^Benchmarking failed\.?$")
_UNSUPPORTED_HEADER = re.compile(r"^(?:Following operations are|Next operations are) not supported", re.IGNORECASE)
_OP_LINE = re.compile(r"^[A-Z][A-Z0-9_]*:")  # "UNPACK: Operation is not supported." inside that block


def _strip_prefix(raw: str) -> tuple[str, str, str | None]:
    """One output line -> (form, message, level); form is "logcat", "info" or "native"."""
    line = raw.rstrip("\r\n")
    for pattern in (_LOGCAT_THREADTIME, _LOGCAT_BRIEF):
        m = pattern.match(line)
        if m:
            msg = m.group("msg").rstrip()
            inner = _TFLITE_LEVEL.match(msg)  # the APK can forward "ERROR: ..." text into logcat
            if inner:
                return "logcat", inner.group("msg").rstrip(), _norm_level(inner.group("level"))
            return "logcat", msg, _LOGCAT_LEVELS[m.group("level")]
    m = _TFLITE_LEVEL.match(line)
    if m:
        return "info", m.group("msg").rstrip(), _norm_level(m.group("level"))
    return "native", line.strip(), None


def _norm_level(level: str) -> str:
    return "WARNING" if level == "WARN" else level


def _us_to_ms(us: float) -> float:
    return round(us / 1000.0, 7)  # the tool prints at most 6 significant digits; drop float noise


def _stats(msg: str) -> dict[str, float] | None:
    """`count=... first=... avg=...` in microseconds -> {"count": n, "avg_ms": ...}, or None if not a stats
    line.
    """
    if not msg.startswith("count="):  # the op-profiling tables print "Timings (microseconds): count=..."
        return None
    values = {k: float(v) for k, v in _KEY_VALUE.findall(msg)}
    out: dict[str, float] = {"count": int(values.get("count", 0))}
    for key in _STATS_KEYS:
        if key in values:
            out[f"{key}_ms"] = _us_to_ms(values[key])
    return out


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """Parse one `benchmark_model` run's output (any of the three forms) into a dict; times in ms.

    Keys: form, model_path, threads, delegates_requested, init_ms, first_inference_ms, model_size_mb, warmup,
    inference (each a stats dict with count, first_ms, curr_ms, min_ms, max_ms, avg_ms, std_ms and, from newer
    binaries, p5_ms, median_ms, p95_ms), summary_us, memory_mb, delegate, delegates, fallback_warnings,
    errors. Raises `PacbEdgeError` carrying the tool's own error line when the run failed or printed no
    inference timings.
    """
    forms: list[str] = []
    parsed: dict[str, Any] = {
        "form": None,
        "model_path": None,
        "threads": None,
        "delegates_requested": [],
        "init_ms": None,
        "first_inference_ms": None,
        "model_size_mb": None,
        "warmup": None,
        "inference": None,
        "summary_us": None,
        "memory_mb": None,
        "delegate": None,
        "delegates": [],
        "fallback_warnings": [],
        "errors": [],
    }
    stats_lines: list[dict[str, float]] = []
    failed = False
    applied: list[dict[str, Any]] = []
    gpu_split: tuple[int, int] | None = None
    in_unsupported_block = False
    error_level: list[str] = []  # every ERROR line, fall-back notices included, for the failure message

    for raw in text.splitlines():
        if not raw.strip():
            continue
        form, msg, level = _strip_prefix(raw)
        forms.append(form)
        if not msg:
            continue
        if _FAILED.match(msg):
            failed = True
            continue
        if level in ("ERROR", "FATAL"):
            error_level.append(msg)
        if _UNSUPPORTED_HEADER.match(msg):
            in_unsupported_block = True
        elif in_unsupported_block and _OP_LINE.match(msg):
            parsed["fallback_warnings"].append(msg)
            continue
        else:
            in_unsupported_block = False
        if level in ("ERROR", "FATAL") and not _FALLBACK.search(msg):
            parsed["errors"].append(msg)
            continue
        if _FALLBACK.search(msg) or (level == "WARNING" and "delegate" in msg.lower()):
            parsed["fallback_warnings"].append(msg)
        stats = _stats(msg)
        if stats is not None:
            stats_lines.append(stats)
            continue
        if m := _GRAPH.match(msg):
            parsed["model_path"] = m.group("path")
        elif m := _LOADED.match(msg):
            parsed["model_path"] = parsed["model_path"] or m.group("path")
        elif m := _THREADS.match(msg):
            parsed["threads"] = int(m.group("n"))
        elif m := _USE_DELEGATE.match(msg):
            if m.group("on").lower() in ("1", "true"):
                parsed["delegates_requested"].append(m.group("name"))
        elif m := _INIT.match(msg):
            parsed["init_ms"] = float(m.group("ms"))
        elif m := _MODEL_SIZE.match(msg):
            parsed["model_size_mb"] = float(m.group("mb"))
        elif m := _SUMMARY.match(msg):
            parsed["summary_us"] = {k: float(v) for k, v in m.groupdict().items()}
        elif m := _MEMORY.match(msg):
            kind = "peak" if m.group("kind").startswith("Peak") else "delta"
            mem = parsed["memory_mb"] or {}
            mem.update(kind=kind, init=float(m.group("init")), overall=float(m.group("overall")))
            parsed["memory_mb"] = mem
        elif m := _PEAK_MONITOR.match(msg):
            mem = parsed["memory_mb"] or {}
            mem["peak_monitored"] = float(m.group("mb"))
            parsed["memory_mb"] = mem
        elif m := _REPLACING.match(msg):
            n, total = int(m.group("n")), int(m.group("m"))
            parsed["delegates"].append(
                {
                    "name": m.group("name"),
                    "nodes_delegated": n,
                    "nodes_total": total,
                    "fraction": n / total if total else None,
                    "whole_graph": n == total,
                    "partitions": int(m.group("parts")) if m.group("parts") else None,
                }
            )
        elif m := _APPLIED.match(msg):
            applied.append(
                {
                    "name": m.group("name"),
                    "whole_graph": m.group("how") == "completely",
                    "kernels": int(m.group("kernels")) if m.group("kernels") else None,
                }
            )
        elif m := _NOT_EXECUTED.match(msg):
            applied.append({"name": m.group("name"), "whole_graph": False, "kernels": 0})
        if m := (_GPU_SPLIT.search(msg) or _GPU_SPLIT_OLD.search(msg)):
            gpu_split = (int(m.group("n")), int(m.group("rest")))

    parsed["form"] = _dominant_form(forms)
    parsed["delegate"] = _merge_delegate(parsed["delegates"], applied, gpu_split)

    real = [s for s in stats_lines if s["count"] > 0]
    if len(stats_lines) >= 2:  # warm-up stats come first, the timed runs last
        parsed["warmup"] = stats_lines[0] if stats_lines[0]["count"] > 0 else None
        parsed["inference"] = stats_lines[-1] if stats_lines[-1]["count"] > 0 else None
    elif real:
        parsed["inference"] = real[0]
    summary = parsed["summary_us"]
    if summary:
        parsed["init_ms"] = _us_to_ms(summary["init"])
        parsed["first_inference_ms"] = _us_to_ms(summary["first"])
    elif parsed["warmup"]:
        parsed["first_inference_ms"] = parsed["warmup"].get("first_ms")

    if failed or parsed["inference"] is None:
        raise PacbEdgeError(_failure_message(text, parsed["errors"] or error_level, failed))
    return parsed


def _dominant_form(forms: list[str]) -> str | None:
    for form in ("logcat", "info"):
        if forms.count(form) * 2 >= len(forms) and form in forms:
            return form
    return "native" if forms else None


def _merge_delegate(
    replacing: list[dict[str, Any]], applied: list[dict[str, Any]], gpu_split: tuple[int, int] | None
) -> dict[str, Any] | None:
    """The last delegate's coverage, from its "Replacing N out of M" and "Explicitly applied" lines."""
    if replacing:
        delegate = dict(replacing[-1])
        if applied:
            delegate["kernels"] = applied[-1]["kernels"]
            delegate["applied_as"] = applied[-1]["name"]
        return delegate
    if not applied:
        if gpu_split is None:
            return None
        n, rest = gpu_split
        return {
            "name": "GPU",
            "nodes_delegated": n,
            "nodes_total": n + rest,
            "fraction": n / (n + rest or 1),
            "whole_graph": rest == 0,
            "partitions": None,
            "unit": "operations",
        }
    last = applied[-1]
    delegate = {
        "name": last["name"],
        "nodes_delegated": None,
        "nodes_total": None,
        "fraction": None,
        "whole_graph": last["whole_graph"],
        "partitions": None,
        "kernels": last["kernels"],
    }
    if last["kernels"] == 0:
        delegate.update(nodes_delegated=0, fraction=0.0)
    elif last["whole_graph"]:
        delegate["fraction"] = 1.0
    return delegate


def _failure_message(text: str, errors: list[str], failed: bool) -> str:
    if errors:
        unique = list(dict.fromkeys(errors))
        return "benchmark_model failed: " + " / ".join(unique)
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    if failed:
        return "benchmark_model failed" + (f" (last line: {last})" if last else "")
    if not last:
        return "benchmark_model printed nothing"
    return f"benchmark_model printed no inference timings (last line: {last[:200]})"


def latency_from_parsed(parsed: dict[str, Any]) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The `BenchResult.latency_ms` dict from a parsed run, and a note saying which numbers are exact.

    mean/std/min/max/count are the tool's own (avg/std/min/max over the timed runs). p50 is the tool's median
    when the binary prints one, otherwise the mean stands in for it (noted as approximated). p90/p99 are None:
    benchmark_model does not print them and they are not derived.
    """
    inf = parsed["inference"]
    latency: dict[str, float | None] = {
        "mean": inf["avg_ms"],
        "std": inf["std_ms"],
        "min": inf["min_ms"],
        "max": inf["max_ms"],
        "p50": inf.get("median_ms", inf["avg_ms"]),
        "p90": None,
        "p99": None,
        "count": inf["count"],
    }
    exact = ["mean", "std", "min", "max", "count"]
    approximated: dict[str, str] = {}
    if "median_ms" in inf:
        exact.append("p50")
    else:
        approximated["p50"] = "mean (this benchmark_model prints no median)"
    for key in ("p5", "p95"):
        if f"{key}_ms" in inf:
            latency[key] = inf[f"{key}_ms"]
            exact.append(key)
    note = {
        "source": "benchmark_model",
        "exact": exact,
        "approximated": approximated,
        "missing": ["p90", "p99"],
    }
    return latency, note


_TOPK_LOG = re.compile(rf"Top-(?P<k>\d+) Accuracy: (?P<acc>{_NUMBER})")
_NUM_RUNS_LOG = re.compile(r"Num evaluation runs: (?P<n>\d+)")
_TOPK_PROTO = re.compile(rf"topk_accuracies: (?P<acc>{_NUMBER})")
_NUM_RUNS_PROTO = re.compile(r"^\s*num_runs: (?P<n>\d+)", re.MULTILINE)


def parse_run_eval_output(text: str) -> dict[str, Any] | None:
    """Top-k accuracies and image count from TFLite's image-classification `run_eval`, or None if it has none.

    Newer binaries log `Top-1 Accuracy: 0.70` and `Num evaluation runs: 300`; older ones only write a text
    proto (`num_runs: 300`, then `topk_accuracies:` for k = 1..10) to `--output_file_path`. Both are read
    here.
    """
    topk = {int(m.group("k")): float(m.group("acc")) for m in _TOPK_LOG.finditer(text)}
    n = _NUM_RUNS_LOG.search(text)
    if not topk:
        topk = {k: float(m.group("acc")) for k, m in enumerate(_TOPK_PROTO.finditer(text), start=1)}
        n = _NUM_RUNS_PROTO.search(text)
    if 1 not in topk:
        return None
    return {"top1": topk[1], "top5": topk.get(5), "n": int(n.group("n")) if n else None, "topk": topk}
