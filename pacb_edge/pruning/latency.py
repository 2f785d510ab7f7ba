"""A measured latency model of one runtime, and the choice of group widths under a latency budget.

`LatencyTable` is what `pacb-edge profile` writes. For one unpruned model on one runtime (keyed by runtime and its
version, device, architecture and structure, input size, precision, thread count and channel multiple) it holds the
measured latency of the unpruned model, of its full-width reference and of the smallest allowed model (`floor_ms`),
and a latency model fitted to whole pruned models measured on that runtime:

    latency(widths) = intercept + sum over layer classes c of  coefficient_c * work_c(widths)

A class is one kind of layer at one resolution (a 1x1 conv at 8x8, a depthwise conv at 4x4, the element-wise work
after the convs at 2x2, ...); its work is the MACs (or output elements) of its layers at the given group widths,
counted exactly from the model's shapes, so neighbouring groups that shrink together interact as they do in the
runtime (a conv between two cut groups loses a * b, not a + b). The coefficients are the runtime's own time per MAC
in each class, fitted without going negative (NNLS) to many models with random aligned widths: at small inputs one
group alone moves the latency less than this machine's noise (about 3 %), many at once move it well above it. The
intercept holds the per-operator overhead that channel pruning never removes. Models held out of the fit check the
prediction, and the error is on record; `group_response` gives the per-group look-up table HALP would measure.

`choose_widths` is HALP's latency-saliency knapsack (Shen et al., NeurIPS 2022): each group keeps the width that
keeps the most criterion score while the predicted latency stays under the budget; a multiple-choice knapsack
solved exactly by dynamic programming over discretized latency, with each group's cost taken at the other groups'
current widths and the choice re-solved until it is stable.

Pure numpy and scipy; the profile (which exports and measures) and the measured loop around the knapsack are
`pacb_edge.studies.latency_profile`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_json

TABLE_FORMAT = 1
KEY_FIELDS = (
    "runtime",
    "runtime_version",
    "device",
    "arch",
    "structure",
    "input_size",
    "precision",
    "threads",
    "multiple",
)


@dataclass(frozen=True)
class TableKey:
    """What a latency table is valid for: a later prune reuses a table only when every field matches."""

    runtime: str
    runtime_version: str
    device: str
    arch: str
    structure: str  # hash of the unpruned model's structure (spec options and the prunable groups' widths)
    input_size: int
    precision: str
    threads: int
    multiple: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def mismatches(self, other: TableKey) -> list[str]:
        """`field: ours != theirs` for each field that differs."""
        return [
            f"{k}: {getattr(self, k)!r} != {getattr(other, k)!r}"
            for k in KEY_FIELDS
            if getattr(self, k) != getattr(other, k)
        ]


def structure_hash(model_kwargs: dict[str, Any], input_size: int, groups: list[tuple[str, int]]) -> str:
    """A short hash of what decides the model's shapes: its builder options, input size and prunable groups."""
    text = json.dumps({"kwargs": model_kwargs, "input_size": input_size, "groups": groups}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Layer:
    """A conv or linear layer as the latency model counts it: full shape, which groups own its input and output
    channels (indices, or None when fixed), and its class."""

    name: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: int
    positions: int
    in_group: int | None
    out_group: int | None

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def widths(self, widths: list[int]) -> tuple[int, int]:
        cin = self.in_channels if self.in_group is None else widths[self.in_group]
        cout = self.out_channels if self.out_group is None else widths[self.out_group]
        return cin, cout

    def macs(self, widths: list[int]) -> float:
        cin, cout = self.widths(widths)
        groups = cout if self.depthwise else self.groups
        return self.kernel * self.positions * (cin / groups) * cout

    def elements(self, widths: list[int]) -> float:
        return float(self.widths(widths)[1] * self.positions)

    def classes(self) -> tuple[str, str]:
        """(the class of its MACs, the class of the element-wise work on its output)."""
        side = int(round(math.sqrt(self.positions)))  # linear layers count as 1x1 convs at 1x1
        k = int(round(math.sqrt(self.kernel)))
        kind = "depthwise" if self.depthwise else f"conv{k}x{k}"
        return f"{kind}@{side}x{side}", f"elementwise@{side}x{side}"


def feature_names(layers: list[Layer]) -> list[str]:
    names: list[str] = []
    for layer in layers:
        for c in layer.classes():
            if c not in names:
                names.append(c)
    return names


def features(layers: list[Layer], names: list[str], widths: list[int]) -> np.ndarray:
    """The work of each class at these widths (MACs, or output elements for the element-wise classes)."""
    index = {n: i for i, n in enumerate(names)}
    out = np.zeros(len(names))
    for layer in layers:
        mac_class, elem_class = layer.classes()
        out[index[mac_class]] += layer.macs(widths)
        out[index[elem_class]] += layer.elements(widths)
    return out


@dataclass
class LatencyTable:
    key: TableKey
    reference_ms: float  # the full-width model as a prune leaves it (attention a criterion removes is gone)
    unpruned_ms: float  # the model as trained (what --latency-ratio is relative to)
    floor_ms: float  # every group at its smallest allowed width
    group_roots: list[str]
    group_channels: list[int]
    min_widths: list[int]
    layers: list[Layer]
    feature_names: list[str] = field(default_factory=list)
    coefficients: list[float] = field(default_factory=list)  # ms per unit of work, one per feature
    intercept: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)  # the fit's models: label, widths, measured_ms
    validation: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)  # how the runtime was reached (device options, runner)
    meta: dict[str, Any] = field(default_factory=dict)  # date, command, seconds, measurement settings

    def full_widths(self) -> list[int]:
        return list(self.group_channels)

    def work(self, widths: list[int]) -> np.ndarray:
        return features(self.layers, self.feature_names, widths)

    def predict(self, widths: list[int]) -> float:
        """Predicted latency (ms) of the model with these group widths."""
        return float(self.intercept + self.work(widths) @ np.asarray(self.coefficients))

    def fit(self, samples: list[tuple[list[int], float]]) -> None:
        """Fit the intercept and the non-negative coefficients to measured (widths, ms) samples (least squares).

        Classes whose work does not change over the samples are folded into the intercept."""
        from scipy.optimize import nnls

        self.feature_names = feature_names(self.layers)
        x = np.array([self.work(w) for w, _ in samples])
        y = np.array([ms for _, ms in samples])
        varies = x.std(0) > 1e-9 * np.maximum(1.0, np.abs(x).max(0))
        scale = np.where(varies, x.max(0), 1.0)
        scale[scale == 0] = 1.0
        design = np.hstack([x[:, varies] / scale[varies], np.ones((len(y), 1))])
        solution, _ = nnls(design, y)
        coefficients = np.zeros(len(self.feature_names))
        coefficients[varies] = solution[:-1] / scale[varies]
        self.coefficients = coefficients.tolist()
        self.intercept = float(solution[-1])

    def group_response(self, i: int, widths: list[int]) -> list[float]:
        """Predicted change (ms) of the whole model with only group `i` cut to each width: HALP's look-up table."""
        full = self.full_widths()
        base = self.predict(full)
        out = []
        for w in widths:
            trial = list(full)
            trial[i] = w
            out.append(self.predict(trial) - base)
        return out

    # storage

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["format"] = TABLE_FORMAT
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyTable:
        if d.get("format") != TABLE_FORMAT:
            raise PacbEdgeError(f"latency table format {d.get('format')!r} is not {TABLE_FORMAT}; profile again")
        try:
            fields = {f.name for f in dataclasses.fields(cls)}
            kw = {k: v for k, v in d.items() if k in fields}
            kw["key"] = TableKey(**d["key"])
            kw["layers"] = [Layer(**layer) for layer in d["layers"]]
            return cls(**kw)
        except (KeyError, TypeError, ValueError) as e:
            raise PacbEdgeError(f"latency table is malformed ({type(e).__name__}: {e})") from None

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except OSError as e:
            raise PacbEdgeError(f"cannot read latency table {p}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise PacbEdgeError(f"latency table {p} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise PacbEdgeError(f"latency table {p} is not a JSON object")
        return cls.from_dict(d)


def group_values(scores: list[np.ndarray], options: list[list[int]], normalize: bool) -> list[np.ndarray]:
    """The criterion score a group keeps at each width option: the sum of its `w` best channel scores.

    With `normalize` (criteria whose scores are not comparable across layers: l1-norm, random) each group's
    scores are divided by their mean first, so every group's channels weigh 1 on average.
    """
    values = []
    for s, opts in zip(scores, options, strict=True):
        s = np.sort(np.asarray(s, dtype=np.float64))[::-1]
        if normalize:
            s = s / (s.mean() if s.size and s.mean() > 0 else 1.0)
        cumulative = np.concatenate([[0.0], np.cumsum(s)])
        values.append(np.array([cumulative[w] for w in opts]))
    return values


def _knapsack(values: list[np.ndarray], costs: list[np.ndarray], capacity: float, bins: int) -> list[int] | None:
    """Multiple-choice knapsack: one option per group, total cost <= capacity, most value. Costs are rounded *up*
    to `capacity / bins` steps (so the answer never exceeds the capacity). Returns the option index per group, or
    None when even the cheapest options do not fit."""
    low = [float(c.min()) for c in costs]
    room = capacity - sum(low)
    if room < 0:
        return None
    step = room / bins if room > 0 else 1.0
    weights = [np.ceil((c - lo) / step - 1e-9).astype(int) for c, lo in zip(costs, low, strict=True)]
    dp = np.full(bins + 1, -np.inf)
    dp[0] = 0.0
    choices = []
    for v, w in zip(values, weights, strict=True):
        new = np.full(bins + 1, -np.inf)
        pick = np.full(bins + 1, -1, dtype=int)
        for j, (vj, wj) in enumerate(zip(v, w, strict=True)):
            if wj > bins:
                continue
            cand = np.full(bins + 1, -np.inf)
            cand[wj:] = dp[: bins + 1 - wj] + vj
            better = cand > new
            new[better], pick[better] = cand[better], j
        dp = new
        choices.append(pick)
    b = int(np.argmax(dp))
    if not np.isfinite(dp[b]):
        return None
    chosen = []
    for w, pick in zip(reversed(weights), reversed(choices), strict=True):
        j = int(pick[b])
        chosen.append(j)
        b -= int(w[j])
    return chosen[::-1]


def choose_widths(
    table: LatencyTable,
    values: list[np.ndarray],
    options: list[list[int]],
    budget_ms: float,
    bins: int = 2000,
    iterations: int = 6,
) -> list[int] | None:
    """The widths (one per group, from `options`) with the most value whose predicted latency is <= `budget_ms`;
    None when no choice is predicted to fit.

    Each group's cost at a width is the predicted change with the other groups at their current widths; the knapsack
    is re-solved from its own answer until that is stable, then the budget is tightened until the full prediction
    fits."""

    def costs_at(current: list[int]) -> list[np.ndarray]:
        base = table.predict(current)
        out = []
        for g, opts in enumerate(options):
            row = []
            for w in opts:
                trial = list(current)
                trial[g] = w
                row.append(table.predict(trial) - base)
            out.append(np.array(row))
        return out

    budget = budget_ms
    for _ in range(20):
        current = table.full_widths()
        chosen = None
        for _ in range(iterations):
            picked = _knapsack(values, costs_at(current), budget - table.predict(current), bins)
            if picked is None:
                break
            chosen = [opts[j] for opts, j in zip(options, picked, strict=True)]
            if chosen == current:
                break
            current = chosen
        if chosen is None:
            return None
        over = table.predict(chosen) - budget_ms
        if over <= 0:
            return chosen
        budget -= max(over, 1e-3 * budget_ms)
    return None


def predicted_floor(table: LatencyTable) -> float:
    """The predicted latency with every group at its smallest allowed width."""
    return table.predict(table.min_widths)


def relative_error(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured if measured > 0 else math.inf
