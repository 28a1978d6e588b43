"""Backbones that attention blocks are inserted into; ``build_backbone(name, ...)`` is the one way to build them.

``BACKBONES`` maps a name to a builder called with keyword arguments only::

    builder(*, num_classes, in_channels, block, placement, **block_kw) -> nn.Module

The returned net has ``dim`` (2 or 3), ``stage_depths`` ({"res2": n, ...}), ``block_kind`` (None or the
block family) and ``placement`` (the resolved ``{stage: [indices]}``) attributes, accepts (B, C, H, W) or
(B, C, T, H, W) matching its ``dim`` and returns logits (B, num_classes). To add a backbone, add an entry
to the dict below.

``block=None`` builds the plain backbone and ignores ``placement`` and block keywords (a baseline shares
its config with the attention runs); a block without ``placement`` uses the family's default preset
(``modules.placement.DEFAULT_PRESETS``: nonlocal nl-5, se se-all, selfattn sa-stage4).
``stage_depths(name)`` gives a backbone's stages without building it for real.

Which presets fit which backbone (``modules.placement.fitting_presets`` computes it):

- resnet50, resnet50_small, resnet50_caffe, c2d_resnet50(_caffe2), i3d_resnet50(_caffe2) (depths 3, 4, 6, 3)
  and the tiny 3D nets (1, 4, 6, 1): every preset.
- resnet18, resnet18_small (2, 2, 2, 2): the se-* and sa-* presets; no nl-* preset (res3 has 2 blocks,
  res4 2) — pass a mapping such as {"res3": [1], "res4": [1]}.
- selfattn needs a 2D backbone; the 3D nets reject it.
- attention_net, attention_net_tiny (Cordonnier et al.'s pure-attention net, ``attention_net.py``): no
  residual stages; block must be None or "selfattn".

The authors' released layouts, where they differ from the papers' text or from torchvision (docs/fidelity.md):
``resnet50_caffe`` (SE authors' Caffe models: stride on the first 1×1, unpadded ceil-mode stem pool) and
``c2d_resnet50_caffe2`` / ``i3d_resnet50_caffe2`` (Non-local authors' Caffe2 pools (2,3,3) and (2,1,1)).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from modules.backbones import attention_net, resnet2d, resnet3d

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    **resnet2d.BUILDERS,
    **resnet3d.BUILDERS,
    "attention_net": attention_net.attention_net,
    "attention_net_tiny": attention_net.attention_net_tiny,
}


def build_backbone(name: str, *, num_classes: int, in_channels: int = 3, block: str | None = None,
                   placement: Any = None, **block_kw: Any) -> nn.Module:
    """Build backbone ``name`` with ``num_classes`` outputs and ``block`` attention blocks at ``placement``.

    ``placement`` is a preset name of ``modules.placement.PRESETS`` or ``{stage: [indices] | "all"}``;
    ``block_kw`` go to ``modules.blocks.make_block`` (``reduction``, family options), except SE's
    ``integration`` ∈ {standard, pre, post, identity}, which the backbone uses to place the SE block.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name](num_classes=num_classes, in_channels=in_channels, block=block,
                           placement=placement, **block_kw)


@functools.lru_cache(maxsize=64)
def stage_depths(name: str) -> dict[str, int]:
    """``{stage: residual blocks}`` of backbone ``name``, read off a copy built on the meta device
    (no memory, no initialisation time). Treat the result as read-only: it is cached."""
    with torch.device("meta"):
        return dict(build_backbone(name, num_classes=10).stage_depths)
