"""`trainer.precision: auto` and `model.channels_last: auto`: what this machine trains fast, by measurement.

Precision ``auto``:
  * CUDA: ``bf16-mixed`` where the GPU computes in bf16 (Ampere and later), else ``32-true``.
  * CPU: ``bf16-mixed`` where the CPU has bf16 matrix instructions (AMX-BF16, AVX512-BF16, Arm BF16 —
    the ``/proc/cpuinfo`` flags) *and* oneDNN has bf16 kernels *and* a measurement confirms it: a
    conv-BN-ReLU training step under bf16 autocast runs at least BF16_MARGIN × the fp32 step. The flag
    alone says the instructions exist, not that they pay for these shapes on this chip: AMX runs bf16
    products ~7× fp32 on a Xeon, AVX512-BF16 on a Zen 4 only up to 2× and not for every shape.
  * anything else: ``32-true``.
``channels_last: auto``: channels-last (NHWC / NDHWC) where the same step, in the chosen precision and
the network's 2D or 3D convolutions, runs at least LAYOUT_MARGIN × faster than channels-first —
oneDNN's bf16 convolutions want channels-last, its fp32 ones often do not care.

Each measurement (well under a second) runs once per machine: modules.autotune keeps the result in
memory and in ``$ATTNLAB_HOME/cache/measured-choices.sqlite`` for DDP ranks, Tune trials and later runs.
What was picked is printed at the start of a run and logged to MLflow (``resolved.precision``,
``resolved.channels_last``); the config keeps ``auto``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.config import TrainConfig

AUTO = "auto"
BF16_MARGIN = 1.25  # bf16 costs precision, so it has to earn it
LAYOUT_MARGIN = 1.05  # layouts compute the same values: a small margin only keeps noise from flipping it
_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 AMX, x86 AVX-512, Arm (aarch64 "Features")


def log_measurements() -> None:
    """Show measured choices (this module's, the Non-local kernel's) in the run's log: modules.autotune
    logs each at INFO to "attnlab.autotune", which has no handler unless the program configured one."""
    logger = logging.getLogger("attnlab.autotune")
    if not logger.handlers and not logging.getLogger().handlers:
        logger.addHandler(logging.StreamHandler())
        logger.setLevel(logging.INFO)


def device_type(cfg: TrainConfig) -> str:
    """"cuda", "mps" or "cpu": where Lightning's `trainer.accelerator` will put the run."""
    import torch

    accelerator = cfg.trainer.accelerator
    if accelerator == "cuda" or (accelerator in ("auto", "gpu") and torch.cuda.is_available()):
        return "cuda"
    if accelerator == "mps" or (accelerator in ("auto", "gpu") and torch.backends.mps.is_available()):
        return "mps"
    return "cpu"


def precision(cfg: TrainConfig) -> str:
    """The Lightning precision of the run: the configured one, or what ``auto`` resolves to here."""
    return cfg.trainer.precision if cfg.trainer.precision != AUTO else auto_precision(device_type(cfg))[0]


def channels_last(cfg: TrainConfig, dims: int) -> bool:
    """Whether the network (``dims`` = 2 or 3 spatial axes) runs channels-last."""
    if cfg.model.channels_last != AUTO:
        return cfg.model.channels_last
    return auto_channels_last(device_type(cfg), precision(cfg), dims)


def summary(cfg: TrainConfig, dims: int) -> dict[str, str]:
    """What ``auto`` resolved to and why, for the run's log line and MLflow params."""
    device = device_type(cfg)
    resolved = {"resolved.precision": precision(cfg), "resolved.channels_last": str(channels_last(cfg, dims))}
    if cfg.trainer.precision == AUTO:
        resolved["resolved.precision_reason"] = auto_precision(device)[1]
    return resolved


