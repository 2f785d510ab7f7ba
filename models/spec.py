"""The facts that travel with a model (timm's PretrainedCfg habit).

One `ModelSpec` is written into every checkpoint, ONNX `metadata_props`, TFLite/TRT manifest and bench report, so a
model can be rebuilt and fed correctly without pickle: the architecture and its options, the preprocessing, the class
names, and the per-layer channel counts left after structural pruning.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from pacb_edge.core.errors import PacbEdgeError


@dataclass
class ModelSpec:
    """Everything needed to rebuild a (possibly pruned) model and to preprocess its input."""

    arch: str
    num_classes: int = 10
    in_chans: int = 3
    attention: str | None = None
    width_mult: float = 1.0
    input_size: int = 32
    input_stem: str | None = None
    attention_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    class_names: list[str] = field(default_factory=list)
    dataset: str | None = None
    # How the dataset was split (`DataBundle.split_record`): seed, val_fraction, limit, sizes and the SHA-256 of
    # the test images, so export, bench and reproduce evaluate on exactly the images the model never saw.
    split: dict[str, Any] = field(default_factory=dict)
    # Structural-pruning record: module name -> {"type", "in", "out", "groups"} for every layer whose shape differs
    # from the unpruned build, and the names of modules replaced by nn.Identity (e.g. SCA removed after CPSCA).
    layers: dict[str, dict[str, int | str]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    reparameterized: bool = False
    # The channel multiple kept widths were rounded up to when pruned: {"round_to", "multiple", "target", ...}.
    alignment: dict[str, Any] = field(default_factory=dict)
    # The training recipe's name and the values it set (`pacb_edge.training.recipes`): {"name": "small-image", ...}.
    recipe: dict[str, Any] = field(default_factory=dict)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `create_model` that rebuild the unpruned network."""
        kw: dict[str, Any] = dict(
            num_classes=self.num_classes,
            in_chans=self.in_chans,
            attention=self.attention,
            width_mult=self.width_mult,
        )
        if self.input_stem is not None:
            kw["input_stem"] = self.input_stem
        if self.attention_kwargs:
            kw["attention_kwargs"] = dict(self.attention_kwargs)
        return kw

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        if "arch" not in d:
            raise PacbEdgeError("model spec has no 'arch' field")
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("mean", "std"):
            if key in kw:
                kw[key] = tuple(float(x) for x in kw[key])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise PacbEdgeError(f"model spec is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise PacbEdgeError("model spec must be a JSON object")
        return cls.from_dict(d)
