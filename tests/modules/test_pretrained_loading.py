"""Loading pretrained weights into attnlab networks: inflation, inserted blocks, from_conv, strictness, controls.

The source networks are attnlab/torchvision ResNets built here with random weights; BatchNorm statistics
and affine parameters are randomised too, so a tensor loaded into the wrong place changes the logits.
(Loading torchvision/timm *files* through a run config: tests/training/test_init_weights.py.)
"""

import copy

import pytest
import torch
import torchvision
from torch import nn

from modules.backbones import build_backbone
from modules.blocks import BLOCKS
from modules.pretrained import LoadError, fine_tuning, inflate, load_pretrained
from modules.pretrained.report import PRETRAINED

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/modules/conftest.py


def randomise_norms(net: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                size = module.num_features
                module.running_mean.copy_(torch.rand(size, generator=generator) * 0.4 - 0.2)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(size, generator=generator) * 0.4 - 0.2)
    return net.eval()


@pytest.fixture(scope="module")
def resnet50_2d():
    torch.manual_seed(0)
    return randomise_norms(torchvision.models.resnet50(num_classes=10))


@pytest.fixture(scope="module")
def tiny_2d():
    torch.manual_seed(1)
    return randomise_norms(build_backbone("resnet_tiny", num_classes=5))


def boring_clip(image: torch.Tensor, frames: int) -> torch.Tensor:
    return image.unsqueeze(2).expand(-1, -1, frames, -1, -1).contiguous()  # (B, C, H, W) -> (B, C, T, H, W)


@pytest.mark.parametrize(("source", "target", "size"), [("resnet50_2d", "c2d_resnet50", 64),
                                                        ("tiny_2d", "c2d_resnet_tiny", 16)])
def test_c2d_inflated_from_2d_gives_the_2d_logits_on_a_boring_clip(source, target, size, request):
    """In float64, so that the equality is the property's and not float32 rounding (which differs between
    the 2D and 3D conv kernels by ~1e-5 relative over ResNet-50's 53 convs)."""
    source_net = copy.deepcopy(request.getfixturevalue(source)).double()
    net = build_backbone(target, num_classes=source_net.fc.out_features).eval().double()
    report = load_pretrained(net, source_net.state_dict())
    image = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        expected, actual = source_net(image), net(boring_clip(image, 8))
    assert report.counts().keys() <= {"loaded", "inflated"}
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_i3d_inflation_inflates_every_conv_and_misses_nothing(resnet50_2d):
    net = build_backbone("i3d_resnet50", num_classes=10)
    report = load_pretrained(net, resnet50_2d.state_dict())
    source, target = resnet50_2d.state_dict(), net.state_dict()
    convs = [key for key, value in target.items() if value.dim() == 5]
    assert sorted(report.keys("inflated")) == sorted(convs) and len(convs) == 53
    assert set(report.keys("loaded")) == set(target) - set(convs)  # BatchNorm and fc: same shape
    assert report.counts().keys() == {"loaded", "inflated"}  # nothing new, missing, unused
    temporal = {key: target[key].shape[2] for key in convs}
    assert temporal["conv1.weight"] == 5 and temporal["res2.0.conv1.weight"] == 3 and temporal["res3.1.conv1.weight"] == 1
    for key in convs:  # summed over time, each inflated kernel is its 2D kernel (2D source tensors are torchvision's
        name = key.replace("res2", "layer1").replace("res3", "layer2").replace("res4", "layer3").replace("res5", "layer4")
        torch.testing.assert_close(target[key].sum(2), source[name])


def test_inflate_repeats_over_time_and_divides_by_the_temporal_kernel():
    kernel = torch.randn(4, 3, 3, 3)
    inflated = inflate(kernel, 3)
    assert inflated.shape == (4, 3, 3, 3, 3)
    assert all(torch.equal(inflated[:, :, t], kernel / 3) for t in range(3))


