"""The ResNet skeleton shared by the 2D and 3D backbones, and the insertion of attention blocks.

Top-level names follow torchvision (``conv1``, ``bn1``, ``maxpool``, ``fc``; blocks keep ``conv1``,
``bn2``, ``downsample.0`` …) except that the stages carry the papers' names ``res2``..``res5`` instead of
``layer1``..``layer4``, so a torchvision state dict loads after renaming those four prefixes.

Where each block family goes is declared by the family (``modules/families.py``: ``attach``,
``attach_option``, ``dims``); see ``residual.py`` for the slots:

``nonlocal``  after the residual block (``post`` slot), on the block's output channels, ``dim`` of the
              net — Non-local paper (arXiv:1711.07971) §4 and Table 2: blocks are added right after
              residual blocks, counted by their indices within res3/res4.
``se``        inside the residual block; block keyword ``integration`` picks the SE paper's Table 14 design:
              ``standard`` (branch output, before the sum; channels = planes × expansion), ``pre`` (branch
              input; channels = block input channels), ``post`` (after sum and ReLU), ``identity`` (on the
              shortcut). The backbone consumes ``integration``; the other keywords go to ``make_block``.
``selfattn``  replaces the 3×3 convs that keep their width (2D only), see ``residual.replace_spatial_convs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from modules.backbones.residual import ResidualBlock, init_weights, make_stage, replace_spatial_convs
from modules.blocks import make_block
from modules.families import FAMILIES, family
from modules.placement import default_preset, fitting_presets, resolve

STAGES = ("res2", "res3", "res4", "res5")
SE_INTEGRATION_SLOTS = FAMILIES["se"].attach_choices


class ResNet(nn.Module):
    """stem → res2 → pool2 → res3 → res4 → res5 → global average pool → dropout → fc.

    ``stem`` provides ``conv1``, ``bn1`` and ``maxpool`` (``nn.Identity`` when the stem does not pool);
    ``pool2`` is the Non-local paper's temporal pool after res2 (Table 1), ``nn.Identity`` in 2D;
    ``block_options`` go to every residual block (``stride_in_1x1`` for the Caffe layout).
    """

    def __init__(self, *, dim: int, in_channels: int, num_classes: int, block_type: type[ResidualBlock],
                 depths: tuple[int, int, int, int], stem_channels: int, base_planes: int,
                 conv1: nn.Module, maxpool: nn.Module, pool2: nn.Module,
                 temporal_kernels: Mapping[str, list[int]] | None = None, dropout: float = 0.0,
                 block_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.in_channels = in_channels
        self.stage_depths = dict(zip(STAGES, depths, strict=True))
        self.block_kind: str | None = None
        self.placement: dict[str, list[int]] = {}
        self.conv1 = conv1
        self.bn1 = nn.BatchNorm2d(stem_channels) if dim == 2 else nn.BatchNorm3d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = maxpool
        channels = stem_channels
        for index, (stage, depth) in enumerate(self.stage_depths.items()):
            planes = base_planes * 2**index
            kernels = (temporal_kernels or {}).get(stage)
            setattr(self, stage, make_stage(block_type, channels, planes, depth, 1 if index == 0 else 2,
                                            dim=dim, temporal_kernels=kernels, **(block_options or {})))
            channels = planes * block_type.expansion
        self.pool2 = pool2
        self.avgpool = nn.AdaptiveAvgPool2d(1) if dim == 2 else nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.num_features = channels
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, [T,] H, W) -> the res5 feature map (B, C5, [T',] H', W')."""
        if x.dim() != self.dim + 2:
            expected = "(B, C, H, W)" if self.dim == 2 else "(B, C, T, H, W)"
            raise ValueError(f"this {self.dim}D backbone expects input {expected}, got shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool2(self.res2(x))
        return self.res5(self.res4(self.res3(x)))

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, C5, [T',] H', W') -> logits (B, num_classes)."""
        pooled = torch.flatten(self.avgpool(features), 1)  # (B, C5, 1, 1[, 1]) -> (B, C5)
        return self.fc(self.dropout(pooled))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def residual_blocks(self, stage: str) -> list[ResidualBlock]:
        return list(getattr(self, stage))


def insert_blocks(net: ResNet, block: str | None, placement: Any, block_kw: dict[str, Any],
                  *, backbone: str) -> ResNet:
    """Put ``block`` attention blocks into ``net`` at ``placement`` (preset name or mapping).

    ``block=None`` keeps the plain backbone and ignores ``placement`` and ``block_kw``, so a baseline run
    can share its config with the attention runs it is compared against. ``placement=None`` with a
    block uses the family's default preset (``modules.placement.DEFAULT_PRESETS``).
    """
    if block is None:
        return net
    declared = family(block)
    if net.dim not in declared.dims:
        dims = "/".join(f"{dim}D" for dim in declared.dims)
        raise ValueError(f"block {block!r} is {dims} only ({declared.block.partition(':')[2]}); "
                         f"backbone {backbone!r} is {net.dim}D")
    if placement is None:
        resolved = _resolve_default(block, net, backbone)
    else:
        resolved = resolve(placement, net.stage_depths)
    block_kw = dict(block_kw)
    slot = declared.slot(block_kw)
    for stage, indices in resolved.items():
        blocks = net.residual_blocks(stage)
        for index in indices:
            _attach(blocks[index], block, slot, net.dim, block_kw)
    net.block_kind = block
    net.placement = resolved
    return net


def _resolve_default(block: str, net: ResNet, backbone: str) -> dict[str, list[int]]:
    preset = default_preset(block)
    try:
        return resolve(preset, net.stage_depths)
    except ValueError as error:
        fitting = ", ".join(fitting_presets(net.stage_depths)) or "none"
        raise ValueError(f"no placement given and the default for block {block!r}, preset {preset!r}, does not fit "
                         f"backbone {backbone!r} ({error}); pass placement= a fitting preset ({fitting}) "
                         f"or a mapping {{stage: [indices]}}") from error


def _attach(residual: ResidualBlock, block: str, slot: str, dim: int, block_kw: dict[str, Any]) -> None:
    if slot == "spatial_convs":
        replace_spatial_convs(residual, lambda channels: make_block(block, channels, dim=dim, **block_kw))
        return
    channels = residual.in_channels if slot == "pre" else residual.out_channels
    setattr(residual, slot, make_block(block, channels, dim=dim, **block_kw))
