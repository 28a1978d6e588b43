"""The families' paper figures keep every label, title and legend inside the saved image."""

import pytest
import torch

from modules.backbones import build_backbone
from modules.lightning import MODULES

OPTIM = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "betas": [0.9, 0.999],
         "weight_decay": 1e-4, "decay_norm_and_bias": False, "schedule": "cosine", "warmup_epochs": 1.0,
         "milestones": [2, 4], "gamma": 0.1}
PLACEMENTS = {"se": "se-all", "nonlocal": {"res3": [0], "res4": [0]}, "selfattn": "sa-stage4"}


@pytest.mark.parametrize("family", sorted(PLACEMENTS))
def test_figures_keep_every_label_inside_the_canvas(family):
    torch.manual_seed(0)
    net = build_backbone("resnet18_small", num_classes=10, in_channels=1, block=family,
                         placement=PLACEMENTS[family])
    module = MODULES[family](net, num_classes=10, optim=OPTIM)
    figures = module.figures([(torch.randn(8, 1, 28, 28), torch.arange(8) % 10)])
    assert figures
    for name, figure in figures.items():
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        width, height = figure.canvas.get_width_height()
        for axis in figure.axes:
            texts = [axis.yaxis.label, axis.xaxis.label, axis.title, *filter(None, [axis.get_legend()])]
            for text in texts:
                box = text.get_window_extent(renderer)
                if box.width == 0:  # an empty label
                    continue
                label = getattr(text, "get_text", lambda: "legend")()
                assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, \
                    f"{name}: {label!r} at {box.bounds} is cut off a {width}x{height} image"
