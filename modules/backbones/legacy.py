"""``resnet18_caffe``: timm's ``legacy_seresnet18`` layout (timm/models/senet.py), so its weights keep their function.

timm's legacy SE-ResNets are Cadene's port of the SE authors' released Caffe models (hujie-frank/SENet);
``legacy_seresnet18/34`` were trained by timm in the same code. Their tensors have the names and shapes
of torchvision's ResNet, but the network differs without parameters: the ``caffe`` stem (an unpadded,
ceil-mode max-pool, modules/backbones/resnet2d.py) and, in ``SEResNetBlock``, a ReLU after the second
BatchNorm, before the SE block and the sum. ``resnet50_caffe`` (resnet2d.py) is ``legacy_seresnet50``'s
layout; this file adds the basic-block one. With ``block="se"`` (``standard`` position, r = 16) the
network is timm's ``legacy_seresnet18``.

The loader (modules/pretrained) tells the layouts apart by the stem's ceil-mode pool and refuses
legacy weights for a torchvision-layout backbone, and the reverse, unless ``strict: false``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from modules.backbones.network import ResNet, insert_blocks
from modules.backbones.residual import BasicBlock
from modules.backbones.resnet2d import STEM_CHANNELS, STEMS


class LegacyBasicBlock(BasicBlock):
    """timm ``SEResNetBlock``: ``relu(bn2(conv2(...)))`` is the branch output, before SE and the sum."""

    def residual(self, x: Tensor) -> Tensor:
        return self.relu(super().residual(x))


def resnet18_caffe(*, num_classes: int, in_channels: int = 3, block: str | None = None, placement: Any = None,
                   **block_kw: Any) -> ResNet:
    conv1, maxpool = STEMS["caffe"](in_channels)
    net = ResNet(dim=2, in_channels=in_channels, num_classes=num_classes, block_type=LegacyBasicBlock,
                 depths=(2, 2, 2, 2), stem_channels=STEM_CHANNELS, base_planes=64, conv1=conv1, maxpool=maxpool,
                 pool2=nn.Identity())
    return insert_blocks(net, block, placement, block_kw, backbone="resnet18_caffe")


BUILDERS: dict[str, Callable[..., ResNet]] = {"resnet18_caffe": resnet18_caffe}
