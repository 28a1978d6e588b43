"""Class probabilities of a classifier network, with the papers' multi-clip testing.

Shared by the LightningModule's test step, the registered model's raw-input predictions and
`attnlab evaluate`, so a video scores the same in `trainer.test`, in
`mlflow.pyfunc.load_model(...).predict` and in an evaluation run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


def clip_probabilities(forward: Forward, x: torch.Tensor) -> torch.Tensor:
    """Softmax of each of the K clips (or crops) of each sample: (B, K, ...) -> (B, K, classes)."""
    batch, clips = x.shape[:2]
    logits = forward(x.flatten(0, 1))  # (B, K, ...) -> (B*K, ...) -> (B*K, classes)
    return logits.softmax(-1).view(batch, clips, -1)


def class_probabilities(forward: Forward, x: torch.Tensor, input_dims: int) -> torch.Tensor:
    """Softmax over classes, (B, classes). A batch with one extra dimension (B, K, ...) holds K clips
    (or crops) of each sample, whose probabilities are the mean of its K clips' softmax (Non-local
    paper, Sec. 5: 10-clip testing). `input_dims` counts the network's input dimensions with the
    batch: 4 for (B, C, H, W), 5 for (B, C, T, H, W)."""
    if x.dim() == input_dims + 1:
        return clip_probabilities(forward, x).mean(1)  # (B, K, classes) -> (B, classes)
    return forward(x).softmax(-1)
