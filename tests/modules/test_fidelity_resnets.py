"""The ResNet, SE-ResNet and Non-local rows of docs/fidelity.md: reference parameter counts, the authors'
released layouts (SE: Caffe; Non-local: Caffe2 pools), and each switch changing exactly what the table says."""

import re

import pytest
import timm
import torch
import torchvision
from torch import nn

from modules.backbones import build_backbone
from modules.blocks import NonLocalBlock

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/modules/conftest.py

RESNET50 = 25_557_032  # He et al. Table 1 / torchvision
SE_RESNET50 = 28_088_024  # SE paper §4: ≈2.5M over ResNet-50's 25.6M, r = 16
# SE paper Table 13 (stage ablation: 25.6M, 25.7M, 26.4M): SE blocks in one stage of ResNet-50 only
SE_STAGE = {"se-stage2": 25_582_424, "se-stage3": 25_690_280, "se-stage4": 26_349_992}
NONLOCAL_RES3, NONLOCAL_RES4 = 526_592, 2_101_760  # one 3D block on 512 / 1024 channels, bottleneck C/2
NL5_EXTRA = 2 * NONLOCAL_RES3 + 3 * NONLOCAL_RES4  # 7,358,464: nl-5 = 2 blocks in res3 + 3 in res4
RESNET18_CIFAR = 11_173_962  # Cordonnier et al.'s ResNet-18 baseline (epfml/attention-cnn models/resnet.py)


def count(net: nn.Module) -> int:
    return sum(parameter.numel() for parameter in net.parameters())


def on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build_backbone(name, **kwargs)


@pytest.mark.parametrize("name", ["resnet50", "resnet50_caffe"])
def test_resnet50_and_se_resnet50_counts(name):
    assert count(on_meta(name, num_classes=1000)) == RESNET50
    assert count(on_meta(name, num_classes=1000, block="se", placement="se-all", reduction=16)) == SE_RESNET50


@pytest.mark.parametrize("placement", sorted(SE_STAGE))
def test_se_stage_ablation_counts(placement):
    assert count(on_meta("resnet50", num_classes=1000, block="se", placement=placement, reduction=16)) \
        == SE_STAGE[placement]


def test_nonlocal_block_counts_and_nl5_on_the_video_resnets():
    assert count(NonLocalBlock(512, dim=3)) == NONLOCAL_RES3
    assert count(NonLocalBlock(1024, dim=3)) == NONLOCAL_RES4
    for name in ("c2d_resnet50", "i3d_resnet50", "c2d_resnet50_caffe2", "i3d_resnet50_caffe2"):
        plain, with_blocks = on_meta(name, num_classes=400), on_meta(name, num_classes=400, block="nonlocal",
                                                                    placement="nl-5")
        assert count(with_blocks) - count(plain) == NL5_EXTRA == 7_358_464, name


def test_resnet18_small_is_the_authors_cifar_resnet18():
    """kuangliu's CIFAR ResNet-18 (the authors' models/resnet.py): torchvision's with a 3×3 stride-1 stem and no
    max-pool — the same layers, so the weights load and the outputs agree."""
    ours = build_backbone("resnet18_small", num_classes=10).eval()
    reference = torchvision.models.resnet18(num_classes=10)
    reference.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    reference.maxpool = nn.Identity()
    reference.eval()
    assert count(ours) == count(reference) == RESNET18_CIFAR
    ours.load_state_dict({re.sub(r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}.", key): value
                          for key, value in reference.state_dict().items()})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def timm_legacy_to_ours(key: str) -> str:
    """timm legacy_seresnet50 state-dict key -> resnet50_caffe (+ SE) key."""
    key = re.sub(r"^layer0\.", "", key)
    key = re.sub(r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}.", key)
    key = key.replace("se_module.fc1", "branch.gate.0").replace("se_module.fc2", "branch.gate.2")
    return key.replace("last_linear", "fc")


def test_resnet50_caffe_with_se_is_the_se_authors_released_network():
    """hujie-frank/SENet SE-ResNet-50.prototxt (stride 2 on conv3_1_1x1_reduce, pool1 3×3/2 unpadded, rounding
    up) = timm's legacy_seresnet50: copied weights give the same outputs; resnet50 + SE (stride on the 3×3)
    has the same parameters but computes something else."""
    torch.manual_seed(0)
    reference = timm.create_model("legacy_seresnet50", num_classes=10).eval()
    ours = build_backbone("resnet50_caffe", num_classes=10, block="se", placement="se-all", reduction=16).eval()
    ours.load_state_dict({timm_legacy_to_ours(key): value for key, value in reference.state_dict().items()})
    assert ours.res3[0].conv1.stride == (2, 2) and ours.res3[0].conv2.stride == (1, 1)
    assert ours.maxpool.ceil_mode and ours.maxpool.padding == 0
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))
        v15 = build_backbone("resnet50", num_classes=10, block="se", placement="se-all", reduction=16).eval()
        v15.load_state_dict(ours.state_dict())  # the same keys and shapes ...
        assert not torch.allclose(v15(x), reference(x), atol=1e-3)  # ... a different network