def auto_precision(device: str) -> tuple[str, str]:
    """(Lightning precision, why) that ``auto`` resolves to on ``device`` ("cuda", "mps", "cpu") here."""
    import torch

    from modules import autotune

    if device == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16-mixed", f"{torch.cuda.get_device_name()} computes in bf16"
        return "32-true", "no CUDA device with native bf16"
    if device != "cpu":
        return "32-true", f"{device}: fp32 (bf16 is chosen on CUDA and on CPUs with bf16 instructions)"
    flags = cpu_bf16_flags()
    if not flags:
        return "32-true", f"{autotune.cpu_model()}: no bf16 instructions (AMX-BF16, AVX512-BF16)"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "32-true", f"{autotune.cpu_model()}: this torch build's oneDNN has no bf16 kernels"
    # Each precision in its usual best layout: fp32 channels-first, bf16 channels-last (oneDNN's blocked bf16).
    candidates = {"32-true": _probe_step(2, torch.float32, False), "bf16-mixed": _probe_step(2, torch.bfloat16, True)}

    def decide(seconds):
        return "bf16-mixed" if seconds["32-true"] >= BF16_MARGIN * seconds["bf16-mixed"] else "32-true"

    # Not per thread count: every DDP rank must train in one precision, and rank 0 decides before
    # Lightning hands each rank its share of the cores (the others read its choice from the cache).
    choice = autotune.choose("training-precision", {"probe": "conv-bn-relu", "margin": BF16_MARGIN}, candidates,
                             torch.device("cpu"), decide=decide, threads_matter=False)
    return choice, (f"{autotune.cpu_model()} has {', '.join(flags)}; a measured conv step in bf16 was "
                    f"{'' if choice == 'bf16-mixed' else 'not '}at least {BF16_MARGIN}x the fp32 step")


def auto_channels_last(device: str, precision_name: str, dims: int) -> bool:
    """Whether channels-last measured faster for ``dims``-D convolutions in ``precision_name`` on ``device``."""
    import torch

    from modules import autotune

    if device == "mps":
        return False
    dtype = torch.bfloat16 if precision_name.startswith("bf16") else (
        torch.float16 if precision_name.startswith("16") else torch.float32)
    candidates = {"channels_first": _probe_step(dims, dtype, False, device),
                  "channels_last": _probe_step(dims, dtype, True, device)}

    def decide(seconds):
        faster = seconds["channels_first"] >= LAYOUT_MARGIN * seconds["channels_last"]
        return "channels_last" if faster else "channels_first"

    choice = autotune.choose("channels-last", {"dims": dims, "precision": precision_name, "device": device,
                                               "margin": LAYOUT_MARGIN}, candidates, torch.device(device),
                             decide=decide, threads_matter=False)
    return choice == "channels_last"


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The bf16 instruction-set flags this CPU reports (empty where /proc/cpuinfo is missing)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return [flag for flag in _BF16_FLAGS if flag in value.split()]
    return []


def _probe_step(dims: int, dtype, channels_last: bool, device: str = "cpu"):
    """A training step of conv-BN-ReLU ×2 on a 64-channel map (ResNet's res2 shape at 28 px), as a function
    that builds its net on first call (only a measurement calls it).

    ``dtype`` other than fp32 runs under autocast, as Lightning's ``*-mixed`` precisions do.
    """
    import torch
    from torch import nn

    built = []

    def build():
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        norm = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
        net = nn.Sequential(conv(64, 64, 3, padding=1, bias=False), norm(64), nn.ReLU(),
                            conv(64, 64, 3, padding=1, bias=False), norm(64), nn.ReLU()).to(device)
        x = torch.randn(8, 64, *((4,) if dims == 3 else ()), 28, 28, device=device)  # (B, C, [T,] H, W)
        if channels_last:
            layout = torch.channels_last_3d if dims == 3 else torch.channels_last
            net, x = net.to(memory_format=layout), x.contiguous(memory_format=layout)
        return net, x

    def step():
        if not built:
            built.append(build())
        net, x = built[0]
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            net(x).float().square().mean().backward()

    return step
