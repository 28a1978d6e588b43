"""Backbones: paper/torchvision parameter counts, shapes, and where each block family is inserted."""

import re

import pytest
import torch
import torchvision
from torch import nn

from modules.backbones import BACKBONES, build_backbone
from modules.backbones.network import SE_INTEGRATION_SLOTS
from modules.backbones.residual import ResidualBlock
from modules.backbones.resnet3d import I3D_RESNET50_INFLATION, SPECS
from modules.blocks import BLOCKS, NonLocalBlock
from modules.blocks.squeeze_excite import SE_INTEGRATIONS

# The authors' released layouts of resnet50 / the video ResNet-50s run in tests/modules/test_fidelity_resnets.py
# (against timm's legacy_seresnet50; shapes of 32-frame clips on the meta device, which their pools need).
RELEASED_LAYOUTS = ("resnet50_caffe", "c2d_resnet50_caffe2", "i3d_resnet50_caffe2")
RESNETS = [name for name in BACKBONES if not name.startswith("attention_net") and name not in RELEASED_LAYOUTS]


def parameters(net: nn.Module) -> int:
    return sum(parameter.numel() for parameter in net.parameters())


def build_on_meta(name: str, **kwargs) -> nn.Module:
    """Construct without materialising weights: enough for parameter counts and structure, and fast."""
    with torch.device("meta"):
        return build_backbone(name, **kwargs)


def blocks_of(net: nn.Module, kind: str) -> list[tuple[str, nn.Module]]:
    return [(name, module) for name, module in net.named_modules() if isinstance(module, BLOCKS[kind])]


def sample(net: nn.Module, batch: int = 2, size: int = 32, frames: int = 8) -> torch.Tensor:
    """A random input for ``net``: (B, C, size, size) or (B, C, frames, size, size)."""
    shape = (batch, net.in_channels, size, size) if net.dim == 2 else (batch, net.in_channels, frames, size, size)
    return torch.randn(shape)


