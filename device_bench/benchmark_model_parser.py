"""Parse the text TFLite's `benchmark_model` prints, in its three forms: native, `INFO:`-prefixed, and logcat.

Pure functions, no adb. `parse_benchmark_output` turns one run's output into a dict (times in milliseconds);
`latency_from_parsed` turns that dict into the `latency_ms` dict of a `BenchResult`.

What the tool gives and what it does not: each stats line is tsl `Stat::OutputToStream` in microseconds (see
`_stats` for its three forms), and newer binaries add `p5= median= p95=`. It prints no p90 or p99, so those stay
None: they are never made up from the other numbers.
"""

from __future__ import annotations

import re
from typing import Any

from pacb_edge.core.errors import PacbEdgeError

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
_NUMBER_OR_NAN = rf"(?:{_NUMBER}|[-+]?nan)"  # `Stat::avg()` of no values is NaN, printed by ostream as "nan"
_KEY_VALUE = re.compile(rf"(\w+)=({_NUMBER})")
_STATS_KEYS = ("first", "curr", "min", "max", "avg", "std", "p5", "median", "p95")

_GRAPH = re.compile(r"^Graph: \[(?P<path>.*)\]$")
_LOADED = re.compile(r"^Loaded model (?P<path>.*)$")
_THREADS = re.compile(r"^(?:#threads used for CPU inference|Num threads): \[(?P<n>-?\d+)\]$")
_USE_DELEGATE = re.compile(r"^Use (?P<name>gpu|nnapi|xnnpack|hexagon|coreml): \[(?P<on>\w+)\]$")
_INIT = re.compile(rf"^Initialized session in (?P<ms>{_NUMBER})ms\.?$")
_MODEL_SIZE = re.compile(rf"^The input model file size \(MB\): (?P<mb>{_NUMBER})$")
# benchmark_model.cc BenchmarkLoggingListener::OnBenchmarkEnd; "Warmup (avg): nan" when no warm-up run was made
# (--warmup_runs=0 with --warmup_min_secs <= 0), and then "First inference: 0" is an empty Stat's first value.
_SUMMARY = re.compile(
    rf"^Inference timings in us: Init: (?P<init>{_NUMBER}), First inference: (?P<first>{_NUMBER}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUMBER_OR_NAN}), Inference \(avg\): (?P<inference>{_NUMBER_OR_NAN})"
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
# xnnpack_delegate.cc prints this once, when an XNNPACK delegate is created: explicitly (--use_xnnpack=true) or
# lazily by the interpreter as its default delegate (see delegates.py).
_XNNPACK_CREATED = re.compile(r"^Created TensorFlow Lite XNNPACK delegate for CPU\.?$")
# The interpreter's lazily applied default XNNPACK (interpreter.cc `ApplyLazyDelegateProviders`): applied, or refused.
# Runtimes up to TF ~2.12 refuse it after a delegate that leaves the graph immutable (GPU, NNAPI): subgraph.cc
# "ModifyGraphWithDelegate is disallowed when graph is immutable", and the rest runs on the built-in kernels. Newer
# ones apply it ("CASE 2" in Subgraph::ModifyGraphWithDelegate). Only the log says which happened.
_DEFAULT_APPLIED = re.compile(r"^Successfully applied the default TensorFlow Lite delegate")
_DEFAULT_REFUSED = re.compile(
    r"^(?:Failed to apply the default TensorFlow Lite delegate|Ignoring failed application of the default "
    r"TensorFlow Lite delegate|ModifyGraphWithDelegate is disallowed when graph is immutable)"
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

# How a delegate got the nodes of a "Replacing N out of M node(s)" line (`parsed["delegates"][i]["applied"]`).
APPLIED_EXPLICIT = "explicit"  # asked for by a flag; benchmark_model then logs "Explicitly applied X delegate"
APPLIED_LAZY = "default-lazy"  # the interpreter's default XNNPACK delegate, applied at AllocateTensors


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


def _stats(msg: str) -> dict[str, Any] | None:
    """A stats line (microseconds) -> {"count": n, "avg_ms": ..., ...} in ms; None if `msg` is not a stats line.

    benchmark_model.cc `BenchmarkModel::Run` (L273-274) logs `StatWithPercentiles::OutputToStream`, which is tsl's
    `Stat::OutputToStream` (tensorflow/tensorflow third_party/xla/xla/tsl/util/stats_calculator.h) followed, in
    newer binaries, by ` p5=.. median=.. p95=..`. `Stat` prints one of three forms:

    - no value:                     `count=0`
    - one value, or all values equal: `count=N curr=V`, with `(all same)` glued to V when N > 1 (no first, min,
      max, avg or std: `all_same()` is `min_ == max_`)
    - otherwise:                    `count=N first=.. curr=.. min=.. max=.. avg=.. std=..`

    In the second form every run took V us, so first = min = max = avg = V and std = 0 exactly; they are filled
    in and the dict gets `all_same: True` so the record can say the line had that form.
    """
    if not msg.startswith("count="):  # the op-profiling tables print "Timings (microseconds): count=..."
        return None
    values = {k: float(v) for k, v in _KEY_VALUE.findall(msg)}
    out: dict[str, Any] = {"count": int(values.get("count", 0))}
    for key in _STATS_KEYS:
        if key in values:
            out[f"{key}_ms"] = _us_to_ms(values[key])
    if out["count"] > 0 and "avg" not in values and "curr" in values:
        curr = out["curr_ms"]
        out.update(first_ms=curr, min_ms=curr, max_ms=curr, avg_ms=curr, std_ms=0.0, all_same=True)
    return out


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """Parse one `benchmark_model` run's output (any of the three forms) into a dict; times in ms.

    Keys: form, model_path, threads, delegates_requested, init_ms, first_inference_ms, model_size_mb, warmup,
    inference (each a stats dict with count, first_ms, curr_ms, min_ms, max_ms, avg_ms, std_ms, from newer
    binaries p5_ms, median_ms, p95_ms, and all_same when the line was `count=N curr=V`), summary_us, memory_mb,
    delegate (the explicitly applied delegate's coverage, see `_merge_delegate`), delegates (one entry per
    "Replacing N out of M node(s)" line, `applied` = APPLIED_EXPLICIT, APPLIED_LAZY or None when the log does not
    say), xnnpack_created ("before-explicit" / "after-explicit": where XNNPACK's "Created ..." line stands
    relative to the "Explicitly applied" lines; None when absent), default_xnnpack ("applied" / "refused" when the
    interpreter logged what became of its lazily applied XNNPACK, else None), fallback_warnings, errors. Raises
    `PacbEdgeError` carrying the tool's own error line when the run failed or printed no inference timings.
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
        "xnnpack_created": None,
        "default_xnnpack": None,
        "fallback_warnings": [],
        "errors": [],
    }
    stats_lines: list[dict[str, Any]] = []
    failed = False
    applied: list[dict[str, Any]] = []
    claimed = 0  # parsed["delegates"][:claimed] are settled (claimed by an "Explicitly applied" line, or passed)
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
        if _DEFAULT_REFUSED.match(msg):
            parsed["default_xnnpack"] = "refused"
            parsed["fallback_warnings"].append(msg)
            continue
        if _DEFAULT_APPLIED.match(msg):
            parsed["default_xnnpack"] = "applied"
            continue
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
            parsed["summary_us"] = {k: None if "nan" in v else float(v) for k, v in m.groupdict().items()}
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
                    "applied": None,
                }
            )
        elif (m := _APPLIED.match(msg)) or (m := _NOT_EXECUTED.match(msg)):
            # benchmark_tflite_model.cc (L1271-1368) logs this right after it applied one explicit delegate, so
            # the "Replacing" line just before it (if any) is that delegate's.
            line = {
                "name": m.group("name"),
                "whole_graph": m.groupdict().get("how") == "completely",
                "kernels": int(m.group("kernels")) if m.groupdict().get("kernels") else None,
            }
            if "how" not in m.groupdict():  # "Though X delegate is explicitly applied, ... will not be executed"
                line["kernels"] = 0
            applied.append(line)
            unclaimed = parsed["delegates"][claimed:]
            if unclaimed and line["kernels"] != 0:
                unclaimed[-1].update(applied=APPLIED_EXPLICIT, applied_as=line["name"], kernels=line["kernels"])
            claimed = len(parsed["delegates"])
        elif _XNNPACK_CREATED.match(msg):
            parsed["xnnpack_created"] = "after-explicit" if applied else "before-explicit"
        if m := (_GPU_SPLIT.search(msg) or _GPU_SPLIT_OLD.search(msg)):
            gpu_split = (int(m.group("n")), int(m.group("rest")))

    parsed["form"] = _dominant_form(forms)
    _mark_lazy_xnnpack(parsed, claimed, bool(applied))
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
        # no warm-up run: "Warmup (avg): nan" and "First inference: 0" (an empty Stat's first value)
        parsed["first_inference_ms"] = None if summary["warmup"] is None else _us_to_ms(summary["first"])
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


def _mark_lazy_xnnpack(parsed: dict[str, Any], claimed: int, explicit_lines: bool) -> None:
    """Mark the XNNPACK "Replacing" lines no explicit delegate claimed as the interpreter's lazily applied default.

    Such a line comes after every "Explicitly applied" line (the default delegate is applied at AllocateTensors,
    after the explicit ones: interpreter.cc L190-196), or in a run that did not ask for XNNPACK at all.
    """
    asked_for_xnnpack = "xnnpack" in parsed["delegates_requested"]
    for i, entry in enumerate(parsed["delegates"]):
        if entry["applied"] is not None or "xnnpack" not in str(entry["name"]).lower():
            continue
        if (explicit_lines and i >= claimed) or not asked_for_xnnpack:
            entry["applied"] = APPLIED_LAZY


def _merge_delegate(
    replacing: list[dict[str, Any]], applied: list[dict[str, Any]], gpu_split: tuple[int, int] | None
) -> dict[str, Any] | None:
    """The coverage of the last explicitly applied delegate, else of the last delegate the log shows at all.

    A "Replacing N out of M" line claimed by an "Explicitly applied" line wins; then the "Explicitly applied" line
    alone (no node counts); then an unclaimed "Replacing" line (e.g. the default XNNPACK of a run with no delegate
    flag); then the GPU delegate's "N operations will run on the GPU" line.
    """
    explicit = [d for d in replacing if d.get("applied") == APPLIED_EXPLICIT]
    if explicit:
        return dict(explicit[-1])
    if applied:
        last = applied[-1]
        delegate = {
            "name": last["name"],
            "nodes_delegated": None,
            "nodes_total": None,
            "fraction": None,
            "whole_graph": last["whole_graph"],
            "partitions": None,
            "kernels": last["kernels"],
            "applied": APPLIED_EXPLICIT,
        }
        if last["kernels"] == 0:
            delegate.update(nodes_delegated=0, fraction=0.0)
        elif last["whole_graph"]:
            delegate["fraction"] = 1.0
        return delegate
    if replacing:
        return dict(replacing[-1])
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

    mean/std/min/max/count are the tool's own (avg/std/min/max over the timed runs; from a `count=N curr=V` line
    they are V, V, V and std 0, see `_stats`). p50 is the tool's median when the binary prints one, or V when all
    runs took V; otherwise the mean stands in for it (noted as approximated). p90/p99 are None: benchmark_model
    does not print them and they are not derived.
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
    all_same = bool(inf.get("all_same"))
    if "median_ms" in inf or all_same:
        exact.append("p50")
    else:
        approximated["p50"] = "mean (this benchmark_model prints no median)"
    for key in ("p5", "p95"):
        if f"{key}_ms" in inf:
            latency[key] = inf[f"{key}_ms"]
            exact.append(key)
    note: dict[str, Any] = {
        "source": "benchmark_model",
        "exact": exact,
        "approximated": approximated,
        "missing": ["p90", "p99"],
    }
    if all_same:
        note["all_same"] = (
            f"benchmark_model printed `count={inf['count']} curr=...` (one timed run, or all runs equal): "
            "mean, median, min and max are that value and std is 0"
        )
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
