"""The model table: params, MACs and FLOPs for every registered arch x attention (`pacb-edge models`)."""

from __future__ import annotations

from collections.abc import Sequence


def model_table(
    input_size: int = 32,
    num_classes: int = 10,
    in_chans: int = 3,
    attentions: Sequence[str] = ("none", "ca", "sca"),
    archs: Sequence[str] | None = None,
    input_stem: str | None = None,
) -> list[dict]:
    """One row per arch x attention with params, MACs and FLOPs (= 2 x MACs) at batch 1."""
    from pacb_edge.models import count_flops, count_params, create_model, list_models

    rows = []
    for arch in archs or list_models():
        for attention in attentions:
            kw = {} if input_stem is None else {"input_stem": input_stem}
            model = create_model(arch, num_classes=num_classes, in_chans=in_chans, attention=attention, **kw)
            counts = count_flops(model, input_size, in_chans)
            rows.append(
                {
                    "arch": arch,
                    "attention": attention,
                    "params": count_params(model),
                    "macs": counts["macs"],
                    "flops": counts["flops"],
                    "input_size": input_size,
                    "num_classes": num_classes,
                    "in_chans": in_chans,
                }
            )
    return rows
