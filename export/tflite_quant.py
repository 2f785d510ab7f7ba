"""INT8 TFLite from a SavedModel with TFLite's quantization debugger: a per-layer error report, and mixed precision
(a few layers kept in float) chosen to meet an accuracy budget on the validation split.

The model is calibrated once (`Int8Calibration`); every INT8 variant is the same calibrated model re-quantized with
a deny-list, exactly as TFLite's converter quantizes it (`convert.mlir_quantize` with int8 input and output), so an
empty deny-list gives the normal full-INT8 file. Float layers are *float islands* (DEQUANTIZE in, QUANTIZE out), not
16x8: XNNPACK runs float ops next to INT8 ones cheaply and has no int16 path.

Layers are ranked by `channel_error`: per output channel, the RMS quantization error relative to the channel's RMS
value, averaged over channels. TFLite's own `rmse/scale` (about 0.29 for a well-quantized tensor) is reported too,
but it is blind to the common failure where one outlier channel stretches a per-tensor scale so far that the other
channels round to zero: their error is then below half a step, so `rmse/scale` looks healthy while
`channel_error` is near 1.
"""

from __future__ import annotations

import contextlib
import csv
import io
import warnings
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_bytes, atomic_write_json

# Activation gates: float islands of one cheap element-wise op each.
GATE_OPS = frozenset({"LOGISTIC", "HARD_SWISH"})
# Standard-deviation normalization (SCA's spatial gate and its GroupNorm): the ops that divide by a computed std
# anchor the chain; the element-wise and reduction ops feeding them belong to it.
NORM_ANCHOR_OPS = frozenset({"RSQRT", "SQRT", "DIV", "SQUARED_DIFFERENCE"})
NORM_CHAIN_OPS = frozenset({"MEAN", "SUB", "ADD", "MUL", "SQUARED_DIFFERENCE", "SUM"})
NORM_CHAIN_DEPTH = 5
# Ops whose int8 output reuses the input's scale: a tensor kept float must stay float through them.
PASS_THROUGH_OPS = frozenset(
    "PAD PADV2 RESHAPE SQUEEZE EXPAND_DIMS TRANSPOSE MAX_POOL_2D SLICE STRIDED_SLICE GATHER SPLIT SPLIT_V "
    "DEPTH_TO_SPACE SPACE_TO_DEPTH BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND".split()
)
# Element-wise and data-movement ops: float between two islands costs less than a QUANTIZE/DEQUANTIZE pair.
CHEAP_OPS = NORM_CHAIN_OPS | PASS_THROUGH_OPS | GATE_OPS | {"REDUCE_MAX"}
WELL_QUANTIZED_RMSE_SCALE = 0.29  # uniform rounding noise: sqrt(1/12) of a step


def channel_error(float_values: np.ndarray, quant_values: np.ndarray, scale: float, zero_point: int) -> float:
    """Mean over output channels (last axis) of RMS(float - dequantized) / RMS(float); dead channels are skipped.

    About 0 for a well-quantized tensor, about 1 for channels whose values all round to zero.
    """
    f = np.asarray(float_values, np.float64)
    if f.size == 0:
        return float("nan")
    deq = (np.asarray(quant_values).astype(np.float64) - zero_point) * scale
    channels = f.shape[-1] if f.ndim else 1
    f, deq = f.reshape(-1, channels), deq.reshape(-1, channels)
    rms = np.sqrt(np.mean(f**2, axis=0))
    err = np.sqrt(np.mean((f - deq) ** 2, axis=0))
    live = rms > 1e-12
    return float(np.mean(err[live] / rms[live])) if live.any() else 0.0


