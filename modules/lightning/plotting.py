"""Small matplotlib helpers shared by the family modules' figures (Agg backend: no display).

matplotlib is imported when a figure is drawn, not with the modules: training a network (the GPU check in a
stock PyTorch image, for one) needs no plotting library.
"""

from __future__ import annotations

import torch
from torch import nn


def new_figure(rows: int, cols: int, cell: float = 1.8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Constrained layout fits tick labels, axis labels and outside legends in the canvas (none clipped).
    figure, axes = plt.subplots(rows, cols, figsize=(cols * cell + 0.6, rows * cell + 0.6), squeeze=False,
                                layout="constrained")
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    return figure, axes


def displayable(image: torch.Tensor):
    """(C, H, W) normalised tensor -> (H, W[, 3]) array scaled to [0, 1] for imshow."""
    image = image.detach().float().cpu()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
    return image[0].numpy() if image.shape[0] != 3 else image.permute(1, 2, 0).numpy()  # (3, H, W) -> (H, W, 3)


def capture_inputs(net: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """Run `net(x)` and return the input each of `modules` received (first call each)."""
    captured: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(
        lambda module, args, i=i: captured.setdefault(i, args[0].detach())) for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    return [captured[i] for i in range(len(modules)) if i in captured]


def spread(items: list, count: int) -> list:
    """Up to `count` items evenly spread over the list, keeping first and last."""
    if len(items) <= count:
        return list(items)
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]
