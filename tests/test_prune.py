"""Structural pruning: every criterion on the papers' tiny models; the result is smaller, runs, reloads and exports.

The tiny models (width x0.25) are narrower than the runtimes' channel multiples, so tests of the criteria and of exact
counts prune with `round_to=1`; the alignment tests use the default ("auto")."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.models import ModelSpec, count_flops, count_params, create_model
from pacb_edge.models.attention import SpatialChannelAttention
from pacb_edge.pruning.pruner import PruneConfig, mean_channel_attention, prune_model
from pacb_edge.training.checkpoint import load_checkpoint, save_checkpoint

CASES = [
    ("mobilenetv3_large", "ca", ["bn-scale", "l1-norm", "random"]),
    ("repvgg_a0", "ca", ["bn-scale", "l1-norm", "random"]),
    ("vgg16", "sca", ["bn-scale", "sca-attention", "l1-norm", "random"]),
    ("resnet56", "sca", ["bn-scale", "sca-attention", "l1-norm", "random"]),
    ("vgg16", "se", ["se-attention"]),
]


def _model(arch, attention, width=0.25):
    spec = ModelSpec(arch=arch, attention=attention, width_mult=width, input_size=32, in_chans=3, num_classes=10)
    model = create_model(arch, **spec.model_kwargs())
    # Non-trivial BN scales so bn-scale has something to rank.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.05
            m.running_var.data = torch.rand(m.num_features, generator=g) + 0.5
    return model.eval(), spec


@pytest.mark.parametrize(("arch", "attention", "criterion"), [(a, att, c) for a, att, cs in CASES for c in cs])
def test_criterion_prunes_structurally(arch, attention, criterion, tmp_path):
    import onnxruntime as ort

    model, spec = _model(arch, attention)
    images = torch.randn(24, 3, 32, 32)
    pruned, pruned_spec, report = prune_model(
        model, spec, PruneConfig(criterion=criterion, prune_ratio=0.4, round_to=1), score_images=images
    )
    assert count_params(pruned) < count_params(model)
    assert count_flops(pruned, 32)["flops"] < count_flops(model, 32)["flops"]
    assert report["removed_channels"] > 0
    # Real channels are gone: some conv has fewer output channels than before.
    assert any(
        pruned_spec.layers[n]["out"] < w
        for n, w in report["before"]["widths"].items()
        if n in pruned_spec.layers and pruned_spec.layers[n]["type"] == "Conv2d"
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = pruned(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    # Reload from safetensors + spec, without pickle: identical outputs.
    save_checkpoint(pruned, pruned_spec, tmp_path)
    reloaded, _ = load_checkpoint(tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(x), y)
    # Exports to ONNX with the smaller graph.
    deploy = reloaded.reparameterize() if hasattr(reloaded, "reparameterize") else reloaded
    buf = io.BytesIO()
    torch.onnx.export(deploy, (x[:1],), buf, opset_version=17, input_names=["input"], dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x[:1].numpy()})[0]
    assert np.abs(got - y[:1].numpy()).max() < 1e-3 * max(1.0, float(y.abs().max()))


def test_cpsca_scores_are_mean_attention_over_the_data():
    model, _ = _model("vgg16", "sca")
    images = torch.randn(40, 3, 32, 32)
    scores = mean_channel_attention(model, images, SpatialChannelAttention, batch_size=7)
    sca = [m for m in model.modules() if isinstance(m, SpatialChannelAttention)]
    assert set(scores) == set(sca)
    with torch.no_grad():
        model(images)  # one pass over all images at once: each module records (N, C)
    for m in sca:
        direct = m.last_channel_attention.mean(0)
        assert torch.allclose(scores[m], direct, atol=1e-6)


def test_cpsca_removes_sca_modules_and_keeps_highest_attention_channels():
    model, spec = _model("vgg16", "sca")
    images = torch.randn(16, 3, 32, 32)
    pruned, pruned_spec, report = prune_model(
        model, spec, PruneConfig(criterion="sca-attention", prune_ratio=0.5, round_to=1), score_images=images
    )
    assert not any(isinstance(m, SpatialChannelAttention) for m in pruned.modules())
    assert len(pruned_spec.removed) == 13
    assert report["removed_fraction"] == pytest.approx(0.5, abs=0.02)


def test_min_channels_and_round_to_are_respected():
    model, spec = _model("vgg16", "none")
    cfg = PruneConfig(criterion="bn-scale", prune_ratio=0.9, min_channels=8, round_to=8)
    pruned, pruned_spec, _ = prune_model(model, spec, cfg)
    convs = [s for n, s in pruned_spec.layers.items() if s["type"] == "Conv2d"]
    assert all(s["out"] >= 8 and s["out"] % 8 == 0 for s in convs)


def test_per_layer_ratio_and_threshold():
    model, spec = _model("vgg16", "none")
    pruned, pruned_spec, _ = prune_model(
        model, spec, PruneConfig(criterion="l1-norm", prune_ratio=None, layer_ratios={"features.3.0": 0.5}, round_to=1)
    )
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert pruned_spec.layers["features.3.0"]["out"] == before["features.3.0"] // 2
    assert pruned_spec.layers["features.4.0"]["out"] == before["features.4.0"]
    _, spec_thr, report = prune_model(
        model, spec, PruneConfig(criterion="bn-scale", prune_ratio=None, prune_threshold=0.5, round_to=1)
    )
    assert 0 < report["removed_channels"] < report["prunable_channels"]
    # A per-layer ratio wins for its conv's whole group, here with the depthwise conv and CA gate it feeds.
    model, spec = _model("mobilenetv3_large", "ca")
    cfg = PruneConfig(criterion="l1-norm", prune_ratio=0.3, layer_ratios={"features.2.block.0.0": 0.5}, round_to=1)
    _, _, report = prune_model(model, spec, cfg)
    assert report["after"]["widths"]["features.2.block.1.0"] == report["before"]["widths"]["features.2.block.1.0"] // 2


def test_counts_are_exact_and_the_report_counts_what_surgery_removed():
    model, spec = _model("vgg16", "none")  # every conv is its own group; the stem conv is protected
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][1:]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][1:]
    # Global: int(0.8 * N). Torch-Pruning alone keeps int(N * (1 - 0.8)): for this N one channel fewer (float 1 - 0.8).
    _, _, report = prune_model(
        model, spec, PruneConfig(criterion="bn-scale", prune_ratio=0.8, min_channels=1, round_to=1)
    )
    before, after = report["before"]["widths"], report["after"]["widths"]
    assert report["prunable_channels"] == sum(before[n] for n in convs) and report["prunable_channels"] % 5 == 0
    assert report["removed_channels"] == int(0.8 * report["prunable_channels"])
    assert report["removed_channels"] == sum(before[n] - after[n] for n in convs)
    # Layer scope: each conv loses int(0.3 * its width).
    _, _, report = prune_model(model, spec, PruneConfig(criterion="l1-norm", prune_ratio=0.3, round_to=1))
    assert all(report["after"]["widths"][n] == w - int(0.3 * w) for n, w in before.items() if n in convs)
    # Threshold: exactly the channels scoring below it.
    cfg = PruneConfig(criterion="bn-scale", prune_ratio=None, prune_threshold=0.5, round_to=1)
    _, _, report = prune_model(model, spec, cfg)
    assert report["removed_channels"] == sum(int((bn.weight < 0.5).sum()) for bn in bns)


def test_ties_at_the_global_threshold_are_broken_in_group_order():
    model, spec = _model("vgg16", "none")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = (torch.arange(m.num_features) % 4 + 1) / 4  # a quarter each of 0.25, 0.5, 0.75, 1
    _, _, report = prune_model(model, spec, PruneConfig(criterion="bn-scale", prune_ratio=0.3, round_to=1))
    # Not all channels tied at the threshold (0.5), which would be half of them: the first in Torch-Pruning's group
    # order (the output side first) go.
    assert report["removed_channels"] == int(0.3 * report["prunable_channels"])
    widths = [w for n, w in report["after"]["widths"].items() if n.startswith("features")][1:]
    before = [w for n, w in report["before"]["widths"].items() if n.startswith("features")][1:]
    assert widths[-1] == before[-1] // 2 and widths[0] == before[0] * 3 // 4


@pytest.mark.parametrize(
    ("arch", "attention"), [("vgg16", "cbam"), ("mobilenetv2", "lam"), ("mobilenetv3_large", "cbam")]
)
def test_attention_with_a_spatial_gate_prunes_trains_and_exports(arch, attention, tmp_path):
    """CBAM's and LAM's one-channel spatial gate does not depend on the channels kept: the model prunes like one
    without it, its gates keep working, one fine-tuning step runs, and ONNX and TFLite agree with PyTorch."""
    from pacb_edge.export.onnx import export_onnx, onnx_logits, pixel_input
    from pacb_edge.models.attention import CBAM, LAM

    model, spec = _model(arch, attention)
    _, _, plain = prune_model(*_model(arch, "none"), PruneConfig(prune_ratio=0.4, round_to=1))
    pruned, pruned_spec, report = prune_model(model, spec, PruneConfig(prune_ratio=0.4, round_to=1))
    assert report["removed_channels"] > 0
    # Every group a model without attention has is prunable here too (none is coupled through the gate).
    assert report["prunable_channels"] >= plain["prunable_channels"]
    gates = [m for m in pruned.modules() if isinstance(m, (CBAM, LAM))]
    assert gates and all(m.spatial_gate_output().weight.shape[0] == 1 for m in gates), "the gate stays one channel"
    cbam = [m for m in gates if isinstance(m, CBAM)]
    assert all(m.fc1.in_channels == m.fc2.out_channels for m in cbam), "CBAM's channel MLP is cut with its channels"
    assert not cbam or any(m.fc1.in_channels < m.channels for m in cbam)
    assert not any(m._forward_hooks for m in pruned.modules()), "the tracing hooks must not stay on the model"
    x = torch.randn(4, 3, 32, 32)
    y = torch.randint(0, 10, (4,))
    pruned.train()
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(pruned(x), y)
    loss.backward()
    optimizer.step()
    pruned.eval()
    save_checkpoint(pruned, pruned_spec, tmp_path / "ckpt")
    reloaded, _ = load_checkpoint(tmp_path / "ckpt")
    raw = np.random.default_rng(0).uniform(0, 255, (3, 3, 32, 32)).astype(np.float32)
    reference = pixel_input(reloaded, pruned_spec)(torch.from_numpy(raw)).detach().numpy()
    path = export_onnx(reloaded, pruned_spec, tmp_path / "model.onnx")
    assert np.abs(onnx_logits(path, raw) - reference).max() < 1e-3 * max(1.0, float(np.abs(reference).max()))


def test_repvgg_pruned_in_train_form_then_reparameterized_agrees():
    model, spec = _model("repvgg_a0", "ca")
    pruned, _, _ = prune_model(model, spec, PruneConfig(criterion="bn-scale", prune_ratio=0.3))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = pruned(x)
        after = pruned.reparameterize()(x)
    assert (before - after).abs().max() < 1e-4 * max(1.0, float(before.abs().max()))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (PruneConfig(criterion="taylor"), "unknown pruning criterion"),
        (PruneConfig(prune_ratio=1.0), "prune ratio must be in"),
        (PruneConfig(prune_ratio=-0.1), "prune ratio must be in"),
        (PruneConfig(min_channels=0), "min-channels"),
    ],
)
def test_bad_pruning_options_are_user_errors(cfg, message):
    model, spec = _model("resnet56", "none", width=0.25)
    with pytest.raises(PacbEdgeError, match=message):
        prune_model(model, spec, cfg)


def test_attention_criterion_needs_matching_attention():
    model, spec = _model("vgg16", "ca", width=0.25)
    with pytest.raises(PacbEdgeError, match="SpatialChannelAttention"):
        prune_model(model, spec, PruneConfig(criterion="sca-attention"), score_images=torch.randn(4, 3, 32, 32))


def test_auto_alignment_keeps_every_pruned_conv_at_the_targets_multiple():
    """`round_to="auto"` with an onnxruntime target: every pruned conv keeps a multiple of the table's value for
    this host (or its original count, when that was not cut), and the spec and report record the multiple."""
    from pacb_edge.core.runtimes import target_multiple

    multiple = target_multiple("onnxruntime").multiple
    model, spec = _model("mobilenetv3_large", "ca", width=1.0)
    pruned, pruned_spec, report = prune_model(model, spec, PruneConfig(criterion="bn-scale", prune_ratio=0.5))
    before, after = report["before"]["widths"], report["after"]["widths"]
    cut = {n: w for n, w in after.items() if w < before[n]}
    assert cut, "a 50 % prune cuts some convs"
    assert all(w % multiple == 0 for w in cut.values()), {n: w for n, w in cut.items() if w % multiple}
    assert report["round_to"] == multiple and report["alignment"]["round_to"] == "auto"
    assert pruned_spec.alignment["multiple"] == multiple and pruned_spec.alignment["target"] == "onnxruntime"
    # A number still forces its multiple; 1 keeps the criterion's exact counts.
    _, _, report8 = prune_model(model, spec, PruneConfig(criterion="bn-scale", prune_ratio=0.5, round_to=8))
    assert all(w % 8 == 0 for n, w in report8["after"]["widths"].items() if w < before[n])
    _, _, exact = prune_model(model, spec, PruneConfig(criterion="bn-scale", prune_ratio=0.5, round_to=1))
    assert exact["removed_channels"] == int(0.5 * exact["prunable_channels"])
    assert report["removed_channels"] < exact["removed_channels"], "rounding up keeps channels"


def test_auto_alignment_follows_the_latency_target():
    model, spec = _model("vgg16", "none", width=0.5)
    for target, options, multiple in (("jetson", {"precision": "int8"}, 32), ("android", {"delegate": "gpu"}, 4)):
        cfg = PruneConfig(prune_ratio=0.6, latency_target=target, target_options=options)
        _, pruned_spec, report = prune_model(model, spec, cfg)
        assert report["round_to"] == multiple and pruned_spec.alignment["multiple"] == multiple
        cut = [w for n, w in report["after"]["widths"].items() if w < report["before"]["widths"][n]]
        assert cut and all(w % multiple == 0 for w in cut)


def test_group_widths_are_kept_exactly_and_the_analysis_counts_their_macs():
    from pacb_edge.pruning.pruner import analyze

    model, spec = _model("mobilenetv3_large", "ca", width=0.5)
    analysis = analyze(model, spec, PruneConfig(criterion="bn-scale"))
    assert analysis.groups and all(len(g.scores) == g.channels for g in analysis.groups)
    widths = [analysis.width_options(i)[len(analysis.width_options(i)) // 2] for i in range(len(analysis.groups))]
    cfg = PruneConfig(
        criterion="bn-scale", group_widths={g.root: w for g, w in zip(analysis.groups, widths, strict=True)}
    )
    pruned, _, report = prune_model(model, spec, cfg)
    assert {g.root: report["after"]["widths"][g.root] for g in analysis.groups} == dict(
        zip([g.root for g in analysis.groups], widths, strict=True)
    )
    # The analysis counts the MACs of any widths without pruning (what the latency model's features are).
    assert analysis.macs(widths) == pytest.approx(count_flops(pruned, 32)["macs"], rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"round_to": "fast"}, "--round-to takes"),
        ({"round_to": 0}, "--round-to must be"),
        ({"latency_target": "gpu"}, "unknown --latency-target"),
    ],
)
def test_bad_alignment_options_are_user_errors(kwargs, message):
    model, spec = _model("resnet56", "none", width=0.25)
    with pytest.raises(PacbEdgeError, match=message):
        prune_model(model, spec, PruneConfig(**kwargs))


def test_torch_pruning_private_hooks_are_the_pinned_versions():
    """`ChannelPruner` overrides Torch-Pruning's private `_round_to` and calls its private `_check_pruning_ratio`
    (there is no public hook for a per-layer minimum or rounding up). pyproject.toml pins Torch-Pruning to the
    releases checked here; a release that renames, re-signs or stops calling either fails this test."""
    import inspect
    from importlib import metadata

    import tomllib
    import torch_pruning as tp
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    deps = [d for group in pyproject["project"]["optional-dependencies"].values() for d in group]
    (pin,) = [Requirement(d) for d in deps if d.startswith("torch-pruning")]
    installed = metadata.version("torch-pruning")
    assert installed in pin.specifier, (installed, str(pin.specifier))
    base = tp.pruner.BasePruner
    assert list(inspect.signature(base._round_to).parameters) == ["self", "n_pruned", "current_channels", "round_to"]
    assert list(inspect.signature(base._check_pruning_ratio).parameters) == ["self", "group"]
    source = inspect.getsource(base)
    assert "self._round_to(" in source and "self._check_pruning_ratio(" in source