@pytest.mark.parametrize(("name", "expected"), [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_resnet_matches_torchvision_parameters_and_outputs(name, expected):
    ours = build_backbone(name, num_classes=1000).eval()
    reference = getattr(torchvision.models, name)().eval()
    assert parameters(ours) == parameters(reference) == expected
    # torchvision's layer1..layer4 are the papers' res2..res5; every other key is the same
    renamed = {re.sub(r"^layer(\d)\.", lambda match: f"res{int(match.group(1)) + 1}.", key): value
               for key, value in reference.state_dict().items()}
    ours.load_state_dict(renamed)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def test_se_resnet50_has_the_papers_parameter_count():
    """SE paper Table 2/§4: SE-ResNet-50 (r = 16, SE in every block, FC layers with bias) has 28.1 M."""
    assert parameters(build_on_meta("resnet50", num_classes=1000, block="se", placement="se-all", reduction=16)) \
        == 28_088_024


def test_c2d_resnet50_has_exactly_the_2d_resnet50_parameters():
    """Non-local paper Table 1: C2D's 1×k×k kernels hold the 2D weights (ImageNet initialisation)."""
    c2d = parameters(build_on_meta("c2d_resnet50", num_classes=400))
    assert c2d == parameters(build_on_meta("resnet50", num_classes=400)) == 24_327_632


def test_i3d_resnet50_adds_the_inflated_temporal_weights():
    """conv1 1×7×7 → 5×7×7 and each inflated bottleneck's first conv 1×1×1 → 3×1×1 (§4, reference arc 2)."""
    extra = 3 * 64 * 7 * 7 * (5 - 1)
    in_channels = 64
    for stage, flags in I3D_RESNET50_INFLATION.items():
        planes = 64 * 2 ** (int(stage[-1]) - 2)
        for inflated in flags:
            extra += inflated * in_channels * planes * (3 - 1)
            in_channels = planes * 4
    i3d = build_on_meta("i3d_resnet50", num_classes=400)
    assert parameters(i3d) == 24_327_632 + extra == 28_043_472
    kernels = {stage: [block.conv1.kernel_size[0] for block in getattr(i3d, stage)] for stage in i3d.stage_depths}
    assert kernels == {"res2": [3, 3, 3], "res3": [3, 1, 3, 1], "res4": [3, 1, 3, 1, 3, 1], "res5": [1, 3, 1]}


@pytest.mark.parametrize("name", ["c2d_resnet50", "i3d_resnet50"])
def test_video_resnet50_follows_table1_output_sizes(name):
    """Table 1: a 32×224×224 clip gives 4×7×7 at res5 (shape propagation on the meta device, no compute)."""
    net = build_on_meta(name, num_classes=400, block="nonlocal").eval()
    features = net.forward_features(torch.empty(1, 3, 32, 224, 224, device="meta"))
    assert features.shape == (1, 2048, 4, 7, 7)


@pytest.mark.parametrize("name", RESNETS)
def test_every_backbone_maps_a_batch_to_logits(name):
    net = build_backbone(name, num_classes=7, in_channels=1 if name.endswith("_small") else 3).eval()
    assert net.stage_depths.keys() == {"res2", "res3", "res4", "res5"}
    assert (net.block_kind, net.placement) == (None, {})
    # the small stems do not down-sample: 8 px still reaches res5 at 1×1 and is 16× cheaper than 32 px
    with torch.no_grad():
        assert net(sample(net, size=8 if name.endswith("_small") else 32, frames=4)).shape == (2, 7)
    wrong_rank = torch.randn(2, net.in_channels, 4, 32, 32) if net.dim == 2 else torch.randn(2, net.in_channels, 32, 32)
    with pytest.raises(ValueError, match=f"this {net.dim}D backbone expects input"):
        net(wrong_rank)


@pytest.mark.parametrize("name", ["c2d_resnet_tiny", "i3d_resnet_tiny"])
def test_tiny_video_nets_fit_every_nonlocal_preset_and_keep_time(name):
    net = build_backbone(name, num_classes=3)
    assert net.stage_depths == {"res2": 1, "res3": 4, "res4": 6, "res5": 1}  # see modules/backbones/resnet3d.py
    assert parameters(net) < 300_000
    with torch.no_grad():
        assert net.eval().forward_features(sample(net)).shape == (2, 256, 4, 4, 4)
    for preset, count in [("nl-1", 1), ("nl-5", 5), ("nl-10", 10)]:
        assert len(blocks_of(build_on_meta(name, num_classes=3, block="nonlocal", placement=preset), "nonlocal")) \
            == count


def test_nl5_on_c2d_resnet50_adds_five_3d_blocks_after_the_papers_residual_blocks():
    net = build_on_meta("c2d_resnet50", num_classes=400, block="nonlocal", placement="nl-5")
    found = blocks_of(net, "nonlocal")
    assert [name for name, _ in found] == ["res3.1.post", "res3.3.post", "res4.1.post", "res4.3.post", "res4.5.post"]
    assert all(isinstance(block, NonLocalBlock) for _, block in found)
    assert [next(block.parameters()).dim() for _, block in found] == [5] * 5  # Conv3d weights: dim=3 blocks
    assert (net.block_kind, net.placement) == ("nonlocal", {"res3": [1, 3], "res4": [1, 3, 5]})


@pytest.mark.parametrize(("name", "placement"), [("c2d_resnet_tiny", "nl-5"), ("i3d_resnet_tiny", "nl-10"),
                                                 ("resnet18_small", {"res3": [1], "res4": [0, 1]})])
def test_nonlocal_blocks_leave_the_backbone_output_unchanged_at_init(name, placement):
    torch.manual_seed(0)
    plain = build_backbone(name, num_classes=5).eval()
    with_blocks = build_backbone(name, num_classes=5, block="nonlocal", placement=placement).eval()
    missing, unexpected = with_blocks.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".post." in key for key in missing)
    x = sample(plain, size=16, frames=4)
    with torch.no_grad():
        torch.testing.assert_close(with_blocks(x), plain(x))


def test_se_integrations_are_the_blocks_names():
    assert set(SE_INTEGRATION_SLOTS) == set(SE_INTEGRATIONS)


@pytest.mark.parametrize(("integration", "slot", "channels"), [
    ("standard", "branch", [256, 256, 256, 512]),
    ("pre", "pre", [64, 256, 256, 256]),
    ("post", "post", [256, 256, 256, 512]),
    ("identity", "identity", [256, 256, 256, 512]),
])
def test_se_integration_puts_the_block_in_its_slot_with_the_papers_channels(integration, slot, channels):
    """SE paper §6.5 / Fig. 5: standard on the branch output, PRE on the branch input, POST after the sum,
    Identity on the shortcut; channels of the tensor the block scales."""
    net = build_on_meta("resnet50_small", num_classes=10, block="se", placement={"res2": "all", "res3": [0]},
                         integration=integration)
    found = blocks_of(net, "se")
    assert [name for name, _ in found] == [f"res2.{i}.{slot}" for i in range(3)] + [f"res3.0.{slot}"]
    assert [block.channels for _, block in found] == channels


@pytest.mark.parametrize("integration", sorted(SE_INTEGRATION_SLOTS))
def test_se_integrations_run_on_video(integration):
    net = build_backbone("i3d_resnet_tiny", num_classes=3, block="se", placement="se-all", integration=integration)
    assert len(blocks_of(net, "se")) == 12 and all(block.dim == 3 for _, block in blocks_of(net, "se"))
    with torch.no_grad():
        assert net.eval()(sample(net, size=16, frames=4)).shape == (2, 3)


def test_unknown_se_integration_lists_the_designs():
    with pytest.raises(ValueError, match="unknown SE integration 'middle'; valid: standard, pre, post, identity"):
        build_backbone("resnet18_small", num_classes=10, block="se", integration="middle")


def test_block_without_placement_uses_the_family_default():
    assert build_backbone("c2d_resnet_tiny", num_classes=2, block="nonlocal").placement == \
        {"res3": [1, 3], "res4": [1, 3, 5]}
    assert len(blocks_of(build_backbone("resnet18_small", num_classes=2, block="se"), "se")) == 8
    with pytest.raises(ValueError, match=r"default for block 'nonlocal', preset 'nl-5', does not fit backbone "
                                         r"'resnet18' .*res3 index 3 is out of range") as error:
        build_on_meta("resnet18", num_classes=2, block="nonlocal")
    assert "fitting preset (se-all, se-stage2" in str(error.value)


def test_no_block_ignores_placement_and_block_options():
    net = build_backbone("resnet18_small", num_classes=2, placement="se-all", reduction=8)
    assert (net.block_kind, net.placement) == (None, {})
    assert not any(isinstance(module, tuple(BLOCKS.values())) for module in net.modules())


def test_unknown_backbone_lists_the_backbones():
    with pytest.raises(ValueError, match="unknown backbone 'resnet34'") as error:
        build_backbone("resnet34", num_classes=2)
    assert all(name in str(error.value) for name in BACKBONES)


def test_unknown_block_kind_lists_the_kinds():
    with pytest.raises(ValueError, match="unknown block kind 'cbam'") as error:
        build_backbone("resnet18_small", num_classes=2, block="cbam", placement="se-all")
    assert all(kind in str(error.value) for kind in BLOCKS)


def test_invalid_placement_on_a_backbone_lists_its_stages():
    with pytest.raises(ValueError, match=r"res4 index 6 is out of range \(valid 0-5\)") as error:
        build_backbone("c2d_resnet_tiny", num_classes=2, block="nonlocal", placement={"res4": [6]})
    assert "res2 (blocks 0-0), res3 (blocks 0-3), res4 (blocks 0-5), res5 (blocks 0-0)" in str(error.value)


def test_selfattn_is_2d_only():
    with pytest.raises(ValueError, match="block 'selfattn' is 2D only"):
        build_backbone("c2d_resnet_tiny", num_classes=2, block="selfattn", placement="sa-stage4")


@pytest.mark.parametrize(("name", "replaced", "pooled"), [("resnet18_small", 3, 0), ("resnet50_small", 6, 1)])
def test_selfattn_replaces_the_width_keeping_3x3_convs_of_the_stage(name, replaced, pooled):
    """ResNet-18 res4: conv2 of the transition block and both convs of the next; ResNet-50 res4: every
    bottleneck's conv2, the strided one followed by 2×2 average pooling."""
    net = build_backbone(name, num_classes=4, block="selfattn", placement="sa-stage4", heads=4)
    found = blocks_of(net, "selfattn")
    assert len(found) == replaced and all(path.startswith("res4.") for path, _ in found)
    assert sum(isinstance(module, nn.AvgPool2d) for module in net.res4.modules()) == pooled
    remaining = [module for module in net.res4.modules() if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3)]
    assert len(remaining) == (1 if name == "resnet18_small" else 0)
    with torch.no_grad():
        assert net.eval()(sample(net, size=16)).shape == (2, 4)