@pytest.mark.parametrize(("target", "size", "frames"), [("resnet50", 64, None), ("c2d_resnet50", 64, 8)])
def test_inserted_nonlocal_blocks_leave_the_pretrained_logits_exactly_unchanged(resnet50_2d, target, size, frames):
    resnet50_2d = copy.deepcopy(resnet50_2d).double()
    net = build_backbone(target, num_classes=10, block="nonlocal", placement="nl-5").eval().double()
    report = load_pretrained(net, resnet50_2d.state_dict())
    image = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        expected = resnet50_2d(image)
        actual = net(image if frames is None else boring_clip(image, frames))
    new = report.keys("new")
    assert new and all(_inside_block(net, key, "nonlocal") for key in new)
    if frames is None:
        assert torch.equal(actual, expected)  # z = BN(...) + x with BN γ = β = 0: exactly x
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)  # the C2D property, float64


def _inside_block(net, key, kind):
    return any(key.startswith(name + ".") for name, module in net.named_modules() if isinstance(module, BLOCKS[kind]))


def attention_errors(net, source_net, x):
    """Per replaced conv: (max error on interior pixels, max error anywhere, max |conv output|)."""
    inputs, outputs = {}, {}

    def record(name):
        def hook(module, args, output):
            inputs[name], outputs[name] = args[0], output
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in net.named_modules()
               if isinstance(module, BLOCKS["selfattn"])]
    with torch.no_grad():
        net(x)
        errors = {}
        for name, output in outputs.items():
            conv = source_net.get_submodule(name)
            expected = nn.functional.conv2d(inputs[name], conv.weight, padding=1)
            difference = (output - expected).abs()
            errors[name] = (difference[..., 1:-1, 1:-1].max().item(), difference.max().item(),
                            expected.abs().max().item())
    for handle in handles:
        handle.remove()
    return errors


@pytest.mark.parametrize("padding", [1, 0])
def test_self_attention_from_the_replaced_convs_keeps_the_pretrained_function(padding):
    """from_conv (Theorem 1) per replaced 3×3 conv, measured on its own input inside the network.

    With ``model.block.padding: 1`` the attention's keys include the conv's zero padding: the layer
    equals the conv at every pixel, borders included (measured ≤ 1e-6 of the output's scale, float32
    rounding), so the network keeps the backbone's logits. With ``padding: 0`` interior pixels are
    still exact but a border head whose tap falls on the padding attends to the nearest pixels
    instead: measured up to ~90 % of the output's scale there, and the logits move (random
    ResNet-18, 28 px, res4 replaced: max |Δlogit| ~0.7 of ~2.7; every 3×3 conv replaced: top-1
    agreement 75 %). The report notes it on every from_conv tensor.
    """
    torch.manual_seed(2)
    source_net = randomise_norms(build_backbone("resnet18_small", num_classes=10))
    options = {"block": "selfattn", "placement": "sa-stage4", "padding": padding}
    net = build_backbone("resnet18_small", num_classes=10, **options).eval()
    report = load_pretrained(net, source_net.state_dict())
    fresh = build_backbone("resnet18_small", num_classes=10, **options).eval()
    load_pretrained(fresh, source_net.state_dict(), selfattn_from_conv=False)
    x = torch.randn(4, 3, 28, 28)

    errors = attention_errors(net, source_net, x)
    assert set(errors) == {"res4.0.conv2", "res4.1.conv1", "res4.1.conv2"}
    from_conv = [entry for entry in report.entries if entry.status == "from_conv"]
    assert {entry.key for entry in from_conv} == {key for key in net.state_dict() if key.startswith(tuple(errors))}
    assert all(("border pixels differ" in entry.note) == (padding == 0) for entry in from_conv)
    for name, (interior, anywhere, scale) in errors.items():
        assert interior <= 1e-5 * scale, f"{name}: interior error {interior:.2e} (scale {scale:.1f})"
        if padding:
            assert anywhere <= 1e-5 * scale, f"{name}: border error {anywhere:.2e} (scale {scale:.1f})"
        else:
            assert anywhere > 0.1 * scale, f"{name}: without padded keys the borders are not the conv's"
    fresh_errors = attention_errors(fresh, source_net, x)
    assert all(fresh_errors[name][0] > 100 * errors[name][0] for name in errors)  # a fresh layer is not the conv
    with torch.no_grad():
        expected = source_net(x)
        kept, unkept = (net(x) - expected).abs().max(), (fresh(x) - expected).abs().max()
    assert kept < unkept, f"from_conv logits error {kept:.3f} not below a fresh attention's {unkept:.3f}"
    if padding:
        torch.testing.assert_close(net(x).detach(), expected, rtol=1e-4, atol=1e-4)


