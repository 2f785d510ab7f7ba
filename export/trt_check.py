"""TensorRT target profiles and a pre-flight check of ONNX graphs against them, with no TensorRT installed.

A TensorRT engine is built on the device, after the upload, by that device's ONNX parser; a graph it cannot parse
fails there, late and far away. So every ONNX file bound for TensorRT is checked here first, the way
`polygraphy inspect capability` would on the device: the opset against the parser's highest one, every node's
operator against the parser's operator table, and the table's restrictions that bite the models of this project.

The operator tables are package data (`export/trt_ops/tensorrt-<version>.txt`), written by `export/trt_ops/generate.py`
from each release's parser source (onnx/onnx-tensorrt, `DEFINE_BUILTIN_OP_IMPORTER` at the release tag), not from
the published `docs/operators.md`, which differs from the code (see `export/trt_ops/README.md`). Each table also
names the rules (`RULES`) its parser enforces, with the file and line of the assertion.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError

# JetPack 4.6 (L4T R32.6.1) ships TensorRT 8.0.1 and 4.6.1+ ship 8.2.1: 8.0's parser is the one every 4.6.x Nano has.
DEFAULT_TRT = "8.0"


@dataclass(frozen=True)
class TrtProfile:
    """One TensorRT version as a deployment target: its JetPack, highest ONNX opset, importers and rules."""

    version: str
    jetpack: str
    max_opset: int
    ops_file: str

    @property
    def label(self) -> str:
        jetpack = f" (JetPack {self.jetpack})" if self.jetpack != "-" else ""
        return f"TensorRT {self.version}{jetpack}"

    def operators(self) -> dict[str, str]:
        """Operator name -> where its importer is in the parser source ("file:line")."""
        return _read_table(self.ops_file)[0]

    def rules(self) -> dict[str, str]:
        """Rule id (see `RULES`) -> where the parser enforces it."""
        return _read_table(self.ops_file)[1]


# Oldest first: a problem names the first profile that would take the graph.
PROFILES: dict[str, TrtProfile] = {
    p.version: p
    for p in (
        TrtProfile("8.0", "4.6", 13, "tensorrt-8.0.txt"),
        TrtProfile("8.2", "4.6.1+", 13, "tensorrt-8.2.txt"),
        TrtProfile("8.4", "5.0", 17, "tensorrt-8.4.txt"),
        TrtProfile("8.5", "5.1", 17, "tensorrt-8.5.txt"),
        TrtProfile("8.6", "6.0", 17, "tensorrt-8.6.txt"),
        TrtProfile("10.1", "-", 20, "tensorrt-10.1.txt"),
        TrtProfile("10.3", "6.1/6.2", 20, "tensorrt-10.3.txt"),
    )
}
_ALIASES = {"10": "10.3"}  # what JetPack 6.1/6.2 ship


def get_profile(version: str | None) -> TrtProfile:
    """The profile for `version` ("8.0", "8.2.1.8", "10" ...: the longest known prefix); unknown -> one line."""
    v = str(version or DEFAULT_TRT).strip().lower().removeprefix("trt").removeprefix("tensorrt").strip()
    v = _ALIASES.get(v, v)
    if v in PROFILES:
        return PROFILES[v]
    matches = [p for key, p in PROFILES.items() if v.startswith(key + ".")]
    if len(matches) == 1:
        return matches[0]
    raise PacbEdgeError(
        f"unknown TensorRT version {version!r}; known: "
        + ", ".join(p.version + (f" (JetPack {p.jetpack})" if p.jetpack != "-" else "") for p in PROFILES.values())
    )


def profile_for_device(device_version: str | None, requested: str | None) -> tuple[TrtProfile, str | None]:
    """The profile to check a graph against for a device that reports `device_version` (None: it could not say),
    and the one line to show when that is not the `--trt` the user asked for (else None)."""
    asked = get_profile(requested)
    if not device_version:
        return asked, None
    try:
        found = get_profile(device_version)
    except PacbEdgeError:
        unknown = f"the device has TensorRT {device_version}, which no profile here covers"
        return asked, f"{unknown}: checked against --trt {asked.version}"
    if found.version != asked.version:
        return (
            found,
            f"the device has TensorRT {device_version}: checked against {found.label}, not --trt {asked.version}",
        )
    return found, None


@functools.cache
def _read_table(name: str) -> tuple[dict[str, str], dict[str, str]]:
    path = resources.files("pacb_edge.export") / "trt_ops" / name
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        raise PacbEdgeError(f"the TensorRT operator table {name} is missing from the installed package") from None
    ops: dict[str, str] = {}
    rules: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# rule: "):
            rule, _, where = line.removeprefix("# rule: ").partition("\t")
            rules[rule.strip()] = where.strip()
        elif line.strip() and not line.startswith("#"):
            op, _, where = line.partition("\t")
            ops[op.strip()] = where.strip()
    return ops, rules


@dataclass(frozen=True)
class Problem:
    """One reason the target's parser would refuse the graph."""

    op: str
    node: str
    reason: str
    first_version: str | None  # the first known profile that takes it (at the model's opset), None if none does
    source: str | None = None  # where the parser enforces it (onnx-tensorrt "file:line")

    def line(self) -> str:
        where = f"{self.op} (node {self.node})" if self.node else self.op
        if self.first_version:
            fix = f"first supported by {PROFILES[self.first_version].label}"
        else:
            fix = "not supported by any TensorRT version known here"
        src = f" (onnx-tensorrt {self.source})" if self.source else ""
        return f"{where}: {self.reason}{src}; {fix}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "node": self.node,
            "reason": self.reason,
            "first_version": self.first_version,
            "source": self.source,
        }