@dataclass(frozen=True)
class Op:
    """One operator of the calibrated float graph; `name` is its first output tensor's name (a deny-list key)."""

    index: int
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def graph_ops(model: bytes) -> list[Op]:
    """The first subgraph's operators of a `.tflite` flatbuffer, in execution order."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    parsed = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    graph = parsed.subgraphs[0]
    tensor = [t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in graph.tensors]
    ops = []
    for i, op in enumerate(graph.operators):
        code = parsed.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        inputs = tuple(tensor[t] for t in (op.inputs if op.inputs is not None else []) if t >= 0)
        outputs = tuple(tensor[t] for t in (op.outputs if op.outputs is not None else []))
        ops.append(Op(i, kind, outputs[0] if outputs else f"op{i}", inputs, outputs))
    return ops


def op_counts(model: bytes) -> dict[str, int]:
    """How many operators of each type a `.tflite` file holds (e.g. `DEQUANTIZE`: one per float island input)."""
    counts: dict[str, int] = {}
    for op in graph_ops(model):
        counts[op.type] = counts.get(op.type, 0) + 1
    return counts


def check_op_types(types: Iterable[str]) -> tuple[str, ...]:
    """TFLite builtin operator type names (`HARD_SWISH`, `LOGISTIC`, ...), upper-cased, without repeats; a one-line
    `PacbEdgeError` names any that TFLite does not have."""
    from tensorflow.lite.python import schema_py_generated as schema

    known = {name for name in vars(schema.BuiltinOperator) if not name.startswith("_")}
    wanted = tuple(dict.fromkeys(t.strip().upper() for t in types if t.strip()))
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise PacbEdgeError(
            f"unknown TFLite operator type(s) {', '.join(unknown)}; use builtin names such as HARD_SWISH, LOGISTIC"
        )
    return wanted


class Int8Calibration:
    """A SavedModel calibrated once on `calibration_images` (NHWC float32, as the model takes them).

    `quantize(float_nodes)` gives full-integer INT8 bytes (int8 input and output, per-channel weights) with the
    named operators left in float; `layer_report(images)` measures every quantized layer's error.
    """

    def __init__(self, saved_model_dir: str | Path, calibration_images: np.ndarray) -> None:
        import tensorflow as tf

        images = np.ascontiguousarray(calibration_images, dtype=np.float32)
        if images.ndim != 4 or len(images) == 0:
            raise PacbEdgeError(f"calibration images must be a non-empty N×H×W×C array, got {images.shape}")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.SELECT_TF_OPS]
        converter.representative_dataset = lambda: _samples(images)
        # The debugger calibrates once and keeps the calibrated float model (min/max per tensor).
        with _quiet_debugger():
            self.debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=None)
        self.calibrated_model: bytes = self.debugger.calibrated_model
        self.ops = graph_ops(self.calibrated_model)
        self._by_name = {op.name: op for op in self.ops}
        self._consumers: dict[str, list[Op]] = {}
        for op in self.ops:
            for t in op.inputs:
                self._consumers.setdefault(t, []).append(op)

    def quantize(self, float_nodes: Iterable[str] = ()) -> bytes:
        """Full-INT8 bytes with `float_nodes` (operator names) kept in float, as the TFLite converter makes them."""
        import tensorflow as tf
        from tensorflow.lite.python import convert

        return convert.mlir_quantize(
            self.calibrated_model,
            disable_per_channel=False,
            input_data_type=tf.int8,
            output_data_type=tf.int8,
            denylisted_nodes=sorted(set(float_nodes)) or None,
        )

    def layer_report(self, images: np.ndarray) -> list[dict[str, Any]]:
        """Per-layer error of INT8 vs float on `images` (NHWC float32), worst `channel_error` first.

        Each row: `name`, `op_type`, `op_index`, `tensor_name`, `channel_error`, `rmse/scale`, `max_abs_error`,
        `mean_squared_error`, `scale`, `zero_point`.
        """
        import tensorflow as tf

        images = np.ascontiguousarray(images, dtype=np.float32)
        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"channel_error": channel_error}
        )
        # Built from the debug model's bytes (not the converter) so the interpreter keeps every tensor: the direct
        # comparison reads the float side of each layer after the whole graph ran.
        with _quiet_debugger():
            debugger = tf.lite.experimental.QuantizationDebugger(
                quant_debug_model_content=self.debugger.get_debug_quantized_model(),
                debug_dataset=lambda: _samples(images),
                debug_options=options,
            )
            debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
        rows = []
        for row in csv.DictReader(io.StringIO(dump.getvalue())):
            op = self._by_name.get(row["tensor_name"])
            scale = float(row["scale"])
            mse = float(row["mean_squared_error"])
            rows.append(
                {
                    "name": f"{row['op_name']}#{op.index}" if op else row["op_name"],
                    "op_type": row["op_name"],
                    "op_index": op.index if op else None,
                    "tensor_name": row["tensor_name"],
                    "channel_error": _finite(row["channel_error"]),
                    "rmse/scale": _finite(np.sqrt(mse) / scale) if scale > 0 else None,
                    "max_abs_error": _finite(row["max_abs_error"]),
                    "mean_squared_error": _finite(mse),
                    "scale": scale,
                    "zero_point": int(float(row["zero_point"])),
                    "num_elements": int(float(row["num_elements"])),
                }
            )
        return sorted(rows, key=lambda r: -(r["channel_error"] or 0.0))

    def ops_of_types(self, types: Iterable[str]) -> set[str]:
        """The names of every operator whose type is in `types` (e.g. {"HARD_SWISH"})."""
        wanted = set(types)
        return {op.name for op in self.ops if op.type in wanted}

    def float_tensor(self, name: str) -> set[str]:
        """Operators to keep in float so tensor `name` is never quantized: its producer and its consumers, through
        ops that reuse their input's scale (PAD, RESHAPE, ...)."""
        if name not in self._by_name:
            return set()
        nodes, frontier = {name}, list(self._by_name[name].outputs)
        while frontier:
            for consumer in self._consumers.get(frontier.pop(), []):
                if consumer.name not in nodes:
                    nodes.add(consumer.name)
                    if consumer.type in PASS_THROUGH_OPS:
                        frontier.extend(consumer.outputs)
        return nodes

    def islands(self) -> list[str]:
        """Cheap float islands: activation gates and std-normalization chains (anchor ops, the MEAN/SUB/MUL/ADD ops
        feeding them up to `NORM_CHAIN_DEPTH` steps back, the ops applying the normalization), plus the cheap ops
        that only pass values from one island to another (so no QUANTIZE/DEQUANTIZE pair sits between them)."""
        producer = {t: op for op in self.ops for t in op.outputs}
        chosen = {op.name for op in self.ops if op.type in GATE_OPS}
        for anchor in (op for op in self.ops if op.type in NORM_ANCHOR_OPS):
            chosen.add(anchor.name)
            chosen.update(
                c.name for t in anchor.outputs for c in self._consumers.get(t, []) if c.type in {"MUL", "DIV"}
            )
            frontier = [(anchor, 0)]
            while frontier:
                op, depth = frontier.pop()
                for t in op.inputs:
                    src = producer.get(t)
                    if src is not None and src.type in NORM_CHAIN_OPS and depth < NORM_CHAIN_DEPTH:
                        chosen.add(src.name)
                        frontier.append((src, depth + 1))
        cheap = [op for op in self.ops if op.name not in chosen and op.type in CHEAP_OPS]
        fed, feeding = set(chosen), set(chosen)
        for op in cheap:  # execution order: every input computed by a float op
            sources = [producer[t].name for t in op.inputs if t in producer]
            if sources and all(name in fed for name in sources):
                fed.add(op.name)
        for op in reversed(cheap):  # every consumer a float op
            users = [c.name for t in op.outputs for c in self._consumers.get(t, [])]
            if users and all(name in feeding for name in users):
                feeding.add(op.name)
        chosen |= fed & feeding
        return [op.name for op in self.ops if op.name in chosen]


