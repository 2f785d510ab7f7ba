"""Checkpoints without pickle: weights in safetensors, the `ModelSpec` as JSON (beside it and in its metadata).

A pruned model is rebuilt from its spec: build the unpruned architecture, then reshape every Conv/BN/Linear/GroupNorm
layer to the channel counts recorded after pruning and swap removed modules (e.g. SCA after CPSCA) for nn.Identity.
So a pruned checkpoint loads in any process, with no pickled module objects (Torch-Pruning #328/#436).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_text, atomic_write_with
from pacb_edge.models.spec import ModelSpec

WEIGHTS_NAME = "model.safetensors"
SPEC_NAME = "spec.json"
_META_KEY = "pacb_edge.spec"


def capture_layer_shapes(model) -> dict[str, dict[str, Any]]:
    """The channel-bearing shape of every Conv2d, BatchNorm2d, Linear and GroupNorm layer, by module name."""
    from torch import nn

    shapes: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            shapes[name] = {"type": "Conv2d", "in": m.in_channels, "out": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.BatchNorm2d):
            shapes[name] = {"type": "BatchNorm2d", "out": m.num_features}
        elif isinstance(m, nn.Linear):
            shapes[name] = {"type": "Linear", "in": m.in_features, "out": m.out_features}
        elif isinstance(m, nn.GroupNorm):
            shapes[name] = {"type": "GroupNorm", "out": m.num_channels, "groups": m.num_groups}
    return shapes


def set_module(model, name: str, new) -> None:
    """Replace the submodule at dotted `name` with `new`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _reshaped(m, shape: dict[str, Any]):
    from torch import nn

    kind = shape["type"]
    if kind == "Conv2d":
        return nn.Conv2d(
            shape["in"],
            shape["out"],
            m.kernel_size,
            m.stride,
            m.padding,
            m.dilation,
            shape["groups"],
            bias=m.bias is not None,
            padding_mode=m.padding_mode,
        )
    if kind == "BatchNorm2d":
        return nn.BatchNorm2d(shape["out"], m.eps, m.momentum, m.affine, m.track_running_stats)
    if kind == "Linear":
        return nn.Linear(shape["in"], shape["out"], bias=m.bias is not None)
    if kind == "GroupNorm":
        return nn.GroupNorm(shape["groups"], shape["out"], m.eps, m.affine)
    raise PacbEdgeError(f"unknown layer type {kind!r} in the model spec")


def apply_layer_shapes(model, layers: dict[str, dict[str, Any]], removed: list[str]):
    """Reshape `model` in place to the recorded pruned shapes; returns it."""
    from torch import nn

    for name in removed:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise PacbEdgeError(f"model spec removes {name!r}, which this architecture does not have") from None
        set_module(model, name, nn.Identity())
    current = capture_layer_shapes(model)
    for name, shape in layers.items():
        if name not in current:
            raise PacbEdgeError(f"model spec names layer {name!r}, which this architecture does not have")
        if current[name] != shape:
            set_module(model, name, _reshaped(model.get_submodule(name), shape))
    return model


def build_model(spec: ModelSpec):
    """Rebuild the (possibly pruned, possibly re-parameterized) network that `spec` describes, with fresh weights."""
    from pacb_edge.models import create_model

    model = create_model(spec.arch, **spec.model_kwargs())
    if spec.reparameterized:
        model.reparameterize()
    return apply_layer_shapes(model, spec.layers, spec.removed)


def record_pruned_shapes(model, spec: ModelSpec, removed: list[str] | None = None) -> ModelSpec:
    """Return a copy of `spec` whose layer record matches `model`'s current shapes."""
    import dataclasses

    return dataclasses.replace(
        spec, layers=capture_layer_shapes(model), removed=sorted(set(spec.removed) | set(removed or []))
    )


def save_checkpoint(model, spec: ModelSpec, directory: str | Path) -> Path:
    """Write `model.safetensors` (spec in its metadata) and `spec.json` atomically into `directory`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    spec_json = spec.to_json()
    atomic_write_with(directory / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={_META_KEY: spec_json}))
    atomic_write_text(directory / SPEC_NAME, spec_json + "\n")
    return directory / WEIGHTS_NAME


def resolve_checkpoint(path: str | Path) -> Path:
    """Find the weights file for a checkpoint file, a stage directory, or a run directory (pruned/ before base/)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for candidate in (p / WEIGHTS_NAME, p / "pruned" / WEIGHTS_NAME, p / "base" / WEIGHTS_NAME):
            if candidate.is_file():
                return candidate
        raise PacbEdgeError(f"no {WEIGHTS_NAME} in {p} (nor in its pruned/ or base/ folders)")
    raise PacbEdgeError(f"checkpoint {p} does not exist")


def read_spec(path: str | Path) -> ModelSpec:
    """The spec stored in a checkpoint's safetensors metadata."""
    from safetensors import safe_open

    weights = resolve_checkpoint(path)
    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for truncated or corrupt headers
        raise PacbEdgeError(f"checkpoint {weights} is corrupt or truncated ({type(e).__name__}: {e})") from None
    if _META_KEY not in meta:
        spec_file = weights.parent / SPEC_NAME
        if not spec_file.is_file():
            raise PacbEdgeError(f"checkpoint {weights} carries no model spec and has no {SPEC_NAME} beside it")
        return ModelSpec.from_json(spec_file.read_text())
    return ModelSpec.from_json(meta[_META_KEY])


def load_checkpoint(path: str | Path, expect_arch: str | None = None, expect_num_classes: int | None = None):
    """Rebuild and load a checkpoint. Returns (model in eval mode, spec). Never unpickles anything."""
    from safetensors.torch import load_file

    weights = resolve_checkpoint(path)
    spec = read_spec(weights)
    if expect_arch is not None and spec.arch != expect_arch:
        raise PacbEdgeError(f"checkpoint {weights} is a {spec.arch}, not a {expect_arch}")
    if expect_num_classes is not None and spec.num_classes != expect_num_classes:
        raise PacbEdgeError(
            f"checkpoint {weights} has {spec.num_classes} classes but the data has {expect_num_classes}"
        )
    try:
        state = load_file(str(weights))
    except Exception as e:
        raise PacbEdgeError(f"checkpoint {weights} is corrupt or truncated ({type(e).__name__}: {e})") from None
    model = build_model(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise PacbEdgeError(f"checkpoint {weights} does not match its {spec.arch} spec: {detail}") from None
    return model.eval(), spec