class _Graph:
    """The constants and network input/output types of a model, for the rules."""

    def __init__(self, model) -> None:
        self.opset = _model_opset(model) or 13
        self.initializers = {t.name: list(t.dims) for t in model.graph.initializer}
        self.tensors = {t.name: t for t in model.graph.initializer}
        self.io_types = {
            vi.name: vi.type.tensor_type.elem_type
            for vi in (*model.graph.input, *model.graph.output)
            if vi.type.HasField("tensor_type") and vi.name not in self.initializers
        }
        self.constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and n.output}

    def is_constant(self, name: str) -> bool:
        """An initializer or a `Constant` node's output: what the tables call "an initializer"."""
        return not name or name in self.initializers or name in self.constants

    def values(self, name: str):
        """The numpy value of an initializer or `Constant` output, else None."""
        from onnx import numpy_helper

        if name in self.tensors:
            return numpy_helper.to_array(self.tensors[name])
        node = self.constants.get(name)
        for attr in node.attribute if node is not None else ():
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
        return None


def _attr(node, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _runtime_input(node, graph: _Graph, index: int) -> bool:
    """Whether input `index` is given and computed at run time (not an initializer or `Constant`)."""
    return len(node.input) > index and bool(node.input[index]) and not graph.is_constant(node.input[index])


def _resize_scales(node, graph: _Graph) -> str | None:
    index = 1 if graph.opset < 11 else 2  # Resize-10: (X, scales); 11+: (X, roi, scales, sizes)
    if _runtime_input(node, graph, index):
        return "its scales are computed at run time, where the parser wants an initializer"
    return None


def _zero_point(node, graph: _Graph) -> str | None:
    if len(node.input) < 3 or not node.input[2]:
        return None
    value = graph.values(node.input[2])
    if value is not None and value.any():
        return "a non-zero zero point (asymmetric quantization): 8.x refuses it, 10.x replaces it with zeros"
    return None


def _dilated_pool(node, graph: _Graph) -> str | None:
    if any(d != 1 for d in _attr(node, "dilations", []) or []):
        return "dilated pooling, which the parser refuses"
    return None


_CONSTANT_INPUT = "its `{name}` input is computed at run time, where the parser wants an initializer"

# Rule id -> (the operators it concerns, what a node does that the rule forbids or None). A rule applies to a
# version whose table (written from its parser source by trt_ops/generate.py) names it, with the assertion's place.
RULES: dict[str, tuple[tuple[str, ...], Any]] = {
    "conv_bias_constant": (
        ("Conv",),
        lambda n, g: _CONSTANT_INPUT.format(name="B") if _runtime_input(n, g, 2) else None,
    ),
    "resize_no_cubic": (
        ("Resize",),
        lambda n, g: "cubic interpolation, which this parser refuses" if _attr(n, "mode", b"") == b"cubic" else None,
    ),
    "resize_scales_constant": (("Resize",), _resize_scales),
    "squeeze_axes_constant": (
        ("Squeeze",),
        lambda n, g: _CONSTANT_INPUT.format(name="axes") if _runtime_input(n, g, 1) else None,
    ),
    "unsqueeze_axes_constant": (
        ("Unsqueeze",),
        lambda n, g: _CONSTANT_INPUT.format(name="axes") if _runtime_input(n, g, 1) else None,
    ),
    "slice_axes_constant": (
        ("Slice",),
        lambda n, g: _CONSTANT_INPUT.format(name="axes") if _runtime_input(n, g, 3) else None,
    ),
    "qdq_zero_point_zero": (("QuantizeLinear", "DequantizeLinear"), _zero_point),
    "pool_no_dilation": (("MaxPool", "AveragePool"), _dilated_pool),
}
_UINT8 = 2  # onnx.TensorProto.UINT8


def _violations(node, graph: _Graph, profile: TrtProfile) -> list[tuple[str, str]]:
    """(reason, parser source) for every rule of `profile` that `node` breaks."""
    found = []
    for rule, where in profile.rules().items():
        ops, test = RULES.get(rule, ((), None))
        if node.op_type in ops and (why := test(node, graph)):
            found.append((why, where))
    return found


def _takes(profile: TrtProfile, opset: int | None, op: str | None = None, node=None, graph=None, rule=None) -> bool:
    """Whether `profile`'s parser reads this opset, (given `rule`) lacks that rule, and (given `op`) imports `op`
    (given `node`) without objection."""
    if opset is not None and opset > profile.max_opset:
        return False
    if rule is not None and rule in profile.rules():
        return False
    if op is not None and op not in profile.operators():
        return False
    return node is None or not _violations(node, graph, profile)


def _first(opset: int | None, op: str | None = None, node=None, graph=None, rule=None) -> str | None:
    return next((p.version for p in PROFILES.values() if _takes(p, opset, op, node, graph, rule)), None)


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
        why = f"opset {opset} is above {profile.max_opset}, the highest {profile.label} reads"
        problems.append(Problem("opset", "", why, _first(opset)))
    ops = profile.operators()
    graph = _Graph(model)
    if "uint8_io_unsupported" in profile.rules():
        for name, dtype in graph.io_types.items():
            if dtype == _UINT8:
                first = _first(opset, rule="uint8_io_unsupported")
                why = f"network input/output {name!r} is UINT8, which this parser has no TensorRT type for"
                problems.append(Problem("UINT8", name, why, first, profile.rules()["uint8_io_unsupported"]))
    for i, node in enumerate(model.graph.node):
        name = node.name or f"#{i}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(Problem(node.op_type, name, f"custom operator of domain {node.domain!r}", None))
            continue
        if node.op_type not in ops:
            why = f"{profile.label}'s ONNX parser has no importer for it"
            problems.append(Problem(node.op_type, name, why, _first(opset, node.op_type)))
            continue
        for why, where in _violations(node, graph, profile):
            problems.append(Problem(node.op_type, name, why, _first(opset, node.op_type, node, graph), where))
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
