"""What a configuration costs before it trains: parameters, forward GFLOPs, Non-local affinity memory.

The network is built on the meta device (no memory, no initialisation time) and run once on a meta
batch under `torch.utils.flop_counter.FlopCounterMode`; forward hooks on the inserted blocks record
their input shapes. From those:

- `params`: parameters of the whole network (classifier included).
- `gflops`: forward GFLOPs for one sample (FlopCounterMode counts a multiply-add as 2 FLOPs).
- `nonlocal_activation_mb`: the largest Non-local affinity of a batch, B · N · N' · 4 bytes with
  N = T·H·W of the block's input and N' the key positions (N/4 with `sub_sample`, split by
  `temporal_group`). It grows as (T·H·W)², which is what rules out a Non-local block early in a
  video network. It is an upper bound: fused attention kernels need not materialise it.
- `block_channels`: the channel count each inserted block sees, to check that `reduction` divides it.

A search uses these to prune its space before anything trains: see tuning/config.py.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cost:
    params: int
    gflops: float
    nonlocal_activation_mb: float
    block_channels: tuple[int, ...] = field(default=())

    def as_metrics(self) -> dict[str, float]:
        return {"budget/params": float(self.params), "budget/gflops": self.gflops,
                "budget/nonlocal_activation_mb": self.nonlocal_activation_mb}


def sample_shape(data: Any, override: list[int] | None = None) -> tuple[int, ...]:
    """(C, H, W) or (C, T, H, W) of one input, from the data config (no data is read)."""
    if override:
        return tuple(override)
    if data.kind == "video":
        return (3, data.clip_len, data.crop_size, data.crop_size)
    native = {"fashion_mnist": (1, 28), "mnist": (1, 28), "cifar10": (3, 32), "folder": (3, 224)}
    channels, size = native[data.dataset]
    side = data.image_size or size
    return (channels, side, side)


@functools.lru_cache(maxsize=16)
def stage_depths(backbone: str) -> dict[str, int]:
    """{stage: residual blocks} of a backbone, built on the meta device."""
    import torch

    from modules.backbones import build_backbone

    with torch.device("meta"):
        return dict(build_backbone(backbone, num_classes=10).stage_depths)


def estimate(model: Any, shape: tuple[int, ...], batch_size: int = 1, num_classes: int = 10) -> Cost:
    """Cost of the network `model` (a training.config.ModelConfig) on inputs of `shape`."""
    key = json.dumps(model.model_dump(mode="json"), sort_keys=True)
    return _estimate(key, tuple(shape), batch_size, num_classes)


@functools.lru_cache(maxsize=1024)
def _estimate(model_json: str, shape: tuple[int, ...], batch_size: int, num_classes: int) -> Cost:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from modules.backbones import build_backbone
    from modules.blocks import BLOCKS

    model = json.loads(model_json)
    family = model["family"]
    block = None if family == "none" else family
    block_kw = dict(model.get("block") or {})
    if block is not None and model.get("reduction") is not None and family != "selfattn":
        block_kw["reduction"] = model["reduction"]
    with torch.device("meta"):
        net = build_backbone(model["backbone"], num_classes=num_classes, in_channels=shape[0],
                             block=block, placement=model.get("placement") if block else None, **block_kw)
    net.eval()
    params = sum(p.numel() for p in net.parameters())

    inputs: list[tuple[Any, tuple[int, ...]]] = []
    hooks = []
    if block is not None:
        for module in net.modules():
            if isinstance(module, BLOCKS[block]):
                hooks.append(module.register_forward_hook(
                    lambda mod, args, out: inputs.append((mod, tuple(args[0].shape)))))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.empty((1, *shape), device="meta"))
    for hook in hooks:
        hook.remove()

    channels = tuple(input_shape[1] for _, input_shape in inputs)
    affinity_mb = max((_affinity_mb(mod, input_shape, batch_size) for mod, input_shape in inputs
                       if family == "nonlocal"), default=0.0)
    return Cost(params=params, gflops=counter.get_total_flops() / 1e9,
                nonlocal_activation_mb=affinity_mb, block_channels=channels)


def _affinity_mb(block: Any, input_shape: tuple[int, ...], batch_size: int) -> float:
    """B · N · N' float32 scalars of one Non-local block's affinity, in MiB."""
    spatial = input_shape[2:]
    positions = math.prod(spatial)
    keys = positions // 4 if getattr(block, "sub_sample", False) else positions
    group = getattr(block, "temporal_group", None)
    if group and len(spatial) == 3 and spatial[0] > group:
        groups = spatial[0] // group  # attention stays within a group of frames
        positions, keys = positions // groups, keys // groups
        return batch_size * groups * positions * keys * 4 / 2**20
    return batch_size * positions * keys * 4 / 2**20


def over_budget(cost: Cost, budget: Any) -> str | None:
    """Why `cost` breaks the search's budget (a tuning.config.BudgetSpec), or None if it fits."""
    reasons = []
    if budget.max_params is not None and cost.params > budget.max_params:
        reasons.append(f"{cost.params:,} parameters > max_params {budget.max_params:,}")
    if budget.max_gflops is not None and cost.gflops > budget.max_gflops:
        reasons.append(f"{cost.gflops:.3f} GFLOPs > max_gflops {budget.max_gflops}")
    if (budget.max_nonlocal_activation_mb is not None
            and cost.nonlocal_activation_mb > budget.max_nonlocal_activation_mb):
        reasons.append(f"Non-local affinity {cost.nonlocal_activation_mb:.1f} MiB > "
                       f"max_nonlocal_activation_mb {budget.max_nonlocal_activation_mb}")
    return "; ".join(reasons) or None