def test_without_from_conv_the_replaced_convs_are_reported_and_the_attention_is_new():
    source_net = build_backbone("resnet18_small", num_classes=10)
    net = build_backbone("resnet18_small", num_classes=10, block="selfattn", placement="sa-stage4")
    report = load_pretrained(net, source_net.state_dict(), selfattn_from_conv=False)
    assert sorted(report.keys("replaced")) == ["res4.0.conv2.weight", "res4.1.conv1.weight", "res4.1.conv2.weight"]
    assert report.keys("new") and not report.keys("from_conv", "unused")


def test_se_blocks_start_as_a_gate_near_one_half_and_change_the_pretrained_logits(resnet50_2d):
    """What SE does to a pretrained network at step 0 (README "Fine-tuning"): its fresh gates scale every
    channel of each residual branch by σ(W₂δ(W₁z) + b₂) ≈ 0.5, so the network is not the backbone any
    more until fine-tuning adapts the gates (and the following layers)."""
    net = build_backbone("resnet50", num_classes=10, block="se", placement="se-all").eval()
    report = load_pretrained(net, resnet50_2d.state_dict())
    gates = []
    handles = [module.gate.register_forward_hook(lambda module, args, output: gates.append(output))
               for module in net.modules() if isinstance(module, BLOCKS["se"])]
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        changed = (net(image) - resnet50_2d(image)).abs().max()
    for handle in handles:
        handle.remove()
    mean_gate = torch.cat([gate.flatten() for gate in gates]).mean().item()
    assert len(gates) == 16 and all(_inside_block(net, key, "se") for key in report.keys("new"))
    assert 0.4 < mean_gate < 0.6, mean_gate
    assert changed > 1e-2


def test_a_resnet18_state_dict_for_a_resnet50_names_both():
    with pytest.raises(LoadError, match=r"ResNet-18\).*this backbone has Bottlenecks.*ResNet-50"):
        load_pretrained(build_backbone("resnet50", num_classes=10), build_backbone("resnet18", num_classes=10).state_dict())


def test_unknown_and_mismatched_tensors_are_errors_unless_strict_is_off():
    source = build_backbone("resnet18_small", num_classes=10, in_channels=3).state_dict()
    source["extra.weight"] = torch.zeros(3)
    with pytest.raises(LoadError) as error:
        load_pretrained(build_backbone("resnet18_small", num_classes=10, in_channels=1), source)
    assert "not used by this network: extra.weight" in str(error.value)
    assert "shape mismatch: conv1.weight: source 64×3×3×3, network 64×1×3×3" in str(error.value)

    net = build_backbone("resnet18_small", num_classes=10, in_channels=1)
    report = load_pretrained(net, source, strict=False)
    assert report.keys("unused") == ["extra.weight"] and "conv1.weight" in report.keys("reinitialised")
    assert len(report.warnings) == 2 and "WARNING: shape mismatch: conv1.weight" in report.format()


@pytest.mark.parametrize(("head", "classes", "status"), [("auto", 10, "loaded"), ("auto", 4, "reinitialised"),
                                                         ("reinit", 10, "reinitialised"), ("keep", 10, "loaded")])
