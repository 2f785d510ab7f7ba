"""Structural channel pruning: pluggable importance criteria, surgery by Torch-Pruning's dependency graph.

Each criterion is one class with one job, scoring the channels of a Torch-Pruning group (`__call__(group)` returns one
score per channel); the surgery — residual adds, depthwise convs, attention gates — is Torch-Pruning's. Selection is
Network Slimming's: one global threshold over all prunable channels (by ratio or absolute value), with per-layer
ratios, a minimum channel count and hardware-friendly rounding on top.

Criteria:
- `bn-scale`: |gamma| of BatchNorm (PACB, Network Slimming), raw values so one threshold is global.
- `sca-attention`: CPSCA. The mean channel-attention M_c of the SCA modules over the whole training set; the SCA
  modules are removed after scoring.
- `se-attention`: CPSE, the same procedure with SE.
- `l1-norm`: L1 norm of each filter of the group's root conv (Li et al. 2017).
- `random`: a control.

Attention modules whose structure is not channel-prunable by a dependency graph (SCA's and SGE's channel groups)
are always removed when a model is pruned; CA, SE, ECA, CBAM and LAM stay and are pruned with the channels they gate.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from pacb_edge.checkpoint import record_pruned_shapes, set_module
from pacb_edge.errors import PacbEdgeError
from pacb_edge.models.attention import (
    ChannelAttentionBase,
    SpatialChannelAttention,
    SpatialGroupEnhance,
    SqueezeExcite,
)
from pacb_edge.models.counting import count_flops, count_params, layer_widths
from pacb_edge.models.spec import ModelSpec

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
    min_channels: int = 4
    round_to: int = 1
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
        if self.round_to < 1:
            raise PacbEdgeError(f"--round-to must be >= 1, got {self.round_to}")


def _gated_batchnorms(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, nn.Module]:
    """Map each attention module to the BatchNorm whose channels it gates: the last BN (outside attention modules)
    that ran before it, with a matching channel count."""
    from pacb_edge.train import prunable_batchnorms

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


def _inside_attention(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, ChannelAttentionBase):
            ids.update(id(x) for x in m.modules())
    return ids


def _keep_count(total: int, pruned: int, cfg: PruneConfig) -> int:
    keep = max(total - pruned, min(cfg.min_channels, total))
    if cfg.round_to > 1:
        keep = min(total, int(np.ceil(keep / cfg.round_to)) * cfg.round_to)
    return keep


def _select(scored: list[tuple[str, torch.Tensor]], cfg: PruneConfig, scope: str) -> dict[str, list[int]]:
    """Channel indices to remove per group root.

    Ratio mode with global scope ranks every channel of every group in one order (ties broken by layer order, then
    index) and marks the lowest `prune_ratio` fraction — Network Slimming's global threshold, right for scores that
    are comparable across layers (BN gamma, attention in [0, 1]); with layer scope each layer loses `prune_ratio` of
    its own channels (Li et al.'s filter L1 norms grow with fan-in, so they are not comparable across layers).
    Threshold mode marks channels scoring below `prune_threshold`. Per-layer ratios override both for the layers
    they name. Then each layer keeps at least `min_channels`, rounded up to a multiple of `round_to`, and loses its
    lowest-scoring channels.
    """
    marked: dict[str, int] = {name: 0 for name, _ in scored}
    global_layers = [(name, s) for name, s in scored if name not in cfg.layer_ratios]
    if cfg.prune_threshold is not None:
        for name, s in global_layers:
            marked[name] = int((s < cfg.prune_threshold).sum())
    elif cfg.prune_ratio and scope == "layer":
        for name, s in global_layers:
            marked[name] = int(cfg.prune_ratio * len(s))
    elif cfg.prune_ratio and global_layers:
        pool = torch.cat([s for _, s in global_layers])
        owner = torch.cat([torch.full((len(s),), i) for i, (_, s) in enumerate(global_layers)])
        k = int(cfg.prune_ratio * len(pool))
        for i in owner[torch.argsort(pool, stable=True)[:k]].tolist():
            marked[global_layers[i][0]] += 1
    for name, ratio in cfg.layer_ratios.items():
        marked[name] = int(ratio * len(dict(scored)[name]))
    plan: dict[str, list[int]] = {}
    for name, scores in scored:
        keep = _keep_count(len(scores), marked[name], cfg)
        if keep < len(scores):
            plan[name] = sorted(torch.argsort(scores, stable=True)[: len(scores) - keep].tolist())
    return plan


def prune_model(
    model: nn.Module,
    spec: ModelSpec,
    cfg: PruneConfig,
    score_images: torch.Tensor | np.ndarray | None = None,
) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Structurally prune a copy of `model`. Returns (pruned model, its spec, report).

    `score_images` (preprocessed training images) are needed by the attention criteria.
    The report holds params, FLOPs, MACs and per-layer widths before and after.
    """
    cfg.validate()
    criterion_cls = CRITERIA[cfg.criterion]
    model = copy.deepcopy(model).cpu().eval()
    example = torch.zeros(1, spec.in_chans, spec.input_size, spec.input_size)
    before = {
        "params": count_params(model),
        **count_flops(model, spec.input_size, spec.in_chans),
        "widths": layer_widths(model),
    }

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
        scores = {gated[m]: s for m, s in per_module.items() if m in gated}
        importance = criterion_cls(scores)
        removed = remove_attention(model, (kind, *ALWAYS_REMOVED))
    else:
        importance = criterion_cls(seed=cfg.seed) if criterion_cls is RandomCriterion else criterion_cls()
        removed = remove_attention(model, ALWAYS_REMOVED)

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    ignored: list[nn.Module] = []
    if cfg.protect_stem and convs:
        ignored.append(convs[0])
    if cfg.protect_classifier:
        ignored.extend(m for m in model.modules() if isinstance(m, nn.Linear))
    in_attention = _inside_attention(model)
    names = {m: n for n, m in model.named_modules()}

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    scored: list[tuple[str, torch.Tensor]] = []
    roots: dict[str, nn.Module] = {}
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d]):
        # Root each group at its first conv outside the attention modules: a group found through an attention gate
        # (CA's conv_h, SE's fc2) is the same group, and groups purely inside attention (CA's mip) are skipped.
        main = [
            dep.target.module
            for dep, _ in group
            if dep.handler == tp.prune_conv_out_channels and id(dep.target.module) not in in_attention
        ]
        if not main:
            continue
        root = main[0]
        group = graph.get_pruning_group(root, tp.prune_conv_out_channels, list(range(root.out_channels)))
        scores = importance(group)
        if scores is None:
            continue
        scored.append((names[root], scores.detach().cpu()))
        roots[names[root]] = root
    unknown = set(cfg.layer_ratios) - set(roots)
    if unknown:
        raise PacbEdgeError(f"per-layer ratios name layers that are not prunable group roots: {sorted(unknown)[:5]}")

    plan = _select(scored, cfg, cfg.scope or criterion_cls.scope)
    for name, idxs in plan.items():
        group = graph.get_pruning_group(roots[name], tp.prune_conv_out_channels, idxs)
        if graph.check_pruning_group(group):
            group.prune()

    new_spec = record_pruned_shapes(model, spec, removed)
    after = {
        "params": count_params(model),
        **count_flops(model, spec.input_size, spec.in_chans),
        "widths": layer_widths(model),
    }
    prunable = sum(len(s) for _, s in scored)
    removed_channels = sum(len(v) for v in plan.values())
    report = {
        "criterion": cfg.criterion,
        "scope": cfg.scope or criterion_cls.scope,
        "config": dataclasses.asdict(cfg),
        "before": before,
        "after": after,
        "prunable_channels": prunable,
        "removed_channels": removed_channels,
        "removed_fraction": removed_channels / prunable if prunable else 0.0,
        "removed_modules": removed,
        "flops_ratio": after["flops"] / before["flops"],
        "params_ratio": after["params"] / before["params"],
    }
    return model, new_spec, report
