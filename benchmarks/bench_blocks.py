"""Blocks against reference implementations: time and peak memory of a training step (forward + backward).

    .venv/bin/python benchmarks/bench_blocks.py [--sections nonlocal ...]

Each section compares an attnlab block with a reference that computes the same function the textbook way,
prints a table of ratios, and checks them against the bars below; the script exits 1 when a bar fails.
To add a section: write ``def my_section() -> Section`` and list it in SECTIONS.

The Non-local section times our block as built (its default kernel "auto": SDPA or the chunked oneDNN kernel,
whichever modules/autotune.py measured faster here on first use; the table names the choice), the same block
forced onto F.scaled_dot_product_attention ("SDPA"), and the materialising reference. Its time bar is against
the better of the two: the default must beat both by 20 %.

The bf16 section times the same block at the largest N under bf16 autocast (as ``precision: bf16-mixed``
trains it) against our fp32 block, and checks the output stays within bf16 tolerance of the fp32 output.
Its speed bar holds on CPUs with bf16 matrix instructions (AMX-BF16, AVX512-BF16); elsewhere the figure
is printed without a bar. Every section prints the CPU model (``lscpu``) beside its figures.

Method, on CPU (no GPU on these machines):
  * time: median of REPS steps after one warm-up, ours and the reference interleaved step by step, so
    load from other processes on the shared cores hits both alike; 2 intra-op threads. The bar is on
    wall-clock time; the process CPU-time ratio (both threads, incl. OpenMP spin-waits) is printed
    beside it because it is steadier when other jobs compete for the cores.
  * peak extra memory: one fresh subprocess per (implementation, size). It builds the block and input,
    runs a warm-up step, resets the kernel's RSS high-water mark (``echo 5 > /proc/self/clear_refs``),
    runs one step and reports VmHWM − VmRSS-before from /proc/self/status. glibc's mmap threshold is
    pinned to 64 KiB (MALLOC_MMAP_THRESHOLD_) so every tensor buffer is mmapped and returned on free:
    RSS then follows the live tensors instead of a malloc arena that keeps freed memory from the
    warm-up (which would hide allocations of the measured step). tracemalloc cannot see torch's
    allocations, hence RSS.
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from machine import bf16_flags, describe
from modules import autotune
from modules.blocks import NonLocalBlock

THREADS = 2
REPS = 3
MIB = 2**20


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)  # (description, passed)


class MaterialisedNonLocal(nn.Module):
    """Reference embedded-Gaussian Non-local block forming the N×N affinity, like timm's ``NonLocalAttn``
    and mmcv's ``NonLocal3d``: explicit bmm, softmax, bmm. Shares nothing with ours but the weights."""

    def __init__(self, block: NonLocalBlock):
        super().__init__()
        self.theta, self.phi, self.g = copy.deepcopy(block.theta), copy.deepcopy(block.phi), copy.deepcopy(block.g)
        self.w_z, self.norm, self.scale = copy.deepcopy(block.w_z), copy.deepcopy(block.norm), block.scale

    def forward(self, x):
        batch, spatial = x.shape[0], x.shape[2:]
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (B, C', T, H, W) -> (B, N, C')
        phi = self.phi(x).flatten(2)  # (B, C', T, H, W) -> (B, C', N)
        g = self.g(x).flatten(2).transpose(1, 2)  # (B, C', T, H, W) -> (B, N, C')
        affinity = torch.softmax(torch.bmm(theta, phi) * self.scale, dim=-1)  # (B, N, C') x (B, C', N) -> (B, N, N)
        y = torch.bmm(affinity, g)  # (B, N, N) x (B, N, C') -> (B, N, C')
        y = y.transpose(1, 2).reshape(batch, -1, *spatial)  # (B, N, C') -> (B, C', T, H, W)
        return x + self.norm(self.w_z(y))


# --- Non-local: ours (SDPA) vs materialised affinity, B=2, C=512, 3D, training mode -------------------------
NONLOCAL_BATCH, NONLOCAL_CHANNELS = 2, 512
NONLOCAL_SIZES = [(8, 14, 14), (16, 14, 14), (32, 14, 14)]  # N = 1568, 3136, 6272
NONLOCAL_BARS = {"time": 0.8, "memory": 0.4}  # at the largest N: time vs the better of reference and SDPA,
# memory vs the reference
BF16_SPEEDUP_BAR = 2.5  # our bf16 block vs our fp32 block, on CPUs with bf16 instructions
BF16_TOLERANCE = 2**-6  # max |bf16 - fp32| / max |fp32|: bf16 keeps 8 bits of mantissa, a few roundings deep