def test_head_policy(head, classes, status):
    source = build_backbone("resnet18_small", num_classes=10)
    net = build_backbone("resnet18_small", num_classes=classes)
    report = load_pretrained(net, source.state_dict(), head=head)
    assert {"fc.weight", "fc.bias"} <= set(report.keys(status))
    assert torch.equal(net.fc.weight, source.fc.weight) == (status == "loaded")


def test_head_keep_refuses_another_class_count():
    with pytest.raises(LoadError, match="head: keep needs the source's classifier: classifier head: the source has 10 classes, this run 4"):
        load_pretrained(build_backbone("resnet18_small", num_classes=4),
                        build_backbone("resnet18_small", num_classes=10).state_dict(), head="keep")


def test_legacy_weights_are_refused_by_a_torchvision_layout_backbone_unless_strict_is_off():
    import timm  # a test extra (pyproject.toml)

    legacy = timm.create_model("legacy_seresnet50", num_classes=10).state_dict()
    with pytest.raises(LoadError, match="legacy layout and this backbone the torchvision layout"):
        load_pretrained(build_backbone("resnet50", num_classes=10, block="se"), legacy)
    report = load_pretrained(build_backbone("resnet50", num_classes=10, block="se"), legacy, strict=False)
    assert "different function" in report.warnings[0] and report.counts() == {"loaded": 384}
    with pytest.raises(LoadError, match="torchvision layout and this backbone the legacy layout"):
        load_pretrained(build_backbone("resnet50_caffe", num_classes=10), torchvision.models.resnet50().state_dict())


def test_freeze_and_frozen_bn_touch_only_pretrained_weights(resnet50_2d):
    net = build_backbone("resnet50", num_classes=4, block="nonlocal", placement="nl-5")
    report = load_pretrained(net, resnet50_2d.state_dict())
    controls = fine_tuning(net, report, freeze="res3", frozen_bn=True, new_lr_multiplier=10.0)
    pretrained = set(report.keys(*PRETRAINED))
    for name, parameter in net.named_parameters():
        in_frozen_stage = name.startswith(("conv1.", "bn1.", "res2.", "res3."))
        is_norm = isinstance(net.get_submodule(name.rpartition(".")[0]), nn.BatchNorm2d)
        frozen = name in pretrained and (in_frozen_stage or is_norm)
        assert parameter.requires_grad != frozen, name
        assert controls.lr_multipliers.get(name, 1.0) == (1.0 if name in pretrained else 10.0), name
    block_norms = [f"res3.1.post.{name}.weight" for name, module in net.res3[1].post.named_modules()
                   if isinstance(module, nn.BatchNorm2d)]
    assert block_norms and all(name in controls.lr_multipliers for name in block_norms)  # the block in res3 trains
    assert net.get_parameter(block_norms[0]).requires_grad and net.fc.weight.requires_grad
    norms = [module for module in net.modules() if isinstance(module, nn.BatchNorm2d)]
    assert len(controls.frozen_norms) == 53 == len(norms) - 5  # all but the five Non-local blocks' BN


def test_freeze_needs_a_resnet():
    net = build_backbone("attention_net_tiny", num_classes=10)
    report = load_pretrained(net, build_backbone("attention_net_tiny", num_classes=10).state_dict())
    with pytest.raises(ValueError, match="freeze: 'stem' needs a ResNet backbone"):
        fine_tuning(net, report, freeze="stem")


def test_se_weights_into_a_network_without_se_name_the_unused_tensors_and_the_family_that_takes_them():
    source = build_backbone("resnet18_small", num_classes=10, block="se", placement="se-stage4").state_dict()
    with pytest.raises(LoadError) as error:
        load_pretrained(build_backbone("resnet18_small", num_classes=10), source)
    assert "not used by this network: res4.0.branch.gate.0.weight" in str(error.value)
    assert "family se, placement se-all takes them" in str(error.value)
