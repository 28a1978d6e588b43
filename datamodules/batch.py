"""The batch every DataModule yields, written down once (pytorchvideo's habit of a typed batch).

``Batch(x, y)`` is a NamedTuple, so ``x, y = batch`` and ``batch[0]`` work as with the plain tuple:

- ``x``: float32 images ``(B, C, H, W)`` or clips ``(B, C, T, H, W)``; a video TEST batch carries all
  clips of each video, ``(B, K, C, T, H, W)`` with K = test_clips × test_crops (the model averages them).
- ``y``: int64 class indices ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from torch import Tensor
from torch.utils.data import default_collate


class Batch(NamedTuple):
    x: Tensor
    y: Tensor


class CollateBatch:
    """A collate function whose (x, y) result becomes a Batch; None (every item failed) stays None.
    A class, not a closure, so that spawned loader workers can unpickle it."""

    def __init__(self, collate: Callable[[list], Any] | None = None) -> None:
        self.collate = collate or default_collate

    def __call__(self, samples: list) -> Batch | None:
        collated = self.collate(samples)
        return None if collated is None else Batch(*collated)
