"""Training throughput (images/s of forward + backward + SGD step, same batch, same precision) of
attnlab's networks against references, on whatever device this runs (CPU here: small batch and
resolution so it takes a few minutes).

- SE-ResNet-50 (se-all, r=16) vs timm's `seresnet50` (same architecture, pretrained=False), both fp32.
  Bar: ours >= 0.95x timm.
- SE-ResNet-50 as `precision: auto` / `channels_last: auto` train it on this machine (training/hardware.py:
  bf16-mixed autocast and channels-last where measured faster) vs timm's `seresnet50` in fp32.
  Bar: >= 1.6x on CPUs with AMX-BF16; >= 0.95x elsewhere (auto must never lose).
- Non-local C2D ResNet-50 (nl-5) vs the same backbone without blocks. Five NL blocks with the
  paper's C/2 bottleneck add real work (four C x C/2 1x1 convs per block: at 112 px and 4 frames,
  +47% FLOPs), so the bar is on efficiency: throughput ratio / FLOP ratio >= 0.90, i.e. the NL
  blocks run at least 90% as fast per FLOP as the backbone's own convolutions.

Rounds alternate between the two models, one optimizer step each; the best round per model is
kept (like timeit), because on a shared machine load only ever slows a round down.
Prints a table with the CPU model (`lscpu`) and PASS/FAIL; exits 1 on any FAIL.
Usage: python benchmarks/bench_training.py [--rounds 8] [--steps 1]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from machine import bf16_flags, describe
from modules.backbones import build_backbone

AUTO_BARS = {"amx": 1.6, "other": 0.95}  # precision auto vs timm fp32, by the CPU's bf16 instructions


class AsTrained(nn.Module):
    """A network run the way `precision`/`channels_last` settings run it: autocast dtype and memory format."""

    def __init__(self, net: nn.Module, precision: str, channels_last: bool):
        super().__init__()
        self.net, self.precision = net, precision
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)

    def forward(self, x):
        x = x.contiguous(memory_format=self.memory_format)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision.startswith("bf16")):
            return self.net(x).float()


def train_step_rate(model: nn.Module, batch: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    """Images per second over `steps` optimizer steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_function = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_function(model(batch), labels).backward()
        optimizer.step()
    return steps * batch.shape[0] / (time.perf_counter() - started)


def training_flops(model: nn.Module, batch: torch.Tensor) -> float:
    """FLOPs of one forward + backward pass."""
    with FlopCounterMode(display=False) as counter:
        model(batch).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def compare(name: str, ours: nn.Module, reference: nn.Module, shape: tuple, rounds: int, steps: int,
            bar: float, per_flop: bool = False) -> dict:
    """Throughput of `ours` vs `reference`; `per_flop` divides the ratio by the FLOP ratio."""
    torch.manual_seed(0)
    batch, labels = torch.randn(*shape), torch.randint(0, 10, (shape[0],))
    ours.train()
    reference.train()
    flop_ratio = training_flops(reference, batch) / training_flops(ours, batch)  # expected speed ratio
    for model in (ours, reference):  # warm-up: allocator, oneDNN kernels
        train_step_rate(model, batch, labels, 1)
    rates: dict[str, list[float]] = {"ours": [], "reference": []}
    for _ in range(rounds):
        rates["ours"].append(train_step_rate(ours, batch, labels, steps))
        rates["reference"].append(train_step_rate(reference, batch, labels, steps))
    ours_rate, reference_rate = max(rates["ours"]), max(rates["reference"])
    ratio = ours_rate / reference_rate
    score = ratio / flop_ratio if per_flop else ratio
    return {"name": name, "ours": ours_rate, "reference": reference_rate, "ratio": ratio,
            "flop_ratio": flop_ratio, "score": score, "bar": bar, "passed": score >= bar,
            "measure": "ratio/FLOP ratio" if per_flop else "ratio",
            "ours_params": _millions(ours), "reference_params": _millions(reference)}


def _millions(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args(argv)

    import timm

    from training.hardware import auto_channels_last, auto_precision

    results = []
    ours = build_backbone("resnet50", num_classes=10, block="se", placement="se-all", reduction=16)
    reference = timm.create_model("seresnet50", pretrained=False, num_classes=10)
    results.append(compare("SE-ResNet-50 vs timm seresnet50", ours, reference,
                           (args.batch, 3, args.size, args.size), args.rounds, args.steps, bar=0.95))
    del ours, reference

    precision, why = auto_precision("cpu")
    channels_last = auto_channels_last("cpu", precision, 2)
    ours = AsTrained(build_backbone("resnet50", num_classes=10, block="se", placement="se-all", reduction=16),
                     precision, channels_last)
    reference = timm.create_model("seresnet50", pretrained=False, num_classes=10)
    auto_bar = AUTO_BARS["amx" if "amx_bf16" in bf16_flags() else "other"]
    results.append(compare(f"SE-ResNet-50 auto ({precision}{', NHWC' if channels_last else ''}) vs timm fp32",
                           ours, reference, (args.batch, 3, args.size, args.size), args.rounds, args.steps,
                           bar=auto_bar))
    del ours, reference

    ours = build_backbone("c2d_resnet50", num_classes=10, block="nonlocal", placement="nl-5")
    reference = build_backbone("c2d_resnet50", num_classes=10)
    clip_batch = max(1, args.batch // args.frames)
    results.append(compare("NL C2D ResNet-50 (nl-5) vs C2D ResNet-50", ours, reference,
                           (clip_batch, 3, args.frames, args.size, args.size), args.rounds, args.steps, bar=0.90,
                           per_flop=True))

    print(f"\ntraining throughput (fwd+bwd+SGD step), fp32 unless named, {torch.get_num_threads()} threads, "
          f"{args.size}px, batch {args.batch} images / {clip_batch} clips of {args.frames} frames, "
          f"best of {args.rounds} rounds\n{describe()}\nprecision auto here: {precision} ({why})")
    header = (f"{'comparison':56} {'ours/s':>8} {'ref/s':>8} {'ratio':>6} {'FLOP ratio':>10} "
              f"{'measure':>17} {'score':>6} {'bar':>5}  params M ours/ref  result")
    print(header)
    print("-" * len(header))
    for row in results:
        print(f"{row['name']:56} {row['ours']:8.2f} {row['reference']:8.2f} {row['ratio']:6.3f} "
              f"{row['flop_ratio']:10.3f} {row['measure']:>17} {row['score']:6.3f} {row['bar']:5.2f}  "
              f"{row['ours_params']:7.2f}/{row['reference_params']:<7.2f}   {'PASS' if row['passed'] else 'FAIL'}")
    return 0 if all(row["passed"] for row in results) else 1


if __name__ == "__main__":
    sys.exit(main())
