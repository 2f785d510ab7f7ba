"""Structural channel pruning: pluggable importance criteria, surgery by Torch-Pruning's dependency graph.

Each criterion is one class with one job, scoring the channels of a Torch-Pruning group (`__call__(group)` returns one
score per channel). Ranking (one global threshold, Network Slimming's, or per layer), per-layer ratios, rounding,
ignored layers and the surgery — residual adds, depthwise convs, attention gates — are Torch-Pruning's pruner; a
minimum channel count and exact ratio counts are ours on top (`ChannelPruner`).

Criteria:
- `bn-scale`: |gamma| of BatchNorm (PACB, Network Slimming), raw values so one threshold is global.
- `sca-attention`: CPSCA. The mean channel-attention M_c of the SCA modules over the whole training set; the SCA
  modules are removed after scoring.
- `se-attention`: CPSE, the same procedure with SE.
- `l1-norm`: L1 norm of each filter of the group's root conv (Li et al. 2017).
- `random`: a control.

Attention modules whose structure is not channel-prunable by a dependency graph (SCA's and SGE's channel groups)
are always removed when a model is pruned; CA, SE, ECA, CBAM and LAM stay and are pruned with the channels they gate.
CBAM's and LAM's one-channel spatial gate pools over every channel and does not depend on which are kept: it is
hidden from the dependency graph while the graph is built, so it does not couple every channel into one group.

Kept channel counts are rounded *up* to a multiple (`round_to`): by default ("auto") the multiple the target runtime
wants (`pacb_edge.core.runtimes`), so a pruned model stays on the runtime's fast paths.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.runtimes import check_target, parse_round_to, resolve_round_to
from pacb_edge.models.attention import (
    ChannelAttentionBase,
    SpatialChannelAttention,
    SpatialGroupEnhance,
    SqueezeExcite,
)
from pacb_edge.models.counting import count_flops, count_params, layer_widths
from pacb_edge.models.spec import ModelSpec
from pacb_edge.pruning.latency import Layer
from pacb_edge.training.checkpoint import record_pruned_shapes, set_module

# Attention types that are always removed before surgery (their channel groups do not survive channel removal).
ALWAYS_REMOVED = (SpatialChannelAttention, SpatialGroupEnhance)


class BNScaleCriterion(tp.importance.BNScaleImportance):
    """`bn-scale`: |gamma| of the group's BatchNorm layers (mean over coupled BNs), not normalized per group."""

    name = "bn-scale"
    scope = "global"
    needs_attention: type | None = None

    def __init__(self) -> None:
        super().__init__(group_reduction="mean", normalizer=None)


class L1NormCriterion(tp.importance.GroupMagnitudeImportance):
    """`l1-norm`: L1 norm of each output filter of the group's root conv (Li et al., Pruning Filters, 2017)."""

    name = "l1-norm"
    scope = "layer"
    needs_attention: type | None = None

    def __init__(self) -> None:
        super().__init__(p=1, group_reduction="first", normalizer=None, target_types=[nn.Conv2d])


class RandomCriterion(tp.importance.Importance):
    """`random`: uniform random scores from a seeded generator (a control)."""

    name = "random"
    scope = "layer"
    needs_attention: type | None = None

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        _, idxs = group[0]
        return torch.rand(len(idxs), generator=self.generator)


class AttentionCriterion(tp.importance.GroupMagnitudeImportance):
    """Mean channel attention over a dataset, stored per gated BatchNorm layer (CPSCA / CPSE).

    `channel_scores` maps each BN to a tensor of its channels' mean attention; the score of a group is the mean
    over its scored BNs. Groups with no scored BN get no score and are left unpruned.
    """

    name = "attention"
    scope = "global"
    needs_attention: type | None = ChannelAttentionBase

    def __init__(self, channel_scores: dict[nn.Module, torch.Tensor] | None = None) -> None:
        super().__init__(p=1, group_reduction="mean", normalizer=None)
        self.channel_scores = channel_scores or {}

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        imps, root_idxs = [], []
        for i, (dep, idxs) in enumerate(group):
            if dep.pruning_fn == tp.prune_batchnorm_out_channels and dep.layer in self.channel_scores:
                imps.append(self.channel_scores[dep.layer][idxs].float())
                root_idxs.append(group[i].root_idxs)
        if not imps:
            return None
        return self._reduce(imps, root_idxs)


