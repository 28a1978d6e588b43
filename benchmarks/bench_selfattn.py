"""What replacing a 3×3 convolution by self-attention costs (Cordonnier et al., ICLR 2020, arXiv:1911.03584).

One ``SelfAttention2d`` layer (9 heads, quadratic encoding — the layer that can express a 3×3 conv,
Theorem 1) against ``nn.Conv2d(400, 400, 3, padding=1)``, the paper's hidden size, on a 16×16 map
(CIFAR-10 after the network's 2×2 space-to-depth), batch 8. Prints forward+backward time and peak
memory of one training step for each, the attention/conv ratios, and forward multiply-adds as a
reference that does not depend on machine load. There is no pass/fail bar: the point is that users
see the price.

    .venv/bin/python benchmarks/bench_selfattn.py [--batch 8] [--size 16] [--channels 400] [--threads 1]

How peak memory is measured (CPU): each layer runs in a fresh subprocess, so nothing another
measurement allocated is still resident. The child builds the layer and input, runs one warm-up step
(lazy kernel initialisation), drops the gradients, then reads its resident set (VmRSS), resets the
kernel's high-water mark (``echo 5 > /proc/self/clear_refs``) and runs one step; peak = VmHWM − VmRSS
before the step. It reads /proc/self/status rather than ``resource.getrusage().ru_maxrss`` because
ru_maxrss cannot be reset and, in a child started from a large parent, starts at the parent's size at
fork. ``MALLOC_MMAP_THRESHOLD_`` is pinned so glibc returns freed tensor memory at once instead of
keeping it in its heap, which would hide the second step's allocations. Linux only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

KINDS = ("conv", "attention")


def resident_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def measure(kind: str, args: argparse.Namespace) -> dict:
    """Runs in the child process: time and peak memory of forward+backward for one layer."""
    import torch
    from torch import nn

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from modules.blocks.self_attention import SelfAttention2d

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if kind == "conv":
        layer = nn.Conv2d(args.channels, args.channels, 3, padding=1)
    else:
        layer = SelfAttention2d(args.channels, heads=9, encoding="quadratic")
    x = torch.randn(args.batch, args.channels, args.size, args.size, requires_grad=True)

    def step():
        layer(x).square().mean().backward()

    step()  # warm-up: lazy initialisation must not count as the step's memory
    layer.zero_grad(set_to_none=True)
    x.grad = None
    before = resident_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    step()
    peak_kib = resident_kib("VmHWM") - before

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "kind": kind,
        "parameters": sum(parameter.numel() for parameter in layer.parameters()),
        "step_ms": 1000 * statistics.median(times),
        "peak_mib": peak_kib / 1024,
    }


def run_child(kind: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", kind] + [
        f"--{name}={getattr(args, name)}" for name in ("batch", "size", "channels", "threads", "repeats")
    ]
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=16, help="map height and width")
    parser.add_argument("--channels", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on shared machines)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps; the median is reported")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(args.child, args)))
        return

    results = {kind: run_child(kind, args) for kind in KINDS}
    print(
        f"3x3 conv vs self-attention (quadratic, 9 heads): B={args.batch}, C={args.channels}, "
        f"{args.size}x{args.size} map, {args.threads} thread(s), forward+backward, median of {args.repeats}"
    )
    print(f"{'layer':<11} {'parameters':>11} {'step ms':>9} {'peak MiB':>9}")
    for kind, result in results.items():
        print(f"{kind:<11} {result['parameters']:>11,} {result['step_ms']:>9.1f} {result['peak_mib']:>9.1f}")
    conv, attention = results["conv"], results["attention"]
    # Load-independent reference: forward multiply-adds. Attention = per-head projection W_out^h
    # (as many as the conv) + mixing over N keys for 9 heads.
    pixels = args.batch * args.size * args.size
    conv_macs = pixels * args.channels * args.channels * 9
    attention_macs = conv_macs + 9 * (args.size * args.size) * pixels * args.channels
    print(
        f"forward multiply-adds: conv {conv_macs / 1e9:.2f} G, attention {attention_macs / 1e9:.2f} G "
        f"({attention_macs / conv_macs:.2f}x)"
    )
    print(
        f"ratio attention/conv: time {attention['step_ms'] / conv['step_ms']:.2f}x, "
        f"peak memory {attention['peak_mib'] / max(conv['peak_mib'], 1e-9):.2f}x"
    )


if __name__ == "__main__":
    main()
