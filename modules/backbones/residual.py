"""Residual blocks with slots for attention blocks, shared by the 2D and 3D ResNets.

Two block types, structured like torchvision's ``BasicBlock`` and ``Bottleneck`` (ResNet v1.5: the
stride sits on the 3×3 conv) so that parameter counts and state-dict keys inside a block match
torchvision's. ``Bottleneck(stride_in_1x1=True)`` puts the stride on the first 1×1 conv instead: the
original Caffe ResNet and the SE authors' released SE-ResNets (hujie-frank/SENet,
``models/SE-ResNet-50.prototxt``: ``conv3_1_1x1_reduce`` has stride 2), timm's ``legacy_seresnet*``. For ``dim=3`` every conv is a 1×k×k kernel except an optional temporal kernel on the
first 1×1 conv of the bottleneck (I3D's 3×1×1 inflation, Wang et al. arXiv:1711.07971 §4).

Each block has four optional slots, ``None`` when empty (timm's ``self.attn = None`` habit):

``pre``       on the residual branch input, before the first conv (SE-PRE, Hu et al. arXiv:1709.01507 Fig. 5c)
``branch``    on the residual branch output, before the sum (the standard SE block, Fig. 5b)
``identity``  on the shortcut, in parallel to the residual branch (SE-Identity, Fig. 5e)
``post``      after the sum and the ReLU (SE-POST, Fig. 5d; a Non-local block after a residual
              block, Non-local paper §4)

Self-attention does not take a slot: :func:`replace_spatial_convs` swaps the 3×3 convs for
attention layers (Cordonnier et al. arXiv:1911.03584 §4 replace the convolution).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

from torch import Tensor, nn

from modules.layers import BATCH_NORM, CONV

SLOTS = ("pre", "branch", "identity", "post")


def spatial(dim: int, size: int, temporal: int = 1) -> tuple[int, ...]:
    """A kernel size, stride or padding: ``(size, size)`` in 2D, ``(temporal, size, size)`` in 3D."""
    return (size, size) if dim == 2 else (temporal, size, size)


def conv(dim: int, in_channels: int, out_channels: int, kernel: int, *, stride: int = 1,
         temporal_kernel: int = 1) -> nn.Module:
    """A bias-free conv with 'same' padding; in 3D the kernel is ``temporal_kernel``×k×k."""
    return CONV[dim](
        in_channels, out_channels,
        kernel_size=spatial(dim, kernel, temporal_kernel),
        stride=spatial(dim, stride),
        padding=spatial(dim, kernel // 2, temporal_kernel // 2),
        bias=False,
    )


class ResidualBlock(nn.Module):
    """Shared forward of both block types: ``post(relu(branch(residual(pre(x))) + identity(shortcut(x))))``."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.in_channels = in_channels
        self.planes = planes
        self.stride = stride
        self.out_channels = planes * self.expansion
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != self.out_channels:
            self.downsample = nn.Sequential(
                conv(dim, in_channels, self.out_channels, 1, stride=stride),
                BATCH_NORM[dim](self.out_channels),
            )
        self.relu = nn.ReLU(inplace=True)
        for slot in SLOTS:
            setattr(self, slot, None)

    @abstractmethod
    def residual(self, x: Tensor) -> Tensor:
        """The residual branch F(x); BasicBlock and Bottleneck define it."""

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        if self.identity is not None:
            shortcut = self.identity(shortcut)
        out = x if self.pre is None else self.pre(x)
        out = self.residual(out)
        if self.branch is not None:
            out = self.branch(out)
        out = self.relu(out + shortcut)
        return out if self.post is None else self.post(out)


class BasicBlock(ResidualBlock):
    """Two 3×3 convs (ResNet-18/34); ``temporal_kernel`` is accepted for symmetry and must be 1."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, dim: int = 2,
                 temporal_kernel: int = 1) -> None:
        if temporal_kernel != 1:
            raise ValueError(f"BasicBlock has no temporal kernel; got temporal_kernel={temporal_kernel}")
        super().__init__(in_channels, planes, stride, dim)
        self.conv1 = conv(dim, in_channels, planes, 3, stride=stride)
        self.bn1 = BATCH_NORM[dim](planes)
        self.conv2 = conv(dim, planes, planes, 3)
        self.bn2 = BATCH_NORM[dim](planes)

    def residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(ResidualBlock):
    """1×1 → 3×3 (stride) → 1×1 ×4 (ResNet-50); in 3D the first conv is ``temporal_kernel``×1×1.

    ``stride_in_1x1``: the stride on the first 1×1 conv (Caffe layout, see the module docstring); same
    parameters, a different network: the 1×1 conv skips three of every four pixels.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, dim: int = 2,
                 temporal_kernel: int = 1, stride_in_1x1: bool = False) -> None:
        super().__init__(in_channels, planes, stride, dim)
        first_stride, middle_stride = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv(dim, in_channels, planes, 1, stride=first_stride, temporal_kernel=temporal_kernel)
        self.bn1 = BATCH_NORM[dim](planes)
        self.conv2 = conv(dim, planes, planes, 3, stride=middle_stride)
        self.bn2 = BATCH_NORM[dim](planes)
        self.conv3 = conv(dim, planes, self.out_channels, 1)
        self.bn3 = BATCH_NORM[dim](self.out_channels)

    def residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


def replace_spatial_convs(block: ResidualBlock, make_attention: Callable[[int], nn.Module]) -> int:
    """Swap every 3×3 conv that keeps its channel count for ``make_attention(channels)``; return how many.

    That is ``conv2`` of a Bottleneck, and ``conv2`` plus ``conv1`` (unless it changes the width at a
    stage transition) of a BasicBlock. Attention keeps the resolution, so a strided conv becomes
    attention followed by ``AvgPool2d(stride)`` — the down-sampling Ramachandran et al. (arXiv:1906.05909
    §3.2) use in their attention ResNets.
    """
    replaced = 0
    for name in ("conv1", "conv2"):
        layer = getattr(block, name)
        if layer.kernel_size != (3, 3) or layer.in_channels != layer.out_channels:
            continue
        attention = make_attention(layer.out_channels)
        stride = layer.stride[0]
        setattr(block, name, attention if stride == 1 else nn.Sequential(attention, nn.AvgPool2d(stride)))
        replaced += 1
    return replaced


def make_stage(block_type: type[ResidualBlock], in_channels: int, planes: int, depth: int, stride: int,
               *, dim: int, temporal_kernels: list[int] | None = None, **block_options) -> nn.Sequential:
    """``depth`` residual blocks; the first one carries the stride and the width change. ``block_options``
    go to every block (``stride_in_1x1`` for a Bottleneck)."""
    temporal_kernels = temporal_kernels or [1] * depth
    blocks = []
    for index in range(depth):
        blocks.append(block_type(in_channels, planes, stride if index == 0 else 1,
                                 dim=dim, temporal_kernel=temporal_kernels[index], **block_options))
        in_channels = planes * block_type.expansion
    return nn.Sequential(*blocks)


def init_weights(net: nn.Module) -> None:
    """torchvision's ResNet initialisation: He (fan-out) convs, BN γ=1 β=0; linear layers keep PyTorch's default."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
