"""2D ResNet-18 and ResNet-50 (He et al., arXiv:1512.03385 Table 1), with an ImageNet or a small-image stem.

The structure is torchvision's ``resnet18``/``resnet50`` (v1.5: stride on the 3×3 conv), so with
``num_classes=1000`` the parameter counts match torchvision's (ResNet-50: 25,557,032) and a torchvision
state dict loads after renaming ``layer1..4`` to ``res2..5``.

Stems:

``imagenet``  7×7 conv stride 2 → BN → ReLU → 3×3 max-pool stride 2 (224 px inputs; res5 at 7×7).
``small``     3×3 conv stride 1 → BN → ReLU, no pooling — the CIFAR-style stem for 28–32 px inputs
              (res5 at 4×4 for 32 px); same widths and depths as the ImageNet nets. ``resnet18_small``
              with 10 classes is the ResNet-18 baseline of Cordonnier et al. (epfml/attention-cnn
              ``models/resnet.py``, kuangliu's CIFAR ResNet): 11,173,962 parameters, the same layers.
``caffe``     7×7 conv stride 2 → BN → ReLU → 3×3 max-pool stride 2 *without padding, rounding up*
              (Caffe's pooling) — the SE authors' released models (hujie-frank/SENet
              ``models/SE-ResNet-50.prototxt``, ``pool1/3x3_s2``).

``resnet50_caffe`` is the Caffe layout of those released SE-ResNet-50s (and of He et al.'s original
ResNet-50): the ``caffe`` stem, and the stride of each stage's first bottleneck on its first 1×1 conv
(``residual.Bottleneck(stride_in_1x1=True)``). timm's ``legacy_seresnet50`` is the same network
(tests/modules/test_fidelity_resnets.py loads its weights and compares outputs). Same parameter count as
``resnet50`` (SE-ResNet-50, r = 16: 28,088,024); torchvision/timm's ``resnet50``/``seresnet50`` keep
the stride on the 3×3 conv (ResNet v1.5), which this project uses by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from modules.backbones.network import ResNet, insert_blocks
from modules.backbones.residual import BasicBlock, Bottleneck, ResidualBlock

DEPTHS: dict[str, tuple[type[ResidualBlock], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
STEM_CHANNELS = 64


def _imagenet_stem(in_channels: int) -> tuple[nn.Module, nn.Module]:
    conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
    return conv1, nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


def _small_stem(in_channels: int) -> tuple[nn.Module, nn.Module]:
    conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=3, stride=1, padding=1, bias=False)
    return conv1, nn.Identity()


def _caffe_stem(in_channels: int) -> tuple[nn.Module, nn.Module]:
    conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
    return conv1, nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


STEMS: dict[str, Callable[[int], tuple[nn.Module, nn.Module]]] = {
    "imagenet": _imagenet_stem,
    "small": _small_stem,
    "caffe": _caffe_stem,
}


def resnet2d(depth_name: str, stem: str, *, num_classes: int, in_channels: int = 3,
             block: str | None = None, placement: Any = None, backbone: str | None = None,
             stride_in_1x1: bool = False, **block_kw: Any) -> ResNet:
    """A 2D ResNet (``depth_name`` in ``DEPTHS``, ``stem`` in ``STEMS``) with attention blocks inserted."""
    block_type, depths = DEPTHS[depth_name]
    conv1, maxpool = STEMS[stem](in_channels)
    net = ResNet(dim=2, in_channels=in_channels, num_classes=num_classes, block_type=block_type,
                 depths=depths, stem_channels=STEM_CHANNELS, base_planes=64,
                 conv1=conv1, maxpool=maxpool, pool2=nn.Identity(),
                 block_options={"stride_in_1x1": True} if stride_in_1x1 else None)
    return insert_blocks(net, block, placement, block_kw, backbone=backbone or f"{depth_name}/{stem}")


def _builder(depth_name: str, stem: str, name: str, **layout: Any) -> Callable[..., ResNet]:
    def build(**kwargs: Any) -> ResNet:
        return resnet2d(depth_name, stem, backbone=name, **layout, **kwargs)

    build.__doc__ = f"{name}: {depth_name} with the {stem!r} stem (see the module docstring)."
    return build


BUILDERS: dict[str, Callable[..., ResNet]] = {
    "resnet18": _builder("resnet18", "imagenet", "resnet18"),
    "resnet50": _builder("resnet50", "imagenet", "resnet50"),
    "resnet50_caffe": _builder("resnet50", "caffe", "resnet50_caffe", stride_in_1x1=True),
    "resnet18_small": _builder("resnet18", "small", "resnet18_small"),
    "resnet50_small": _builder("resnet50", "small", "resnet50_small"),
}
