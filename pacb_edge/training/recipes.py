"""Training defaults per input size: what `pacb-edge train` and `reproduce pacb --budget cpu` use unless told.

Two recipes, chosen by the model's input size:

- `small-image` (inputs of at most `SMALL_IMAGE_MAX` px, such as 28-32 px Fashion-MNIST, CIFAR or digits): a stride-1
  stem (RepVGG excepted), so the last stages still see a 2x2 map rather than 1x1 (the ImageNet stem divides 32 px by
  32), and the settings that made a 3-epoch proxy learn (benchmarks/results/recipe_proxies).
- `large-image` (larger inputs): the architectures' own ImageNet stem and the common ImageNet-style settings.

The recipe's name and every value it set are recorded in the model spec (`ModelSpec.recipe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SMALL_IMAGE_MAX = 64  # px: inputs up to this size take the small-image recipe
TRAINING_FIELDS = ("batch_size", "lr", "warmup_epochs", "weight_decay", "thin_weight_decay", "label_smoothing")


@dataclass(frozen=True)
class Recipe:
    """The defaults one input size gets; an option given on the command line overrides its field."""

    name: str
    input_stem: str  # "cifar" (stride-1 stem) or "imagenet" (the architecture's own)
    batch_size: int
    lr: float
    warmup_epochs: int
    weight_decay: float
    thin_weight_decay: float  # depthwise convs and attention modules
    label_smoothing: float
    # Architectures (by name fragment) that keep another stem: {"repvgg": "imagenet"}.
    stem_exceptions: tuple[tuple[str, str], ...] = ()

    def stem_for(self, arch: str) -> str:
        """The stem `arch` takes under this recipe."""
        return next((stem for part, stem in self.stem_exceptions if part in arch), self.input_stem)

    def stem_text(self) -> str:
        """The stem column of README's recipe table: `cifar (repvgg: imagenet)`."""
        exceptions = ", ".join(f"{part}: {stem}" for part, stem in self.stem_exceptions)
        return f"{self.input_stem} ({exceptions})" if exceptions else self.input_stem

    def training_values(self) -> dict[str, Any]:
        """The trainer's settings (`TrainConfig` and reproduce's `Schedule` take them under these names)."""
        return {name: getattr(self, name) for name in TRAINING_FIELDS}

    def as_dict(self, arch: str) -> dict[str, Any]:
        """The values a run of `arch` takes, the stem resolved."""
        return {"input_stem": self.stem_for(arch), **self.training_values()}


SMALL_IMAGE = Recipe(
    name="small-image",
    input_stem="cifar",
    batch_size=32,
    lr=0.1,
    warmup_epochs=1,
    weight_decay=5e-4,
    thin_weight_decay=0.0,
    label_smoothing=0.0,
    # RepVGG's stride-1 variant (stages 0 and 1 at full resolution) has 15.6x the MACs of its own stem at 32x32 and
    # trained 451 s against 77 s on the proxy, for +1.4 pp: a deployment trade a user should choose, not a default.
    stem_exceptions=(("repvgg", "imagenet"),),
)
LARGE_IMAGE = Recipe(
    name="large-image",
    input_stem="imagenet",
    batch_size=64,
    lr=0.05,
    warmup_epochs=1,
    weight_decay=5e-4,
    thin_weight_decay=5e-4,
    label_smoothing=0.0,
)
RECIPES = {r.name: r for r in (SMALL_IMAGE, LARGE_IMAGE)}


def recipe_for(input_size: int) -> Recipe:
    """The recipe of an input size: `small-image` up to `SMALL_IMAGE_MAX` px, `large-image` above."""
    return SMALL_IMAGE if input_size <= SMALL_IMAGE_MAX else LARGE_IMAGE
