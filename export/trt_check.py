"""TensorRT target profiles and a pre-flight check of ONNX graphs against them, with no TensorRT installed.

A TensorRT engine is built on the device, after the upload, by that device's ONNX parser; a graph it cannot parse
fails there, late and far away. So every ONNX file bound for TensorRT is checked here first, the way
`polygraphy inspect capability` would on the device: the opset against the parser's highest one, every node's
operator against the parser's operator table, and the table's restrictions that bite the models of this project.

The operator tables are package data (`export/trt_ops/tensorrt-<version>.txt`), written from each version's
published table (onnx-tensorrt's `docs/operators.md` on its release branch); see `export/trt_ops/README.md`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pacb_edge.errors import PacbEdgeError

DEFAULT_TRT = "8.2"


@dataclass(frozen=True)
class TrtProfile:
    """One TensorRT version as a deployment target: its JetPack, highest ONNX opset and operator table."""

    version: str
    jetpack: str
    max_opset: int
    ops_file: str

    @property
    def label(self) -> str:
        return f"TensorRT {self.version} (JetPack {self.jetpack})"

    def operators(self) -> dict[str, str]:
        """Operator name -> its restrictions text ("" when none), read from the package data."""
        return _read_ops(self.ops_file)


# Oldest first: a problem names the first profile that would take the graph.
PROFILES: dict[str, TrtProfile] = {
    p.version: p
    for p in (
        TrtProfile("8.2", "4.6", 13, "tensorrt-8.2.txt"),
        TrtProfile("8.4", "5.0", 17, "tensorrt-8.4.txt"),
        TrtProfile("8.5", "5.1", 17, "tensorrt-8.5.txt"),
        TrtProfile("8.6", "6.0", 17, "tensorrt-8.6.txt"),
        # JetPack 6.1/6.2 ship 10.3, whose table is not public in the form the others are; 10.1's stands in.
        TrtProfile("10", "6.1", 20, "tensorrt-10.1.txt"),
    )
}


def get_profile(version: str | None) -> TrtProfile:
    """The profile for `version` ("8.2", "8.2.1.8", "10" ...: the longest known prefix); unknown -> one line."""
    v = str(version or DEFAULT_TRT).strip().lower().removeprefix("trt").removeprefix("tensorrt").strip()
    if v in PROFILES:
        return PROFILES[v]
    matches = [p for key, p in PROFILES.items() if v.startswith(key + ".") or key.startswith(v + ".")]
    if len(matches) == 1:
        return matches[0]
    raise PacbEdgeError(
        f"unknown TensorRT version {version!r}; known: "
        + ", ".join(f"{p.version} (JetPack {p.jetpack})" for p in PROFILES.values())
    )


@functools.cache
def _read_ops(name: str) -> dict[str, str]:
    path = resources.files("pacb_edge.export") / "trt_ops" / name
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        raise PacbEdgeError(f"the TensorRT operator table {name} is missing from the installed package") from None
    ops: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        op, _, restriction = line.partition("\t")
        ops[op.strip()] = restriction.strip()
    return ops


@dataclass(frozen=True)
class Problem:
    """One reason the target's parser would refuse the graph."""

    op: str
    node: str
    reason: str
    first_version: str | None  # the first known profile that takes it, None if none does

    def line(self) -> str:
        where = f"{self.op} (node {self.node})" if self.node else self.op
        if self.first_version:
            fix = f"first supported by {PROFILES[self.first_version].label}"
        else:
            fix = "not supported by any TensorRT version known here"
        return f"{where}: {self.reason}; {fix}"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "node": self.node, "reason": self.reason, "first_version": self.first_version}


class _Graph:
    """Shapes and constants of a model, for the restriction rules."""

    def __init__(self, model) -> None:
        import onnx

        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - shapes are a help; rules that need one fall back to initializers
            inferred = model
        self.opset = _model_opset(model) or 13
        self.initializers = {t.name: list(t.dims) for t in model.graph.initializer}
        self.ranks: dict[str, int] = {}
        for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
                self.ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
        for name, dims in self.initializers.items():
            self.ranks[name] = len(dims)
        self.constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and n.output}

    def is_constant(self, name: str) -> bool:
        """An initializer or a `Constant` node's output: what the tables call "an initializer"."""
        return not name or name in self.initializers or name in self.constants

    def rank(self, name: str) -> int | None:
        if name in self.ranks:
            return self.ranks[name]
        node = self.constants.get(name)
        if node is not None:
            for attr in node.attribute:
                if attr.name == "value":
                    return len(attr.t.dims)
        return None

    def input_names(self, op_type: str) -> list[str]:
        """The formal input names of `op_type` at this model's opset (from ONNX's own schemas)."""
        import onnx

        try:
            return [i.name for i in onnx.defs.get_schema(op_type, self.opset).inputs]
        except Exception:  # noqa: BLE001 - an unknown operator has no schema; nothing to check
            return []


