"""ResNets in the layout of timm's ``legacy_seresnet*`` (timm/models/senet.py), so their weights keep their function.

timm's legacy SE-ResNets are Cadene's port of the SE authors' released Caffe models
(hujie-frank/SENet); ``legacy_seresnet18/34`` were trained by timm in the same code. Their tensors
have the names and shapes of torchvision's ResNet, but three things without parameters differ:

- the stem max-pool is ``MaxPool2d(3, stride=2, ceil_mode=True)`` without padding ("to preserve
  compatibility with Caffe weights", senet.py) instead of ``padding=1``;
- a bottleneck's stride sits on its first 1×1 conv (``SEResNetBottleneck``: "stride=stride in conv1
  and not in conv2") — the original ResNet v1 — instead of on the 3×3 conv (v1.5);
- the basic block (``SEResNetBlock``) applies a ReLU after its second BatchNorm, before the SE block
  and the sum.

``resnet18_legacy`` and ``resnet50_legacy`` build that layout (with ``block="se"``: timm's
``legacy_seresnet18`` / ``legacy_seresnet50``, SE in the ``standard`` position, r = 16). The loader
(modules/pretrained) refuses legacy weights for a torchvision-layout backbone and the reverse unless
``strict: false``; it tells the layouts apart by the stem's ceil-mode pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from modules.backbones.network import ResNet, insert_blocks
from modules.backbones.residual import BasicBlock, Bottleneck, ResidualBlock, conv
from modules.backbones.resnet2d import STEM_CHANNELS

class LegacyBasicBlock(BasicBlock):
    """timm ``SEResNetBlock``: ``relu(bn2(conv2(...)))`` is the branch output, before SE and the sum."""

    def residual(self, x: Tensor) -> Tensor:
        return self.relu(super().residual(x))


class LegacyBottleneck(Bottleneck):
    """timm ``SEResNetBottleneck``: the stride on ``conv1`` (1×1), ``conv2`` (3×3) at stride 1."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, dim: int = 2,
                 temporal_kernel: int = 1) -> None:
        super().__init__(in_channels, planes, stride, dim=dim, temporal_kernel=temporal_kernel)
        self.conv1 = conv(dim, in_channels, planes, 1, stride=stride, temporal_kernel=temporal_kernel)
        self.conv2 = conv(dim, planes, planes, 3)


DEPTHS: dict[str, tuple[type[ResidualBlock], tuple[int, int, int, int]]] = {
    "resnet18_legacy": (LegacyBasicBlock, (2, 2, 2, 2)),
    "resnet50_legacy": (LegacyBottleneck, (3, 4, 6, 3)),
}


def legacy_resnet(name: str, *, num_classes: int, in_channels: int = 3, block: str | None = None,
                  placement: Any = None, **block_kw: Any) -> ResNet:
    block_type, depths = DEPTHS[name]
    conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
    net = ResNet(dim=2, in_channels=in_channels, num_classes=num_classes, block_type=block_type, depths=depths,
                 stem_channels=STEM_CHANNELS, base_planes=64, conv1=conv1,
                 maxpool=nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True), pool2=nn.Identity())
    return insert_blocks(net, block, placement, block_kw, backbone=name)


def _builder(name: str) -> Callable[..., ResNet]:
    def build(**kwargs: Any) -> ResNet:
        return legacy_resnet(name, **kwargs)

    build.__doc__ = f"{name}: see the module docstring of modules.backbones.legacy."
    return build


BUILDERS: dict[str, Callable[..., ResNet]] = {name: _builder(name) for name in DEPTHS}