@dataclass
class BudgetResult:
    """What `fit_int8_budget` chose: the INT8 bytes, the float operators and every step tried."""

    model: bytes
    full_int8: bytes
    float_nodes: list[str]
    float_layers: list[str]
    val_top1: float
    drop_pp: float
    full_int8_drop_pp: float
    met: bool
    budget_pp: float
    steps: list[dict[str, Any]] = field(default_factory=list)


def fit_int8_budget(
    calibration: Int8Calibration,
    report: Sequence[dict[str, Any]],
    evaluate: Callable[[Path], float],
    fp32_top1: float,
    budget_pp: float,
    work_dir: str | Path,
    max_steps: int = 8,
    max_float_fraction: float = 0.25,
    keep_float: tuple[str, Collection[str]] | None = None,
) -> BudgetResult:
    """Grow the set of float layers until INT8 loses at most `budget_pp` top-1 points against `fp32_top1`.

    `evaluate(path)` is a candidate `.tflite` file's top-1 on the validation split (never the test split). Step 0 is
    full INT8; then the cheap islands (gates, normalization chains) all at once; then, one per step, the worst
    layers of `report`. Growing stops when the budget is met, after `max_steps` steps, or when no layer is left
    that keeps the float operators outside the islands within `max_float_fraction` of all operators. Once met,
    each earlier layer is tried back in INT8 and stays there if the budget still holds. Returns the smallest float
    set that met the budget, else the candidate with the smallest drop.

    `keep_float` (label, operator names) is kept in float in every candidate after step 0 (e.g. HARD_SWISH, which
    XNNPACK runs in float only): step 0 stays the full-INT8 reference, step 1 adds them, and growing starts there.
    """
    work = Path(work_dir)
    cap = int(max_float_fraction * len(calibration.ops))
    required = (keep_float[0], set(keep_float[1])) if keep_float and keep_float[1] else None
    queue: list[tuple[str, set[str]]] = []
    islands = set(calibration.islands())
    if islands:
        queue.append(("islands", islands))
    for row in report:
        nodes = calibration.float_tensor(row["tensor_name"])
        if nodes and (row.get("channel_error") or 0.0) > 0:
            queue.append((row["name"], nodes))
    steps: list[dict[str, Any]] = []
    models: list[bytes] = []
    float_sets: list[set[str]] = []

    def attempt(layers: list[tuple[str, set[str]]], action: str) -> float:
        nodes = _union(layers)
        model = calibration.quantize(nodes)
        path = atomic_write_bytes(work / f"int8_step{len(steps)}.tflite", model)
        try:
            top1 = float(evaluate(path))
        finally:
            path.unlink(missing_ok=True)
        drop = 100 * (fp32_top1 - top1)
        steps.append(
            {
                "step": len(steps),
                "action": action,
                "float_layers": [label for label, _ in layers],
                "n_float_ops": len(nodes),
                "val_top1": top1,
                "drop_pp": drop,
                "size_bytes": len(model),
            }
        )
        models.append(model)
        float_sets.append(nodes)
        return drop

    layers: list[tuple[str, set[str]]] = []
    drop = attempt(layers, "full INT8")
    first = 0  # the first step that is a candidate (has the required float operators)
    if required:
        layers = [required]
        drop = attempt(layers, f"float {required[0]}")
        first = 1
    exempt = islands | (required[1] if required else set())
    while drop > budget_pp and len(steps) <= max_steps + first:
        chosen = _union(layers)
        nxt = next((g for g in queue if not g[1] <= chosen and len((chosen | g[1]) - exempt) <= cap), None)
        if nxt is None:
            break
        queue.remove(nxt)
        layers.append(nxt)
        drop = attempt(layers, f"float {nxt[0]}")
    met = drop <= budget_pp
    pick = len(steps) - 1
    if met:
        for layer in [g for g in layers[:-1] if g is not required]:
            trial = [g for g in layers if g is not layer]
            if _union(trial) != _union(layers) and attempt(trial, f"int8 {layer[0]}") <= budget_pp:
                layers, pick = trial, len(steps) - 1
    else:
        pick = min(range(first, len(steps)), key=lambda i: (steps[i]["drop_pp"], steps[i]["n_float_ops"]))
    return BudgetResult(
        model=models[pick],
        full_int8=models[0],
        float_nodes=sorted(float_sets[pick]),
        float_layers=steps[pick]["float_layers"],
        val_top1=steps[pick]["val_top1"],
        drop_pp=steps[pick]["drop_pp"],
        full_int8_drop_pp=steps[0]["drop_pp"],
        met=met,
        budget_pp=float(budget_pp),
        steps=steps,
    )


