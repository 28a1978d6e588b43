"""Layers by dimension — 1 (sequences), 2 (images), 3 (video) — for every block and backbone to build with."""

import torch.nn.functional as F
from torch import nn

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_FUNCTION = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