class SCAAttentionCriterion(AttentionCriterion):
    """`sca-attention` (CPSCA): mean M_c of the SCA modules over the training set."""

    name = "sca-attention"
    needs_attention = SpatialChannelAttention


class SEAttentionCriterion(AttentionCriterion):
    """`se-attention` (CPSE): mean SE gate over the training set."""

    name = "se-attention"
    needs_attention = SqueezeExcite


CRITERIA: dict[str, type] = {
    c.name: c for c in (BNScaleCriterion, SCAAttentionCriterion, SEAttentionCriterion, L1NormCriterion, RandomCriterion)
}


def list_criteria() -> list[str]:
    return list(CRITERIA)


@dataclass
class PruneConfig:
    """How many channels to remove and which layers are protected."""

    criterion: str = "bn-scale"
    prune_ratio: float | None = 0.3  # global fraction of prunable channels
    prune_threshold: float | None = None  # absolute score threshold (instead of a ratio)
    layer_ratios: dict[str, float] = field(default_factory=dict)  # root conv name -> its own ratio
    # Root conv name -> exact kept width of its whole group (what a latency budget chooses); overrides the ratios.
    group_widths: dict[str, int] = field(default_factory=dict)
    min_channels: int = 4
    round_to: int | str = "auto"  # "auto": the latency target's channel multiple (pacb_edge.core.runtimes)
    latency_target: str = "onnxruntime"  # where the model will run: picks the "auto" multiple
    target_options: dict[str, str] = field(default_factory=dict)  # the target's precision / delegate, if any
    scope: str | None = None  # "global" (one ranking over all layers) or "layer"; default: the criterion's own
    protect_stem: bool = True
    protect_classifier: bool = True
    seed: int = 0

    def validate(self) -> None:
        if self.criterion not in CRITERIA:
            raise PacbEdgeError(f"unknown pruning criterion {self.criterion!r}; known: {', '.join(CRITERIA)}")
        if self.prune_threshold is None and self.prune_ratio is None and not self.layer_ratios:
            raise PacbEdgeError("give --prune-ratio, --prune-threshold or per-layer ratios")
        for r in [self.prune_ratio, *self.layer_ratios.values()]:
            if r is not None and not 0 <= r < 1:
                raise PacbEdgeError(f"prune ratio must be in [0, 1), got {r}")
        if self.min_channels < 1:
            raise PacbEdgeError(
                f"--min-channels must be >= 1 (a layer pruned to zero channels breaks), got {self.min_channels}"
            )
        if self.scope not in (None, "global", "layer"):
            raise PacbEdgeError(f"--scope must be global or layer, got {self.scope!r}")
        self.round_to = parse_round_to(self.round_to)
        check_target(self.latency_target)
        if any(int(w) < 1 for w in self.group_widths.values()):
            raise PacbEdgeError(f"group widths must be >= 1, got {self.group_widths}")

    def alignment(self) -> tuple[int, dict[str, Any]]:
        """The channel multiple kept counts are rounded up to, and where it comes from (see `resolve_round_to`)."""
        return resolve_round_to(self.round_to, self.latency_target, **self.target_options)