# The restrictions column of the published tables is prose. Two of its phrasings are checked as written, per version:
# "2D or 3D ... only" (convolution and pooling ranks) and "`X` must be an initializer" (inputs fixed at build time).
_ND_ONLY = re.compile(r"2D or 3D", re.IGNORECASE)
_SENTENCES = re.compile(r"\\?\.\s+|<br\s*/?>|;\s+")
_MUST_BE_CONSTANT = re.compile(r"must be (?:an? )?initi?a?i?li[sz]ers?", re.IGNORECASE)
_BACKTICKED = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def _spatial_dims(node, graph: _Graph) -> int | None:
    for attr in node.attribute:
        if attr.name == "kernel_shape":
            return len(attr.ints)
    for name in node.input[1:2] or node.input[:1]:
        rank = graph.rank(name)
        if rank is not None:
            return rank - 2
    rank = graph.rank(node.input[0]) if node.input else None
    return rank - 2 if rank is not None else None


def _violations(node, graph: _Graph, restriction: str) -> list[str]:
    """What `node` does that `restriction` (one cell of the table) forbids."""
    found: list[str] = []
    if _ND_ONLY.search(restriction):
        dims = _spatial_dims(node, graph)
        if dims is not None and dims not in (2, 3):
            found.append(f"a {dims}-D {node.op_type}, where the table allows 2-D and 3-D only")
    for sentence in _SENTENCES.split(restriction):
        if not _MUST_BE_CONSTANT.search(sentence):
            continue
        formal = graph.input_names(node.op_type)
        for name in _BACKTICKED.findall(sentence):
            if name in formal:
                i = formal.index(name)
                if i < len(node.input) and not graph.is_constant(node.input[i]):
                    found.append(f"input `{name}` is computed at run time, where the table wants an initializer")
    return found


def _model_opset(model) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def load_onnx(path: str | Path):
    import onnx

    p = Path(path)
    if not p.is_file():
        raise PacbEdgeError(f"ONNX file not found: {p}")
    try:
        return onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError types
        raise PacbEdgeError(f"{p} is not a readable ONNX file ({type(e).__name__})") from None


def check_model(model, version: str | None = DEFAULT_TRT) -> list[Problem]:
    """Every reason `version`'s ONNX parser would refuse `model` (an `onnx.ModelProto` or a path); [] means ok."""
    profile = get_profile(version)
    if isinstance(model, str | Path):
        model = load_onnx(model)
    problems: list[Problem] = []
    opset = _model_opset(model)
    if opset is not None and opset > profile.max_opset:
        first = next((p.version for p in PROFILES.values() if p.max_opset >= opset), None)
        why = f"opset {opset} is above {profile.max_opset}, the highest {profile.label} reads"
        problems.append(Problem("opset", "", why, first))
    ops = profile.operators()
    graph = _Graph(model)
    for i, node in enumerate(model.graph.node):
        name = node.name or f"#{i}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(Problem(node.op_type, name, f"custom operator of domain {node.domain!r}", None))
            continue
        if node.op_type not in ops:
            first = next((p.version for p in PROFILES.values() if node.op_type in p.operators()), None)
            problems.append(Problem(node.op_type, name, f"{profile.label}'s ONNX parser has no importer for it", first))
            continue
        for why in _violations(node, graph, ops[node.op_type]):
            first = next(
                (
                    p.version
                    for p in PROFILES.values()
                    if node.op_type in p.operators() and not _violations(node, graph, p.operators()[node.op_type])
                ),
                None,
            )
            problems.append(Problem(node.op_type, name, why, first))
    return problems


def preflight(path: str | Path, version: str | None = DEFAULT_TRT) -> TrtProfile:
    """Raise a `PacbEdgeError` naming the problems unless `version`'s parser takes the file; returns the profile."""
    profile = get_profile(version)
    problems = check_model(path, profile.version)
    if problems:
        shown = "; ".join(p.line() for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise PacbEdgeError(f"{profile.label} cannot parse {Path(path).name}: {shown}{more}")
    return profile
