"""C2D and I3D ResNet-50 for video (Wang et al., Non-local Neural Networks, arXiv:1711.07971 Table 1, §4).

``c2d_resnet50``  Table 1: every conv is a 2D kernel applied frame by frame (1×k×k); time is touched
                  only by pooling: conv1 1×7×7 stride 2,2,2 → pool1 3×3×3 max stride 2,2,2 → res2 →
                  pool2 3×1×1 max stride 2,1,1 → res3..res5 → global average pool → dropout 0.5 → fc.
                  A 32×224×224 clip gives 4×7×7 at res5. With the same ``num_classes`` it has exactly
                  the parameters of the 2D ResNet-50 (1×k×k kernels hold k×k weights).
``i3d_resnet50``  §4 "Inflated 3D ConvNet": conv1 inflated to 5×7×7, and the first 1×1 conv of a
                  bottleneck inflated to 3×1×1 in every other residual block. Which blocks follows the
                  reference code (facebookresearch/video-nonlocal-net, lib/models/resnet_video.py,
                  ``obtain_arc`` arc_type 2: use_temp_convs res2 [1,1,1], res3 [1,0,1,0],
                  res4 [1,0,1,0,1,0], res5 [0,1,0]); pooling as in Table 1.
``c2d_resnet_tiny``, ``i3d_resnet_tiny``
                  CPU variants for 8-frame 32×32 clips: base width 8 (stem 16 channels, res5 256 output
                  channels), depths res2..res5 = 1, 4, 6, 1 so that every Non-local preset (nl-1, nl-5,
                  nl-10) and every SE preset fits; stem conv (1|5)×3×3 stride 1 without pool1 (small
                  frames, few frames), pool2 as in Table 1 (T 8 → 4); no dropout. res5 sees 4×4×4.

``c2d_resnet50_caffe2``, ``i3d_resnet50_caffe2``
                  the same nets with the released code's pooling (lib/models/resnet_video_org.py, the
                  32-frame models): pool1 max (2, 3, 3) stride (2, 2, 2), pool2 max (2, 1, 1) stride
                  (2, 1, 1), both without padding, where Table 1 writes 3×3×3 and 3×1×1 (padded here by
                  1 so the kernel is centred). Same parameters, same temporal sizes (32 → 16 → 8 → 4), but
                  each pool window covers 2 frames, not 3, and the unpadded 3×3 pool1 makes res2 55×55
                  instead of 56×56 for a 224 crop (Caffe2 rounds down, as PyTorch); res3 onwards are the
                  same size (28, 14, 7). Porting the released weights needs these pools.

The ResNet-50s follow Table 1's temporal strides (×8 overall, for 32-frame clips); the reference code's
8-frame setting instead keeps conv1 and pool1 at temporal stride 1 (pool1 1×3×3). Dropout 0.5 before
the classifier is the reference code's TRAIN.DROPOUT_RATE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from modules.backbones.network import STAGES, ResNet, insert_blocks
from modules.backbones.residual import Bottleneck

# Which bottlenecks have a 3×1×1 first conv (1 = inflated), per stage: the reference code's arc_type 2.
I3D_RESNET50_INFLATION = {"res2": [1, 1, 1], "res3": [1, 0, 1, 0], "res4": [1, 0, 1, 0, 1, 0], "res5": [0, 1, 0]}


@dataclass(frozen=True)
class MaxPool:
    """A max-pool's (T, H, W) kernel, stride and padding."""

    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]

    def build(self) -> nn.MaxPool3d:
        return nn.MaxPool3d(kernel_size=self.kernel, stride=self.stride, padding=self.padding)


# Table 1 (kernels centred by padding) and the released Caffe2 code (resnet_video_org.py, no padding).
TABLE1_POOLS = (MaxPool((3, 3, 3), (2, 2, 2), (1, 1, 1)), MaxPool((3, 1, 1), (2, 1, 1), (1, 0, 0)))
CAFFE2_POOLS = (MaxPool((2, 3, 3), (2, 2, 2), (0, 0, 0)), MaxPool((2, 1, 1), (2, 1, 1), (0, 0, 0)))