def _gated_batchnorms(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, nn.Module]:
    """Map each attention module to the BatchNorm whose channels it gates: the last BN (outside attention modules)
    that ran before it, with a matching channel count."""
    from pacb_edge.training.trainer import prunable_batchnorms

    bns = set(prunable_batchnorms(model))
    last_bn: list[nn.Module] = []
    mapping: dict[nn.Module, nn.Module] = {}
    hooks = []
    for m in model.modules():
        if m in bns:
            hooks.append(m.register_forward_hook(lambda mod, i, o: last_bn.append(mod)))
        elif isinstance(m, ChannelAttentionBase):

            def pre(mod, inputs):
                channels = inputs[0].shape[1]
                for bn in reversed(last_bn):
                    if bn.num_features == channels:
                        mapping[mod] = bn
                        break

            hooks.append(m.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return mapping


def mean_channel_attention(
    model: nn.Module, images: torch.Tensor | np.ndarray, kind: type = ChannelAttentionBase, batch_size: int = 256
) -> dict[nn.Module, torch.Tensor]:
    """Mean of each attention module's per-channel attention over `images` (N x C x H x W, preprocessed).

    Returns {attention module: mean attention (C,)}.
    """
    images = torch.as_tensor(images, dtype=torch.float32)
    modules = [m for m in model.modules() if isinstance(m, kind)]
    sums: dict[nn.Module, torch.Tensor] = {}
    counts: dict[nn.Module, int] = {}

    def post(mod, inputs, output):
        att = mod.last_channel_attention
        sums[mod] = sums.get(mod, 0) + att.double().sum(0)
        counts[mod] = counts.get(mod, 0) + att.shape[0]

    hooks = [m.register_forward_hook(post) for m in modules]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                model(images[start : start + batch_size])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {m: (sums[m] / counts[m]).float() for m in modules if m in sums}


def remove_attention(model: nn.Module, kinds: Iterable[type]) -> list[str]:
    """Replace every attention module of the given types by nn.Identity; returns their names."""
    kinds = tuple(kinds)
    names = [n for n, m in model.named_modules() if kinds and isinstance(m, kinds)]
    for n in names:
        set_module(model, n, nn.Identity())
    return names


def _inside_attention(model: nn.Module) -> set[nn.Module]:
    return {x for m in model.modules() if isinstance(m, ChannelAttentionBase) for x in m.modules()}


def _exact_ratio(removed: int, total: int) -> float:
    """The ratio for which Torch-Pruning removes exactly `removed` of `total` channels.

    It keeps `int(total * (1 - ratio))`, which drops one channel too many when `total * ratio` is whole but the float
    `1 - ratio` falls short (`1 - 0.8 == 0.19999999999999996`); half a channel of margin makes the count exact.
    """
    return (removed - 0.5) / total if removed else 0.0


class ChannelPruner(tp.pruner.BasePruner):
    """Torch-Pruning's pruner (ranking scopes, per-layer ratios, ignored layers, the surgery) with the project's rules.

    - A group is scored once, at its first conv outside the attention modules: a group found through an attention
      gate (CA's conv_h, SE's fc2) is the same group, and groups purely inside attention (CA's mip) are not pruned.
      `scores` maps each scored group's root conv to its channels' scores.
    - A ratio of `layer_ratios` holds for the whole group of its conv (Torch-Pruning would take the ratio of the first
      keyed conv it meets in the group), and every ratio removes exactly `int(ratio * N)` of N channels.
    - `removed_counts` maps a root conv to exactly how many channels its whole group loses (a latency budget's
      choice); it wins over `layer_ratios`.
    - Each layer keeps at least `min_channels`, rounded *up* to a multiple of `round_to`. Torch-Pruning rounds the
      kept count down and has no minimum: `max_pruning_ratio` caps a scope's ratio, not what one layer loses to a
      global ranking; a layer ranked out whole would be refused and keep every channel.
    """

    def __init__(
        self,
        model: nn.Module,
        *args,
        min_channels: int = 1,
        layer_ratios: dict[nn.Module, float] | None = None,
        removed_counts: dict[nn.Module, int] | None = None,
        **kwargs,
    ) -> None:
        self.min_channels = min_channels
        self.layer_ratios = layer_ratios or {}
        self.removed_counts = removed_counts or {}
        self.scores: dict[nn.Module, torch.Tensor] = {}
        self._group_ratio: dict[nn.Module, float] = {}  # every conv of a group that holds a `layer_ratios` conv
        self._group_removed: dict[nn.Module, int] = {}  # every conv of a group whose root has a `removed_counts` entry
        self._attention = _inside_attention(model)
        super().__init__(model, *args, **kwargs)

    def _root(self, group) -> nn.Module | None:
        """The group's first conv outside the attention modules, or None for a group purely inside attention."""
        for dep, _ in group:
            if dep.handler == tp.prune_conv_out_channels and dep.target.module not in self._attention:
                return dep.target.module
        return None

    def root_of(self, group) -> nn.Module | None:
        """The conv a group is scored and keyed at (see the class docstring)."""
        return self._root(group)

    def check_group(self, group) -> bool:
        """Whether Torch-Pruning would rank this group (its own check, which skips groups already at one channel)."""
        return self._check_pruning_ratio(group)

    def estimate_importance(self, group) -> torch.Tensor | None:
        root = self._root(group)
        if root is not None and root not in self.scores:
            convs = [dep.target.module for dep, _ in group if self.DG.is_out_channel_pruning_fn(dep.handler)]
            own = [self.layer_ratios[m] for m in convs if m in self.layer_ratios]
            if own:
                self._group_ratio.update(dict.fromkeys(convs, own[0]))
            if root in self.removed_counts:
                self._group_removed.update(dict.fromkeys(convs, self.removed_counts[root]))
            if root is not group[0].dep.target.module:
                group = self.DG.get_pruning_group(root, tp.prune_conv_out_channels, list(range(root.out_channels)))
            scores = self.importance(group)
            if scores is not None:
                self.scores[root] = scores.detach().cpu()
        return self.scores.get(root)

    def get_target_pruning_ratio(self, module: nn.Module, step: int = -1) -> float:
        channels = self.DG.get_out_channels(module)
        if module in self._group_removed:
            return _exact_ratio(min(self._group_removed[module], channels), channels)
        ratio = self._group_ratio.get(module)
        if ratio is None:
            ratio = super().get_target_pruning_ratio(module, step)
        return _exact_ratio(int(ratio * channels), channels)

    # Torch-Pruning's private hook (no public one rounds up or keeps a minimum); pyproject.toml pins the releases
    # whose signature tests/test_prune.py checks.
    def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
        keep = max(current_channels - n_pruned, min(self.min_channels, current_channels))
        keep = min(current_channels, math.ceil(keep / round_to) * round_to)
        return current_channels - keep

    def rank_globally(self, ratio: float, threshold: float | None) -> None:
        """Set up the global scope (the groups without a ratio of their own) to lose exactly `int(ratio * N)` of its N
        channels, or exactly those scoring below `threshold`.

        Scores become global ranks, ties broken by group order (Torch-Pruning's: the output side first) and then
        channel index, as a stable sort does: Torch-Pruning removes every channel scoring `<=` the k-th lowest, so
        all channels tied there would go.
        """
        roots = []
        for group in self.DG.get_all_groups(self.ignored_layers, self.root_module_types):
            # The groups Torch-Pruning ranks in its global scope (it skips those failing `_check_pruning_ratio`),
            # scored in its order so that `random` draws the same numbers.
            if not self._check_pruning_ratio(group) or self.estimate_importance(group) is None:
                continue
            if self._root(group) not in self._group_ratio and self._root(group) not in self._group_removed:
                roots.append(self._root(group))
        if not roots:
            return
        pool = torch.cat([self.scores[m] for m in roots])
        removed = int((pool < threshold).sum()) if threshold is not None else int(ratio * len(pool))
        ranks = torch.empty(len(pool))
        ranks[torch.argsort(pool, stable=True)] = torch.arange(len(pool), dtype=torch.float32)
        self.scores.update(zip(roots, ranks.split([len(self.scores[m]) for m in roots]), strict=True))
        self.per_step_pruning_ratio = self.iterative_pruning_ratio_scheduler(
            _exact_ratio(removed, len(pool)), self.iterative_steps
        )


def _facts(model: nn.Module, spec: ModelSpec) -> dict[str, Any]:
    return {
        "params": count_params(model),
        **count_flops(model, spec.input_size, spec.in_chans),
        "widths": layer_widths(model),
    }


@contextlib.contextmanager
def spatial_gates_hidden(model: nn.Module) -> Iterator[None]:
    """While the dependency graph is built, CBAM's and LAM's one-channel spatial gates leave the autograd graph.

    The gate pools over all channels and is broadcast back over all of them; traced, it would couple every channel
    with its single one and no group could be pruned. Detached, the graph sees `x * constant`, which is what the gate
    is with respect to the choice of channels: whichever are kept, it pools over them.
    """
    hooks = []
    for m in model.modules():
        gate = m.spatial_gate_output() if isinstance(m, ChannelAttentionBase) else None
        if gate is not None:
            hooks.append(gate.register_forward_hook(lambda _m, _i, out: out.detach()))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


@dataclass
class PrunableGroup:
    """One group of coupled channels: its root conv, width, the criterion's per-channel scores, and which layers'
    output (`out`) or input (`in`) channels are these channels."""

    root: str
    channels: int
    scores: torch.Tensor
    members: list[tuple[str, str]]


@dataclass
class PruneAnalysis:
    """What a prune of this model can choose: the groups with their scores, the layers they shape, the multiple kept
    widths round up to, and the smallest width each group may keep."""

    groups: list[PrunableGroup]
    layers: list[Layer]
    multiple: int
    alignment: dict[str, Any]
    scope: str
    min_channels: int

    def min_width(self, i: int) -> int:
        n = self.groups[i].channels
        return min(n, math.ceil(min(self.min_channels, n) / self.multiple) * self.multiple)

    def width_options(self, i: int) -> list[int]:
        """The widths group `i` may keep: multiples of the alignment from its minimum, and its full width."""
        n, lo = self.groups[i].channels, self.min_width(i)
        return sorted({*range(lo, n + 1, self.multiple), n} if lo < n else {n})

    def macs(self, widths: list[int] | None = None) -> float:
        """MACs of the prunable model's convs and linear layers at these group widths (default: full)."""
        widths = self.full_widths() if widths is None else widths
        return sum(layer.macs(widths) for layer in self.layers)

    def full_widths(self) -> list[int]:
        return [g.channels for g in self.groups]


@dataclass
class _Setup:
    model: nn.Module
    example: torch.Tensor
    importance: tp.importance.Importance
    removed: list[str]
    convs: dict[str, nn.Module]
    ignored: list[nn.Module]
    scope: str


def _setup(
    model: nn.Module, spec: ModelSpec, cfg: PruneConfig, score_images: torch.Tensor | np.ndarray | None
) -> _Setup:
    """A copy of `model` ready for Torch-Pruning: attention scored and removed where the criterion needs it, the
    importance, the prunable convs and the protected layers."""
    cfg.validate()
    criterion_cls = CRITERIA[cfg.criterion]
    model = copy.deepcopy(model).cpu().eval()
    example = torch.zeros(1, spec.in_chans, spec.input_size, spec.input_size)
    if issubclass(criterion_cls, AttentionCriterion):
        kind = criterion_cls.needs_attention
        if not any(isinstance(m, kind) for m in model.modules()):
            raise PacbEdgeError(
                f"criterion {cfg.criterion} needs a model with {kind.__name__} modules; "
                f"this {spec.arch} has attention={spec.attention!r}"
            )
        if score_images is None or len(score_images) == 0:
            raise PacbEdgeError(f"criterion {cfg.criterion} needs training images to average attention over")
        gated = _gated_batchnorms(model, example)
        per_module = mean_channel_attention(model, score_images, kind)
        importance = criterion_cls({gated[m]: s for m, s in per_module.items() if m in gated})
        removed = remove_attention(model, (kind, *ALWAYS_REMOVED))
    else:
        importance = criterion_cls(seed=cfg.seed) if criterion_cls is RandomCriterion else criterion_cls()
        removed = remove_attention(model, ALWAYS_REMOVED)
    in_attention = _inside_attention(model)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m not in in_attention}
    ignored: list[nn.Module] = []
    if cfg.protect_stem and convs:
        ignored.append(next(iter(convs.values())))
    if cfg.protect_classifier:
        ignored.extend(m for m in model.modules() if isinstance(m, nn.Linear))
    return _Setup(model, example, importance, removed, convs, ignored, cfg.scope or criterion_cls.scope)


