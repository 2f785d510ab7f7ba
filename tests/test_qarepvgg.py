"""QARepVGG: registry, exact re-parameterization, one training step, pruning then re-parameterization, ONNX export."""

import numpy as np
import pytest
import torch
from torch import nn

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.models import ModelSpec, count_params, create_model, list_models
from pacb_edge.models.attention import CoordAttention
from pacb_edge.models.repvgg import QARepVGGBlock, RepVGGBlock
from pacb_edge.pruning.pruner import PruneConfig, prune_model
from pacb_edge.training.checkpoint import load_checkpoint, save_checkpoint
from pacb_edge.training.trainer import prunable_batchnorms

QAREP = ["qarepvgg_a0", "qarepvgg_a1", "qarepvgg_b0"]
TOL = 1e-4


def _randomize_bn(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial BN statistics and affine parameters, so the fusion has something to get wrong."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.rand(c, generator=g) + 0.05)
                m.bias.copy_(torch.randn(c, generator=g) * 0.5)


def _max_reparam_error(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(max |deploy - train-form| in eval mode, max |train-form output|); re-parameterizes `model` in place."""
    model.eval()
    with torch.no_grad():
        before = model(x)
        model.reparameterize()
        after = model(x)
    return (after - before).abs().max().item(), before.abs().max().item()


def test_registry_has_the_qarep_variants_with_repvgg_widths():
    assert set(QAREP) <= set(list_models())
    for arch in QAREP:
        qa = create_model(arch, width_mult=0.25, attention="ca")
        plain = create_model(arch.removeprefix("qa"), width_mult=0.25, attention="ca")
        qa_blocks = [m for m in qa.modules() if isinstance(m, RepVGGBlock)]
        plain_blocks = [m for m in plain.modules() if isinstance(m, RepVGGBlock)]
        assert len(qa_blocks) == len(plain_blocks) and all(isinstance(b, QARepVGGBlock) for b in qa_blocks)
        assert [(b.in_ch, b.out_ch, b.stride) for b in qa_blocks] == [
            (b.in_ch, b.out_ch, b.stride) for b in plain_blocks
        ]
        # Attention after every block, as in RepVGG.
        assert all(isinstance(b.attn, CoordAttention) for b in qa_blocks)


def test_qarep_block_has_bn_on_the_3x3_and_after_the_sum_only():
    block = QARepVGGBlock(16, 16, 1)
    assert isinstance(block.rbr_dense[1], nn.BatchNorm2d)
    assert isinstance(block.rbr_1x1, nn.Conv2d) and block.rbr_1x1.bias is None
    assert isinstance(block.rbr_identity, nn.Identity)
    assert isinstance(block.bn, nn.BatchNorm2d) and block.bn.num_features == 16
    assert [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)] == [block.rbr_dense[1], block.bn]
    assert QARepVGGBlock(16, 16, 2).rbr_identity is None
    assert QARepVGGBlock(8, 16, 1).rbr_identity is None


def test_unknown_builder_option_is_a_one_line_user_error():
    with pytest.raises(PacbEdgeError, match="qarepvgg_a0.*takes no option depth_mult"):
        create_model("qarepvgg_a0", depth_mult=2.0)


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "stride", "attention"),
    [(16, 16, 1, None), (16, 16, 2, None), (8, 24, 1, "ca"), (24, 24, 1, "ca"), (3, 16, 2, "se")],
)
def test_block_reparameterizes_exactly(in_ch, out_ch, stride, attention):
    torch.manual_seed(0)
    block = QARepVGGBlock(in_ch, out_ch, stride, attention)
    _randomize_bn(block)
    err, scale = _max_reparam_error(block, torch.randn(2, in_ch, 9, 9))
    assert block.deploy and block.rbr_dense is None and block.rbr_1x1 is None and block.bn is None
    assert err < TOL and scale > 1e-2


@pytest.mark.parametrize(
    ("arch", "width", "attention", "input_stem"),
    [
        ("qarepvgg_a0", 0.25, None, "imagenet"),
        ("qarepvgg_a0", 0.25, "ca", "cifar"),
        ("qarepvgg_a0", 0.5, "ca", "imagenet"),
        ("qarepvgg_a1", 0.25, "eca", "cifar"),
        ("qarepvgg_b0", 0.25, "ca", "imagenet"),
    ],
)
def test_model_reparameterizes_exactly(arch, width, attention, input_stem):
    torch.manual_seed(0)
    model = create_model(arch, attention=attention, width_mult=width, input_stem=input_stem)
    _randomize_bn(model)
    n_train = count_params(model)
    err, scale = _max_reparam_error(model, torch.randn(2, 3, 32, 32))
    assert err < TOL and scale > 1e-3  # the comparison is not between two near-zero outputs
    assert count_params(model) < n_train
    # Deployed: no BatchNorm left outside the attention modules, every block a single conv.
    assert prunable_batchnorms(model) == []
    assert all(b.deploy for b in model.modules() if isinstance(b, QARepVGGBlock))


def test_one_training_step_updates_every_branch():
    torch.manual_seed(0)
    model = create_model("qarepvgg_a0", num_classes=5, attention="ca", width_mult=0.25).train()
    block = model.stage2[1]
    watched = {
        "3x3": block.rbr_dense[0].weight,
        "1x1": block.rbr_1x1.weight,
        "bn gamma": block.bn.weight,
    }
    before = {k: v.detach().clone() for k, v in watched.items()}
    running_mean = block.bn.running_mean.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(before[k], v) for k, v in watched.items())
    assert not torch.equal(running_mean, block.bn.running_mean)


def test_pruned_qarepvgg_reparameterizes_exactly_reloads_and_exports(tmp_path):
    from pacb_edge.export.onnx import deployable, export_onnx, onnx_logits, pixel_input, torch_logits

    spec = ModelSpec(arch="qarepvgg_a0", attention="ca", width_mult=0.25, input_size=32, num_classes=10)
    torch.manual_seed(0)
    model = create_model(spec.arch, **spec.model_kwargs())
    _randomize_bn(model)
    model.eval()
    pruned, pruned_spec, report = prune_model(model, spec, PruneConfig(criterion="bn-scale", prune_ratio=0.3))

    assert report["removed_channels"] > 0 and count_params(pruned) < count_params(model)
    # Real channels are gone: the post-sum (channel) BNs and the convs feeding them are narrower.
    widths_before = {n: m.num_features for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    narrower = [n for n, m in pruned.named_modules() if n.endswith(".bn") and m.num_features < widths_before[n]]
    assert narrower
    for b in (m for m in pruned.modules() if isinstance(m, QARepVGGBlock)):
        out = b.bn.num_features
        assert b.rbr_dense[0].out_channels == b.rbr_dense[1].num_features == b.rbr_1x1.out_channels == out
        assert b.attn.conv_h.out_channels == out
        if b.rbr_identity is not None:
            assert b.rbr_dense[0].in_channels == out

    # Reload from safetensors + spec, without pickle.
    x = torch.randn(3, 3, 32, 32)
    save_checkpoint(pruned, pruned_spec, tmp_path / "ckpt")
    reloaded, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(reloaded(x), pruned(x))

    # The exporter's deploy form (re-parameterized) matches the pruned train-form model.
    deploy = deployable(reloaded)
    assert all(b.deploy for b in deploy.modules() if isinstance(b, QARepVGGBlock))
    with torch.no_grad():
        want, got = pruned(x), deploy(x)
    assert (got - want).abs().max().item() < TOL and want.abs().max().item() > 1e-3

    # ONNX through the project's exporter (raw-pixel input), checked with onnxruntime.
    path = export_onnx(deploy, pruned_spec, tmp_path / "model.onnx")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 3, 32, 32)).astype(np.float32)
    reference = torch_logits(pixel_input(deploy, pruned_spec), pixels)
    assert np.abs(onnx_logits(path, pixels) - reference).max() < TOL * max(1.0, float(np.abs(reference).max()))


def test_qarep_blocks_start_with_a_constant_attention_gate():
    block = QARepVGGBlock(16, 16, 1, attention="ca")
    assert block.attn.conv_h.weight.abs().max() == 0 and block.attn.conv_w.weight.abs().max() == 0
    x = torch.rand(2, 16, 6, 6)
    block.attn.eval()
    with torch.no_grad():
        gated = block.attn(x)
    # sigmoid(bias_h) * sigmoid(bias_w): a per-channel constant, the same at every position and for every image
    ratio = gated / x
    assert torch.allclose(ratio, ratio[:1, :, :1, :1].expand_as(ratio), atol=1e-6)
    for name, layer in (("se", "fc2"), ("eca", "conv")):
        assert getattr(QARepVGGBlock(16, 16, 1, attention=name).attn, layer).weight.abs().max() == 0
    # RepVGG's own block keeps the attention module's default init
    assert RepVGGBlock(16, 16, 1, attention="ca").attn.conv_h.weight.abs().max() > 0


def test_qarepvgg_with_ca_fits_one_batch():
    """With CA's default gate init QARepVGG-A0 CA stays at chance (loss 2.31 -> 2.19 in these 30 steps)."""
    torch.manual_seed(0)
    model = create_model("qarepvgg_a0", attention="ca", width_mult=0.5, num_classes=10).train()
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1.0
