"""The machine a benchmark ran on, for the line printed beside every figure (the README's tables name it).

    from machine import describe     # benchmarks/ is the script's folder, so this imports as a sibling
    print(describe())                # "CPU AMD EPYC (family 25 model 17), 2 cpus, bf16: avx512_bf16; load 1.2 ..."
"""

from __future__ import annotations

import os
import subprocess

BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def lscpu() -> dict[str, str]:
    """`lscpu`'s fields ({} where it is missing)."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {name.strip(): value.strip() for name, _, value in
            (line.partition(":") for line in output.splitlines()) if value}


def cpu_model() -> str:
    fields = lscpu()
    name = fields.get("Model name", "unknown CPU")
    if "CPU family" in fields and "Model" in fields:
        name += f" (family {fields['CPU family']} model {fields['Model']})"
    return name


def bf16_flags() -> list[str]:
    flags = lscpu().get("Flags", "").split()
    return [flag for flag in BF16_FLAGS if flag in flags]


def describe() -> str:
    """CPU model, core count, bf16 instructions and load average: what a figure depends on."""
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    return (f"CPU {cpu_model()}, {os.cpu_count()} cpus, bf16 instructions: {', '.join(bf16_flags()) or 'none'}; "
            f"load average {load} (1/5/15 min; other work on the machine slows the figures)")