def test_caffe2_video_resnets_change_only_the_two_pools():
    """lib/models/resnet_video_org.py: pool1 max (2,3,3)/(2,2,2), pool2 max (2,1,1)/(2,1,1), no padding, where
    Table 1 writes 3×3×3 and 3×1×1; every other module is the same."""
    for paper, released in [("c2d_resnet50", "c2d_resnet50_caffe2"), ("i3d_resnet50", "i3d_resnet50_caffe2")]:
        a, b = dict(on_meta(paper, num_classes=400).named_modules()), dict(on_meta(released, num_classes=400).named_modules())
        assert a.keys() == b.keys()
        differing = sorted(name for name in a if repr(a[name]) != repr(b[name]) and not len(a[name]._modules))
        assert differing == ["maxpool", "pool2"]
        pools = [(m.kernel_size, m.stride, m.padding) for m in (b["maxpool"], b["pool2"])]
        assert pools == [((2, 3, 3), (2, 2, 2), (0, 0, 0)), ((2, 1, 1), (2, 1, 1), (0, 0, 0))]
        paper_pools = [(m.kernel_size, m.stride, m.padding) for m in (a["maxpool"], a["pool2"])]
        assert paper_pools == [((3, 3, 3), (2, 2, 2), (1, 1, 1)), ((3, 1, 1), (2, 1, 1), (1, 0, 0))]


@pytest.mark.parametrize("name, res2", [("c2d_resnet50", 56), ("c2d_resnet50_caffe2", 55)])
def test_caffe2_pools_keep_table1_sizes_from_res3_on(name, res2):
    net = on_meta(name, num_classes=400)
    clip = torch.empty(1, 3, 32, 224, 224, device="meta")
    stem = net.maxpool(net.relu(net.bn1(net.conv1(clip))))
    assert stem.shape == (1, 64, 8, res2, res2)
    assert net.res3(net.pool2(net.res2(stem))).shape == (1, 512, 4, 28, 28)
    assert net.forward_features(clip).shape == (1, 2048, 4, 7, 7)
    assert net(clip).shape == (1, 400)


def test_caffe2_temporal_pool_reads_two_frames():
    x = torch.zeros(1, 1, 4, 1, 1)
    x[0, 0, 1] = 1.0  # a spike in frame 1: windows {0, 1}, {2, 3} (released) vs {-1, 0, 1}, {1, 2, 3} (Table 1)
    assert on_meta("c2d_resnet50_caffe2", num_classes=2).pool2(x).flatten().tolist() == [1.0, 0.0]
    assert on_meta("c2d_resnet50", num_classes=2).pool2(x).flatten().tolist() == [1.0, 1.0]


def test_nonlocal_gaussian_follows_eq2_and_embedded_gaussian_the_reference_scale():
    """Eq. (2): f = exp(x_iᵀx_j), unscaled (mmcv too); the reference code scales θᵀφ by 1/√C' (USE_SCALE)."""
    torch.manual_seed(1)
    gaussian = NonLocalBlock(8, mode="gaussian").double().eval()
    with torch.no_grad():
        gaussian.norm.weight.fill_(1.0)
    x = torch.randn(1, 8, 3, 3, dtype=torch.float64)
    tokens = x.flatten(2)[0]  # (C, N)
    affinity = torch.softmax(tokens.T @ tokens, dim=-1)  # exp(x_iᵀ x_j) / Σ_j, eq. (2) and (1)
    torch.testing.assert_close(gaussian.attention_map(x, range(9))[0], affinity)
    assert NonLocalBlock(8, mode="gaussian", use_scale=True).scale == 8**-0.5
    assert NonLocalBlock(8).scale == 4**-0.5  # embedded Gaussian: 1/√C', C' = 8 // 2


def test_nonlocal_sub_sampling_pools_keys_like_the_reference_and_keeps_the_parameters():
    """§3.3 / NONLOCAL.USE_MAXPOOL: φ and g see a (1, 2, 2) max-pooled map; the block's weights are the same."""
    plain, pooled = NonLocalBlock(8, dim=3), NonLocalBlock(8, dim=3, sub_sample=True)
    assert (plain.sub_sample, pooled.sub_sample) == (False, True)
    assert count(plain) == count(pooled)
    assert (pooled.pool.kernel_size, pooled.pool.stride) == ((1, 2, 2), (1, 2, 2))
    x = torch.randn(1, 8, 2, 4, 6)
    assert plain.attention_map(x, [0]).shape == (1, 1, 2 * 4 * 6)
    assert pooled.attention_map(x, [0]).shape == (1, 1, 2 * 2 * 3)