def _pruner(setup: _Setup, cfg: PruneConfig, **kwargs: Any) -> ChannelPruner:
    multiple, _ = cfg.alignment()
    with spatial_gates_hidden(setup.model):
        return ChannelPruner(
            setup.model,
            setup.example,
            setup.importance,
            ignored_layers=setup.ignored,
            round_to=multiple,
            root_module_types=[nn.Conv2d],
            min_channels=cfg.min_channels,
            **kwargs,
        )


def _layer_shapes(model: nn.Module, example: torch.Tensor, owner: dict[tuple[str, str], int]) -> list[Layer]:
    """Every conv and linear layer's shape, with the group owning its input and output channels (`owner`)."""
    positions: dict[nn.Module, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _i, out: positions.__setitem__(mod, int(out[0, 0].numel())))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    layers = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m in positions:
            kernel, groups, cin, cout, pos = (
                m.kernel_size[0] * m.kernel_size[1],
                m.groups,
                m.in_channels,
                m.out_channels,
                positions[m],
            )
        elif isinstance(m, nn.Linear):
            kernel, groups, cin, cout, pos = 1, 1, m.in_features, m.out_features, 1
        else:
            continue
        out_group = owner.get((name, "out"))
        in_group = owner.get((name, "in"), out_group if groups > 1 and groups == cin == cout else None)
        layers.append(Layer(name, cin, cout, groups, kernel, pos, in_group, out_group))
    return layers


