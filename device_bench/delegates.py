"""TFLite delegates by name, for benchmark_model on Android: the flags each name passes, and what a run reports.

benchmark_model applies XNNPACK even when given no delegate flag: "the XNNPACK delegate could be implicitly applied
by the TF Lite runtime regardless the value of this parameter. To disable this implicit application, set the value
to false explicitly" (tensorflow/lite/tools/delegates/README.md, `use_xnnpack`; benchmark_tflite_model.cc
`GetOpResolver` then builds the interpreter with `BuiltinOpResolverWithoutDefaultDelegates`). So:

- `cpu` passes `--use_xnnpack=false`: TFLite's built-in CPU kernels, no delegate.
- `xnnpack` (the default, what benchmark_model does when given nothing) passes `--use_xnnpack=true`.
- `gpu` passes `--use_gpu=true`, `nnapi` passes `--use_nnapi=true`, and nothing about XNNPACK: the nodes the
  delegate leaves to the CPU run the way the default runtime runs them, which depends on the runtime's version. The
  interpreter tries its default XNNPACK lazily, after the explicit delegates (`Interpreter::ApplyLazyDelegateProviders`,
  "to allow other user-level delegates to be applied first"). A GPU or NNAPI delegate does not allow dynamic tensors
  and leaves the graph immutable; runtimes up to TF ~2.12 then refuse the lazy XNNPACK ("ModifyGraphWithDelegate is
  disallowed when graph is immutable", subgraph.cc) and the rest runs on TFLite's built-in kernels, while newer ones
  apply it (`Subgraph::ModifyGraphWithDelegate`, "CASE 2"). The record does not assume either: `rest_ran_on` is
  "xnnpack" when the log shows XNNPACK replacing nodes after the explicit delegate, "builtin kernels" when it shows
  the refusal, and None when the log says neither.

The record names the delegate always (`extra["delegate"]["requested"]`, `cpu` included) and how much of the graph
it took (`nodes_delegated` / `nodes_total`, `fraction`, `whole_graph`, from "Replacing N out of M node(s)").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Delegate name -> benchmark_model flags (tools/delegates/README.md); see the module docstring for why.
DELEGATE_FLAGS: dict[str, tuple[str, ...]] = {
    "cpu": ("--use_xnnpack=false",),
    "xnnpack": ("--use_xnnpack=true",),
    "gpu": ("--use_gpu=true",),
    "nnapi": ("--use_nnapi=true",),
}
DEFAULT_DELEGATE = "xnnpack"  # what benchmark_model applies when given no delegate flag


def _coverage_for(parsed: dict[str, Any], requested: str) -> dict[str, Any] | None:
    """The coverage entry of the requested delegate (matched by name); for cpu, whatever delegate the tool reported."""
    if requested == "cpu":
        return parsed.get("delegate")
    entries = list(parsed.get("delegates") or [])
    if parsed.get("delegate") and parsed["delegate"] not in entries:
        entries.append(parsed["delegate"])
    token = requested.lower()
    named = [d for d in entries if token in str(d.get("name", "")).lower().replace("_", "")]
    named += [d for d in entries if token in str(d.get("applied_as", "")).lower()]
    return named[-1] if named else None


def _rest_ran_on(parsed: dict[str, Any]) -> str | None:
    """What ran the nodes an explicit GPU/NNAPI delegate left: "xnnpack", "builtin kernels", or None (unknown)."""
    if any(d.get("applied") == "default-lazy" for d in parsed.get("delegates") or []):
        return "xnnpack"
    if parsed.get("default_xnnpack") == "refused":
        return "builtin kernels"
    return None


def _share(coverage: Mapping[str, Any]) -> str:
    n, m = coverage.get("nodes_delegated"), coverage.get("nodes_total")
    return f"{n} of {m} nodes" if n is not None and m else "only part of the graph"


def delegate_record(parsed: dict[str, Any], requested: str) -> tuple[dict[str, Any], list[str]]:
    """`extra["delegate"]` of a run: the delegate asked for, its flags, how much of the graph it took; and warnings.

    Keys always present: requested, flags, name (as the tool printed it), nodes_delegated, nodes_total, fraction,
    whole_graph. A `cpu` run that no delegate touched has nodes_delegated 0 and fraction 0.0.
    """
    coverage = _coverage_for(parsed, requested)
    info: dict[str, Any] = {
        "requested": requested,
        "flags": list(DELEGATE_FLAGS[requested]),
        "name": None,
        "nodes_delegated": None,
        "nodes_total": None,
        "fraction": None,
        "whole_graph": None,
    }
    if requested == "cpu" and coverage is None:
        info.update(nodes_delegated=0, fraction=0.0, whole_graph=False)
    info.update(coverage or {})
    others = [d for d in parsed.get("delegates") or [] if coverage is None or d.get("name") != coverage.get("name")]
    if others:
        info["other_delegates"] = others  # e.g. XNNPACK taking the nodes a GPU delegate left to the CPU
    info["tool_messages"] = parsed["fallback_warnings"]
    if requested in ("gpu", "nnapi") and coverage is not None and not coverage.get("whole_graph"):
        info["rest_ran_on"] = _rest_ran_on(parsed)
    warnings: list[str] = []
    if requested == "cpu":
        if coverage is not None and coverage.get("nodes_delegated") != 0:
            warnings.append(
                f"cpu requested (--use_xnnpack=false) but benchmark_model reported {coverage.get('name')} taking "
                f"{'the whole graph' if coverage.get('whole_graph') else _share(coverage)}: "
                "this binary ignored the flag, so the latency is not a plain-CPU number"
            )
    elif coverage is None:
        warnings.append(f"requested delegate {requested} reported no node taken: the model probably ran on the CPU")
    elif not coverage.get("whole_graph"):
        warnings.append(
            f"{requested} delegate took {_share(coverage)}; the rest ran on the CPU "
            f"({info.get('rest_ran_on') or 'the log does not say whether on XNNPACK or the built-in kernels'}), "
            "so the latency is a mixed delegate+CPU number"
        )
    return info, warnings
