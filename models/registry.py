"""One model registry with thin builders, as in timm: `@register_model` and `create_model(name, ...)`."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

from torch import nn

from pacb_edge.core.errors import PacbEdgeError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name."""
    assert fn.__name__ not in _MODELS, f"model {fn.__name__} registered twice"
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """The registered architecture names, sorted."""
    return sorted(_MODELS)


def builder_default(name: str, option: str) -> object:
    """The default a registered builder gives `option`, or None where it takes no such option."""
    param = inspect.signature(_MODELS[name]).parameters.get(option)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def create_model(
    name: str,
    num_classes: int = 10,
    in_chans: int = 3,
    attention: str | None = None,
    width_mult: float = 1.0,
    **kw,
) -> nn.Module:
    """Build a registered model.

    `attention=None` keeps the architecture's own default (SE for MobileNetV3, none elsewhere); `"none"` removes it.
    Raises `PacbEdgeError` listing the known names when `name` is unknown, and the builder's options for an option it
    does not take.
    """
    if name not in _MODELS:
        raise PacbEdgeError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if num_classes < 1:
        raise PacbEdgeError(f"num_classes must be >= 1, got {num_classes}")
    if in_chans not in (1, 3):
        raise PacbEdgeError(f"in_chans must be 1 or 3, got {in_chans}")
    if width_mult <= 0:
        raise PacbEdgeError(f"width_mult must be > 0, got {width_mult}")
    builder = _MODELS[name]
    try:
        return builder(num_classes=num_classes, in_chans=in_chans, attention=attention, width_mult=width_mult, **kw)
    except TypeError as e:  # a builder forwards **kw to helpers that take no such option
        typo = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if typo is None or typo.group(1) not in kw:
            raise
        params = inspect.signature(builder).parameters.values()
        named = ", ".join(p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD)
        raise PacbEdgeError(f"model {name!r} takes no option {typo.group(1)!r}; its options: {named}") from None