def analyze(
    model: nn.Module, spec: ModelSpec, cfg: PruneConfig, score_images: torch.Tensor | np.ndarray | None = None
) -> PruneAnalysis:
    """The groups a prune of `model` can cut (root conv, width, the criterion's scores, the layers they shape) and
    the alignment: what a latency budget chooses widths over. Nothing is pruned."""
    setup = _setup(model, spec, cfg, score_images)
    pruner = _pruner(setup, cfg, global_pruning=True, pruning_ratio=0.0)
    names = {m: n for n, m in setup.model.named_modules()}
    groups: list[PrunableGroup] = []
    owner: dict[tuple[str, str], int] = {}
    for group in pruner.DG.get_all_groups(pruner.ignored_layers, pruner.root_module_types):
        if not pruner.check_group(group):
            continue
        scores = pruner.estimate_importance(group)
        root = pruner.root_of(group)
        if scores is None or root is None or any(g.root == names[root] for g in groups):
            continue
        full = pruner.DG.get_pruning_group(root, tp.prune_conv_out_channels, list(range(root.out_channels)))
        members = []
        for dep, _ in full:
            module = dep.target.module
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module in names:
                side = "out" if pruner.DG.is_out_channel_pruning_fn(dep.handler) else "in"
                members.append((names[module], side))
                owner.setdefault((names[module], side), len(groups))
        groups.append(PrunableGroup(names[root], root.out_channels, scores.float(), members))
    multiple, alignment = cfg.alignment()
    layers = _layer_shapes(setup.model, setup.example, owner)
    return PruneAnalysis(groups, layers, multiple, alignment, setup.scope, cfg.min_channels)