def write_quant_report(
    path: str | Path,
    report: Sequence[dict[str, Any]],
    result: BudgetResult | None = None,
    extra: dict[str, Any] | None = None,
    worst: int = 15,
) -> tuple[Path, Path]:
    """Write the per-layer report as JSON at `path` and a bar chart of the `worst` layers beside it (`.png`)."""
    from pacb_edge.core.plots import plot_layer_errors

    path = Path(path)
    doc: dict[str, Any] = {
        "metric": "channel_error: per output channel RMS(float - int8) / RMS(float), mean over channels",
        "well_quantized_rmse_scale": WELL_QUANTIZED_RMSE_SCALE,
        "layers": list(report),
        **(extra or {}),
    }
    if result is not None:
        doc["budget"] = {k: v for k, v in vars(result).items() if k not in ("model", "full_int8")}
    atomic_write_json(path, doc)
    top = list(report)[:worst]
    png = plot_layer_errors(
        [r["name"] for r in top],
        [r["channel_error"] or 0.0 for r in top],
        path.with_suffix(".png"),
        xlabel="channel error: RMS(float - int8) / RMS(float)",
        title=f"worst {len(top)} INT8 layers",
        marked={r["name"] for r in top if result is not None and r["tensor_name"] in result.float_nodes},
    )
    return path, png


# --- helpers -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_debugger():
    """The debugger runs TensorFlow's own (deprecated) interpreter, keeping every tensor: both warn each time."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(tf.lite.Interpreter is deprecated|preserve_all_tensors)")
        yield


def _samples(images: np.ndarray):
    for i in range(len(images)):
        yield [images[i : i + 1]]


def _finite(value: Any) -> float | None:
    v = float(value)
    return v if np.isfinite(v) else None


def _union(layers: Sequence[tuple[str, set[str]]]) -> set[str]:
    return set().union(*(nodes for _, nodes in layers))
