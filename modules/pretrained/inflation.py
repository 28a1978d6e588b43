"""2D → 3D inflation of convolution kernels (I3D: Carreira & Zisserman, arXiv:1705.07750 §2.2; Non-local:
Wang et al., arXiv:1711.07971 §4, "Inflated 3D ConvNet (I3D)": a 2D k×k kernel inflated to t×k×k, each
of the t planes initialised by the pre-trained k×k weights rescaled by 1/t; "Implementation Details":
the models start from ImageNet weights).

A k_t×k×k kernel gets the 2D k×k kernel repeated k_t times along time and divided by k_t, so on a
"boring" clip (one image repeated over time) every inflated conv gives the 2D conv's response, away
from the clip's first and last k_t//2 frames, where the temporal zero padding enters. A 1×k×k kernel
(every conv of C2D) is the 2D kernel itself: a C2D network inflated from a 2D ResNet gives the 2D
network's logits on a boring clip (its temporal pools take maxima of equal frames).
"""

from __future__ import annotations

import torch


def can_inflate(source_shape: torch.Size | tuple[int, ...], target_shape: torch.Size | tuple[int, ...]) -> bool:
    """A 2D conv kernel (O, I, k, k') whose 3D version is `target_shape` (O, I, k_t, k, k')."""
    source, target = tuple(source_shape), tuple(target_shape)
    return len(source) == 4 and len(target) == 5 and target[:2] == source[:2] and target[3:] == source[2:]


def inflate(kernel: torch.Tensor, temporal: int) -> torch.Tensor:
    """(O, I, k, k') -> (O, I, temporal, k, k'): repeated over time and divided by `temporal`."""
    if kernel.dim() != 4:
        raise ValueError(f"inflate expects a 2D conv kernel (O, I, k, k'), got shape {tuple(kernel.shape)}")
    return kernel.unsqueeze(2).repeat(1, 1, temporal, 1, 1) / temporal  # (O, I, 1, k, k') -> (O, I, T, k, k')