def nonlocal_blocks(frames, height, width, seed=0):
    """{ours, sdpa, reference} and the input: the same weights, BN γ = 1 so that gradients reach every layer.

    ``ours`` is the block as built (attention_kernel "auto": the chunked kernel on CPU float32); ``sdpa``
    is the same block forced onto F.scaled_dot_product_attention, printed for comparison.
    """
    torch.manual_seed(seed)
    ours = NonLocalBlock(NONLOCAL_CHANNELS, dim=3)
    nn.init.ones_(ours.norm.weight)
    sdpa = copy.deepcopy(ours)
    sdpa.attention_kernel = "sdpa"
    blocks = {"ours": ours.train(), "sdpa": sdpa.train(), "reference": MaterialisedNonLocal(ours).train()}
    return blocks, torch.randn(NONLOCAL_BATCH, NONLOCAL_CHANNELS, frames, height, width)


def training_step(block, x):
    block.zero_grad(set_to_none=False)
    block(x).square().mean().backward()


class Autocast(nn.Module):
    """The wrapped block run under CPU bf16 autocast, as Lightning's ``bf16-mixed`` runs a network."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.block(x)


def chosen_kernels(positions):
    """The Non-local attention kernels autotune chose for training steps at n = positions, e.g. "chunked-512-onednn"."""
    return sorted({choice for (topic, key), choice in autotune.choices().items()
                   if topic.startswith("nonlocal-attention") and json.loads(key)["n"] == positions
                   and json.loads(key)["backward"]})


def _proc_status_kib(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))


def measure_memory_here(implementation, frames, height, width):
    """Run inside a fresh subprocess: peak RSS growth (bytes) of one training step."""
    torch.set_num_threads(THREADS)
    blocks, x = nonlocal_blocks(frames, height, width)
    block = blocks.pop(implementation)
    del blocks
    training_step(block, x)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset VmHWM to the current RSS
    before = _proc_status_kib("VmRSS")
    training_step(block, x)
    return (_proc_status_kib("VmHWM") - before) * 1024


def measure_memory(implementation, size):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    command = [sys.executable, os.path.abspath(__file__), "--memory-probe", implementation, *map(str, size)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])["bytes"]


def measure_times(blocks, x):
    """Median (wall, CPU) seconds per training step for each block, steps interleaved across blocks."""
    for block in blocks:
        training_step(block, x)
    samples = [[] for _ in blocks]
    for _ in range(REPS):
        for block, times in zip(blocks, samples):
            wall, cpu = time.perf_counter(), time.process_time()
            training_step(block, x)
            times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return [tuple(statistics.median(column) for column in zip(*times)) for times in samples]


def nonlocal_section():
    section = Section(
        title=f"Non-local (embedded Gaussian) vs materialised N×N affinity: B={NONLOCAL_BATCH}, "
              f"C={NONLOCAL_CHANNELS}, 3D, fp32 training step, {THREADS} threads\n{describe()}",
        header=["N", "T×H×W", "ours kernel", "ours ms", "SDPA ms", "ref ms", "ratio vs ref", "vs better",
                "CPU-time ratio", "SDPA ratio", "ours MiB", "SDPA MiB", "ref MiB", "memory ratio"],
    )
    for size in NONLOCAL_SIZES:
        blocks, x = nonlocal_blocks(*size)
        with torch.no_grad():
            for name in ("ours", "sdpa"):
                torch.testing.assert_close(blocks[name](x), blocks["reference"](x), rtol=1e-4, atol=1e-4)
        times = dict(zip(blocks, measure_times(list(blocks.values()), x)))  # name -> (wall, CPU) seconds
        del blocks, x
        memory = {name: measure_memory(name, size) for name in ("ours", "sdpa", "reference")}
        (ours_time, ours_cpu), (sdpa_time, _), (reference_time, reference_cpu) = (
            times[name] for name in ("ours", "sdpa", "reference"))
        ratios = {"time": ours_time / min(reference_time, sdpa_time), "memory": memory["ours"] / memory["reference"]}
        positions = size[0] * size[1] * size[2]
        section.rows.append([
            str(positions), "x".join(map(str, size)), "/".join(chosen_kernels(positions)),
            f"{ours_time * 1e3:.0f}", f"{sdpa_time * 1e3:.0f}", f"{reference_time * 1e3:.0f}",
            f"{ours_time / reference_time:.2f}", f"{ratios['time']:.2f}", f"{ours_cpu / reference_cpu:.2f}",
            f"{sdpa_time / reference_time:.2f}",
            *(f"{memory[name] / MIB:.0f}" for name in ("ours", "sdpa", "reference")), f"{ratios['memory']:.2f}",
        ])
    against = {"time": "the better of reference and SDPA", "memory": "the reference"}
    for name, bar in NONLOCAL_BARS.items():  # the bars hold at the largest N, where the N×N term dominates
        section.checks.append((f"{name} at N={positions} vs {against[name]}: {ratios[name]:.2f} <= {bar}",
                               ratios[name] <= bar))
    return section


def bf16_section():
    """Our block under bf16 autocast vs our fp32 block, at the largest N: speed, and the output's error."""
    size = NONLOCAL_SIZES[-1]
    positions = size[0] * size[1] * size[2]
    flags = bf16_flags()
    section = Section(
        title=f"Non-local block in bf16 (CPU autocast) vs the same block in fp32: N={positions}, B={NONLOCAL_BATCH}, "
              f"C={NONLOCAL_CHANNELS}, training step, {THREADS} threads\n{describe()}",
        header=["N", "fp32 kernel", "bf16 kernel", "fp32 ms", "bf16 ms", "speed-up", "CPU-time speed-up",
                "output error", "tolerance"],
    )
    blocks, x = nonlocal_blocks(*size)
    ours = blocks["ours"]
    del blocks
    with torch.no_grad():
        expected = ours(x)
        error = ((Autocast(ours)(x).float() - expected).abs().max() / expected.abs().max()).item()
    autotune.forget()  # the table names the kernels the timed steps use
    (fp32_time, fp32_cpu), (bf16_time, bf16_cpu) = measure_times([ours, Autocast(ours)], x)
    kernels = {json.loads(key)["dtype"]: choice for (topic, key), choice in autotune.choices().items()
               if topic.startswith("nonlocal-attention") and json.loads(key)["backward"]}
    speedup = fp32_time / bf16_time
    section.rows.append([str(positions), kernels.get("float32", "?"), kernels.get("bfloat16", "?"),
                         f"{fp32_time * 1e3:.0f}", f"{bf16_time * 1e3:.0f}", f"{speedup:.2f}",
                         f"{fp32_cpu / bf16_cpu:.2f}", f"{error:.2e}", f"{BF16_TOLERANCE:.2e}"])
    section.checks.append((f"bf16 output within tolerance: {error:.2e} <= {BF16_TOLERANCE:.2e}",
                           error <= BF16_TOLERANCE))
    if flags:
        section.checks.append((f"bf16 speed-up on a CPU with {', '.join(flags)}: {speedup:.2f} >= {BF16_SPEEDUP_BAR}",
                               speedup >= BF16_SPEEDUP_BAR))
    else:
        print(f"bf16 speed-up {speedup:.2f}: no bar on a CPU without bf16 instructions")
    return section


SECTIONS = {"nonlocal": nonlocal_section, "bf16": bf16_section}


def print_section(section):
    widths = [max(len(cell) for cell in column) for column in zip(section.header, *section.rows)]
    print(f"\n{section.title}")
    for row in [section.header, *section.rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
    for description, passed in section.checks:
        print(f"{'PASS' if passed else 'FAIL'}  {description}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--memory-probe", nargs=4, metavar=("IMPL", "T", "H", "W"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        implementation, *size = args.memory_probe
        print(json.dumps({"bytes": measure_memory_here(implementation, *map(int, size))}))
        return 0
    torch.set_num_threads(THREADS)
    failed = False
    for name in args.sections:
        section = SECTIONS[name]()
        print_section(section)
        failed |= not all(passed for _, passed in section.checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