def prune_model(
    model: nn.Module,
    spec: ModelSpec,
    cfg: PruneConfig,
    score_images: torch.Tensor | np.ndarray | None = None,
) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Structurally prune a copy of `model` with Torch-Pruning's pruner. Returns (pruned model, its spec, report).

    Global scope ranks every channel of every group in one order and removes the lowest `prune_ratio` fraction —
    Network Slimming's global threshold, right for scores comparable across layers (BN gamma, attention in [0, 1]);
    layer scope removes `prune_ratio` of each layer's own channels (Li et al.'s filter L1 norms grow with fan-in, so
    they are not comparable across layers). `prune_threshold` removes every channel scoring below it (one global
    ranking); per-layer ratios override both for the convs they name, and `group_widths` (exact widths per group
    root) override everything. Of N channels a ratio removes `int(ratio * N)`, then the kept count is rounded up to
    the alignment multiple. `score_images` (preprocessed training images) are needed by the attention criteria. The
    report holds params, FLOPs, MACs and per-layer widths before and after, the channels the surgery really removed,
    and the alignment used.
    """
    setup = _setup(model, spec, cfg, score_images)
    model = setup.model
    before = _facts(model, spec)
    unknown = [
        n for n in [*cfg.layer_ratios, *cfg.group_widths] if n not in setup.convs or setup.convs[n] in setup.ignored
    ]
    if unknown:
        raise PacbEdgeError(f"per-layer ratios name convs that are not prunable: {sorted(unknown)[:5]}")
    # Exact widths (a latency budget's choice) leave every other group whole: one global scope that removes nothing.
    global_ranking = setup.scope == "global" or cfg.prune_threshold is not None or bool(cfg.group_widths)
    layer_ratios = {setup.convs[n]: r for n, r in cfg.layer_ratios.items()}
    removed_counts = {
        setup.convs[n]: setup.convs[n].out_channels - min(int(w), setup.convs[n].out_channels)
        for n, w in cfg.group_widths.items()
    }
    # Torch-Pruning's per-layer ratios are ranking scopes of their own: layer scope gives every conv one.
    ratios = (
        {} if global_ranking else {m: cfg.prune_ratio or 0.0 for m in setup.convs.values() if m not in setup.ignored}
    )
    own = dict.fromkeys(removed_counts, 0.0)  # a scope each; the exact count comes from `removed_counts`
    pruner = _pruner(
        setup,
        cfg,
        global_pruning=global_ranking,
        pruning_ratio=0.0,  # the global scope's is set by `rank_globally`
        pruning_ratio_dict=ratios | layer_ratios | own,
        layer_ratios=layer_ratios,
        removed_counts=removed_counts,
    )
    if global_ranking:
        if cfg.group_widths:
            pruner.rank_globally(0.0, None)
        else:
            pruner.rank_globally(cfg.prune_ratio or 0.0, cfg.prune_threshold)
    pruner.step()

    multiple, alignment = cfg.alignment()
    short = {
        k: alignment[k] for k in ("round_to", "multiple", "target", "runtime", "precision", "isa") if k in alignment
    }
    new_spec = dataclasses.replace(record_pruned_shapes(model, spec, setup.removed), alignment=short)
    after = _facts(model, spec)
    prunable = sum(len(s) for s in pruner.scores.values())
    removed_channels = sum(len(s) - root.out_channels for root, s in pruner.scores.items())  # what surgery removed
    report = {
        "criterion": cfg.criterion,
        "scope": setup.scope,
        "config": dataclasses.asdict(cfg),
        "alignment": alignment,
        "round_to": multiple,
        "before": before,
        "after": after,
        "prunable_channels": prunable,
        "removed_channels": removed_channels,
        "removed_fraction": removed_channels / prunable if prunable else 0.0,
        "removed_modules": setup.removed,
        "flops_ratio": after["flops"] / before["flops"],
        "params_ratio": after["params"] / before["params"],
    }
    return model, new_spec, report