def test_nonlocal_block_at_identity_init_still_receives_gradient():
    """Zero γ makes the block the identity, yet dLoss/dγ ≠ 0, so training moves it away from the identity."""
    torch.manual_seed(0)
    net = build_backbone("c2d_resnet_tiny", num_classes=2, block="nonlocal", placement="nl-1")
    loss = nn.functional.cross_entropy(net(sample(net, batch=4, size=16, frames=4)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    (_, block), = blocks_of(net, "nonlocal")
    gradients = [parameter.grad for parameter in block.parameters() if parameter.grad is not None]
    assert torch.isfinite(loss) and any(gradient.abs().sum() > 0 for gradient in gradients)


def test_residual_blocks_are_found_in_every_stage():
    net = build_backbone("c2d_resnet_tiny", num_classes=2)
    assert {stage: len(net.residual_blocks(stage)) for stage in net.stage_depths} == net.stage_depths
    assert all(isinstance(block, ResidualBlock) for block in net.residual_blocks("res4"))
    assert SPECS["c2d_resnet_tiny"].depths == tuple(net.stage_depths.values())


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_registered_backbone_has_the_contract_attributes(name):
    net = build_on_meta(name, num_classes=10)
    assert net.dim in (2, 3)
    assert isinstance(net.stage_depths, dict)
    assert net.placement in ({}, None)