@dataclass(frozen=True)
class VideoResNetSpec:
    """One 3D ResNet variant; all kernels/strides are (T, H, W)."""

    depths: tuple[int, int, int, int]
    stem_channels: int
    base_planes: int              # planes of res2's bottleneck; doubles per stage, ×4 at the block output
    conv1_kernel: tuple[int, int, int]
    conv1_stride: tuple[int, int, int]
    pool1: bool                   # a max-pool after conv1 (Table 1's pool1)
    inflation: dict[str, list[int]] | None  # None: C2D (no temporal kernels)
    dropout: float
    pools: tuple[MaxPool, MaxPool] = TABLE1_POOLS  # pool1 (when there is one), pool2


def _every_other(depths: tuple[int, int, int, int]) -> dict[str, list[int]]:
    """The reference pattern continued for other depths: res2 all, res3/res4 even blocks, res5 odd blocks."""
    res2, res3, res4, res5 = depths
    return {"res2": [1] * res2, "res3": [int(i % 2 == 0) for i in range(res3)],
            "res4": [int(i % 2 == 0) for i in range(res4)], "res5": [int(i % 2 == 1) for i in range(res5)]}


TINY_DEPTHS = (1, 4, 6, 1)
SPECS: dict[str, VideoResNetSpec] = {
    "c2d_resnet50": VideoResNetSpec((3, 4, 6, 3), 64, 64, (1, 7, 7), (2, 2, 2), True, None, 0.5),
    "i3d_resnet50": VideoResNetSpec((3, 4, 6, 3), 64, 64, (5, 7, 7), (2, 2, 2), True, I3D_RESNET50_INFLATION, 0.5),
    "c2d_resnet50_caffe2": VideoResNetSpec((3, 4, 6, 3), 64, 64, (1, 7, 7), (2, 2, 2), True, None, 0.5,
                                           CAFFE2_POOLS),
    "i3d_resnet50_caffe2": VideoResNetSpec((3, 4, 6, 3), 64, 64, (5, 7, 7), (2, 2, 2), True, I3D_RESNET50_INFLATION,
                                           0.5, CAFFE2_POOLS),
    "c2d_resnet_tiny": VideoResNetSpec(TINY_DEPTHS, 16, 8, (1, 3, 3), (1, 1, 1), False, None, 0.0),
    "i3d_resnet_tiny": VideoResNetSpec(TINY_DEPTHS, 16, 8, (5, 3, 3), (1, 1, 1), False, _every_other(TINY_DEPTHS), 0.0),
}


def resnet3d(name: str, *, num_classes: int, in_channels: int = 3, block: str | None = None,
             placement: Any = None, **block_kw: Any) -> ResNet:
    """The 3D ResNet ``SPECS[name]`` with attention blocks inserted."""
    spec = SPECS[name]
    conv1 = nn.Conv3d(in_channels, spec.stem_channels, kernel_size=spec.conv1_kernel, stride=spec.conv1_stride,
                      padding=tuple(k // 2 for k in spec.conv1_kernel), bias=False)
    pool1 = spec.pools[0].build() if spec.pool1 else nn.Identity()
    pool2 = spec.pools[1].build()
    temporal_kernels = None
    if spec.inflation is not None:
        # use_temp_convs=1 means a temporal kernel of 1 + 2·1 = 3 (reference code's convention)
        temporal_kernels = {stage: [1 + 2 * flag for flag in spec.inflation[stage]] for stage in STAGES}
    net = ResNet(dim=3, in_channels=in_channels, num_classes=num_classes, block_type=Bottleneck,
                 depths=spec.depths, stem_channels=spec.stem_channels, base_planes=spec.base_planes,
                 conv1=conv1, maxpool=pool1, pool2=pool2, temporal_kernels=temporal_kernels,
                 dropout=spec.dropout)
    return insert_blocks(net, block, placement, block_kw, backbone=name)


def _builder(name: str) -> Callable[..., ResNet]:
    def build(**kwargs: Any) -> ResNet:
        return resnet3d(name, **kwargs)

    build.__doc__ = f"{name}: see the module docstring of modules.backbones.resnet3d."
    return build


BUILDERS: dict[str, Callable[..., ResNet]] = {name: _builder(name) for name in SPECS}
