"""What a configuration costs before it trains: parameters, forward GFLOPs, Non-local affinity memory.

The network is built on the meta device (no memory, no initialisation time) and run once on a meta
batch under `torch.utils.flop_counter.FlopCounterMode`; forward hooks on the inserted blocks record
their input shapes. From those:

- `params`: parameters of the whole network (classifier included).
- `gflops`: forward GFLOPs for one sample (FlopCounterMode counts a multiply-add as 2 FLOPs).
- `nonlocal_activation_mb`: the largest attention affinity of one block for a batch, by the family's
  budget rule (`modules.families.Family.affinity_mb`; Non-local: B · N · N' · 4 bytes with N = T·H·W
  of the block's input). It grows as (T·H·W)², which is what rules out a Non-local block early in a
  video network. It is an upper bound: fused attention kernels need not materialise it.
- `block_channels`: the channel count each inserted block sees, to check that `reduction` divides it.

A search uses these to prune its space before anything trains: see tuning/config.py.
"""

from __future__ import annotations

import functools
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
    return tuple(override) if override else tuple(data.input_shape())


def estimate(model: Any, shape: tuple[int, ...], batch_size: int = 1, num_classes: int = 10) -> Cost:
    """Cost of the network `model` (a training.config.ModelConfig) on inputs of `shape`."""
    return _estimate(model.model_dump_json(), tuple(shape), batch_size, num_classes)


@functools.lru_cache(maxsize=1024)
def _estimate(model_json: str, shape: tuple[int, ...], batch_size: int, num_classes: int) -> Cost:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from modules.families import FAMILIES
    from training.config import ModelConfig

    model = ModelConfig.model_validate_json(model_json)
    family = FAMILIES.get(model.family)  # None: the baseline
    with torch.device("meta"):
        net = model.build(num_classes=num_classes, in_channels=shape[0])  # the very net training builds
    net.eval()
    params = sum(p.numel() for p in net.parameters())

    inputs: list[tuple[Any, tuple[int, ...]]] = []
    hooks = []
    if family is not None:
        block_class = family.block_class()
        for module in net.modules():
            if isinstance(module, block_class):
                hooks.append(module.register_forward_hook(
                    lambda mod, args, out: inputs.append((mod, tuple(args[0].shape)))))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.empty((1, *shape), device="meta"))
    for hook in hooks:
        hook.remove()

    channels = tuple(input_shape[1] for _, input_shape in inputs)
    rule = family.affinity_mb if family is not None else None
    affinity_mb = max((rule(mod, input_shape, batch_size) for mod, input_shape in inputs if rule), default=0.0)
    return Cost(params=params, gflops=counter.get_total_flops() / 1e9,
                nonlocal_activation_mb=affinity_mb, block_channels=channels)


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
