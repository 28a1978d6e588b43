"""The GPU check: what this project claims on a GPU, measured in one run of under 8 minutes on one H200.

    python benchmarks/gpu_check.py            # on a CUDA machine (make gpu-check)
    python benchmarks/gpu_check.py --smoke    # the same code on the CPU with tiny shapes, in seconds (a test runs it)

Needs only what a stock CUDA PyTorch image has — torch, torchvision, lightning, torchmetrics, timm: it
imports modules.backbones / modules.blocks / modules.lightning, never training/ (MLflow), tuning/ (Ray),
datamodules' decoders or the service; data are random tensors; nothing is downloaded. Prints:

1. SE-ResNet-50 bf16 training images/s vs timm ``seresnet50`` (same architecture). Bar >= 0.95x.
2. Non-local C2D and I3D ResNet-50, nl-5 (the paper's blocks: embedded Gaussian, C/2, sub-sampled) vs
   the same backbone without blocks: clips/s ratio divided by the FLOP ratio. Bar >= 0.90.
3. The Non-local block at N = 32x56x56 = 100,352 positions in bf16 through flash SDPA: fwd+bwd time and
   peak memory, vs the materialising reference (N x N affinity) at growing N until it no longer fits.
4. torch.compile on/off for the NL C2D ResNet-50: compile time and steps/s after it.
5. One DDP training step through the project's Lightning path (the family LightningModule, Trainer with
   strategy "ddp" on 1 device, bf16-mixed): it runs, and how long a step takes.
Each section reports its own error and the rest still run; the exit status is 1 when a bar fails or a
section fails. ``--smoke`` uses small backbones (SE-ResNet-18 vs timm ``seresnet18``, the tiny C2D/I3D
nets), CPU autocast, and torch.compile's ``aot_eager`` backend (no C++ toolchain needed).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from modules.backbones import build_backbone
from modules.blocks import NonLocalBlock

PAPER_NONLOCAL = {"mode": "embedded_gaussian", "sub_sample": True, "use_scale": True}  # configs/nonlocal_*_r50.yaml


@dataclass(frozen=True)
class Sizes:
    device: str
    se_backbone: str
    timm_model: str
    image_batch: int
    image_size: int
    video_backbones: tuple[str, str]
    clip_batch: int
    frames: int
    clip_size: int
    block_channels: int
    block_frames: tuple[int, ...]  # T of the T x 56 x 56 maps; the last is the block's target N
    block_side: int
    warmup: int
    steps: int
    compile_backend: str


GPU = Sizes("cuda", "resnet50", "seresnet50", 128, 224, ("c2d_resnet50", "i3d_resnet50"), 8, 8, 224,
            256, (4, 8, 16, 32), 56, 5, 20, "inductor")
SMOKE = Sizes("cpu", "resnet18", "seresnet18", 2, 32, ("c2d_resnet_tiny", "i3d_resnet_tiny"), 2, 4, 32,
              16, (1, 2), 7, 1, 1, "aot_eager")


class Trained(nn.Module):
    """A network as bf16-mixed trains it on a GPU: channels-last, bf16 autocast; fp32 logits out."""

    def __init__(self, net: nn.Module, device: str):
        super().__init__()
        self.device = device
        self.layout = torch.channels_last_3d if getattr(net, "dim", 2) == 3 else torch.channels_last
        self.net = net.to(memory_format=self.layout)

    def forward(self, x):
        with torch.autocast(self.device, dtype=torch.bfloat16):
            return self.net(x.contiguous(memory_format=self.layout)).float()


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def steps_per_second(model: nn.Module, shape: tuple, sizes: Sizes, steps: int | None = None) -> float:
    """Optimizer steps per second (forward, backward, SGD) on random data, after warm-up."""
    model = model.to(sizes.device).train()
    x = torch.randn(*shape, device=sizes.device)
    y = torch.randint(0, 10, (shape[0],), device=sizes.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(sizes.warmup):
        step()
    synchronize(sizes.device)
    started = time.perf_counter()
    for _ in range(steps or sizes.steps):
        step()
    synchronize(sizes.device)
    return (steps or sizes.steps) / (time.perf_counter() - started)


def training_flops(model: nn.Module, shape: tuple, device: str) -> float:
    x = torch.randn(*shape, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def se_resnet(sizes: Sizes) -> dict:
    import timm

    shape = (sizes.image_batch, 3, sizes.image_size, sizes.image_size)
    ours = Trained(build_backbone(sizes.se_backbone, num_classes=10, block="se", placement="se-all", reduction=16),
                   sizes.device)
    reference = Trained(timm.create_model(sizes.timm_model, pretrained=False, num_classes=10), sizes.device)
    rates = {name: steps_per_second(model, shape, sizes) * shape[0] for name, model in
             (("ours", ours), ("timm", reference))}
    ratio = rates["ours"] / rates["timm"]
    return {"images_per_s": rates, "ratio": ratio, "bar": 0.95, "passed": ratio >= 0.95}


def nonlocal_networks(sizes: Sizes) -> dict:
    results = {}
    shape = (sizes.clip_batch, 3, sizes.frames, sizes.clip_size, sizes.clip_size)
    for backbone in sizes.video_backbones:
        ours = Trained(build_backbone(backbone, num_classes=10, block="nonlocal", placement="nl-5",
                                      **PAPER_NONLOCAL), sizes.device).to(sizes.device)
        plain = Trained(build_backbone(backbone, num_classes=10), sizes.device).to(sizes.device)
        flop_ratio = training_flops(plain, shape, sizes.device) / training_flops(ours, shape, sizes.device)
        rates = {"nl5": steps_per_second(ours, shape, sizes) * shape[0],
                 "none": steps_per_second(plain, shape, sizes) * shape[0]}
        score = rates["nl5"] / rates["none"] / flop_ratio
        results[backbone] = {"clips_per_s": rates, "flop_ratio": flop_ratio, "per_flop": score, "bar": 0.9,
                             "passed": score >= 0.9}
    return results


class MaterialisedNonLocal(nn.Module):
    """The reference: the N x N affinity formed explicitly (bmm, softmax, bmm), weights shared with ``block``."""

    def __init__(self, block: NonLocalBlock):
        super().__init__()
        self.block = block

    def forward(self, x):
        block, spatial = self.block, x.shape[2:]
        theta = block.theta(x).flatten(2).transpose(1, 2)  # (B, C', N)ᵀ -> (B, N, C')
        phi, g = block.phi(x).flatten(2), block.g(x).flatten(2).transpose(1, 2)  # (B, C', N), (B, N, C')
        affinity = torch.softmax(torch.bmm(theta, phi) * block.scale, dim=-1)  # (B, N, C') x (B, C', N) -> (B, N, N)
        y = torch.bmm(affinity, g).transpose(1, 2).reshape(x.shape[0], -1, *spatial)  # (B, N, N) x (B, N, C') -> (B, C', *S)
        return x + block.norm(block.w_z(y))


def block_step(model: nn.Module, x: torch.Tensor, sizes: Sizes) -> tuple[float, float | None]:
    """(seconds, peak GiB) of one fwd+bwd in bf16 autocast after a warm-up step; memory on CUDA only."""
    def step():
        with torch.autocast(sizes.device, dtype=torch.bfloat16):
            model(x).float().square().mean().backward()

    step()
    synchronize(sizes.device)
    if sizes.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    step()
    synchronize(sizes.device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if sizes.device == "cuda" else None
    return seconds, peak


def nonlocal_block(sizes: Sizes) -> dict:
    """Flash SDPA at every N (forced: a fallback to the math kernel raises), the reference until it stops fitting."""
    torch.manual_seed(0)
    block = NonLocalBlock(sizes.block_channels, dim=3, attention_kernel="sdpa").to(sizes.device)
    nn.init.ones_(block.norm.weight)
    rows, reference_fits = [], True
    for frames in sizes.block_frames:
        x = torch.randn(1, sizes.block_channels, frames, sizes.block_side, sizes.block_side, device=sizes.device)
        row = {"N": x[0, 0].numel()}
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            row["flash_s"], row["flash_peak_gib"] = block_step(block, x, sizes)
        if reference_fits:
            try:
                row["reference_s"], row["reference_peak_gib"] = block_step(MaterialisedNonLocal(block), x, sizes)
            except torch.OutOfMemoryError:
                reference_fits, row["reference_s"] = False, "out of memory"
            block.zero_grad(set_to_none=True)
            if sizes.device == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    fitting = [row["N"] for row in rows if isinstance(row.get("reference_s"), float)]
    return {"rows": rows, "reference_fits_up_to_N": max(fitting) if fitting else None,
            "reference_out_of_memory_at_N": next((row["N"] for row in rows if row.get("reference_s") ==
                                                  "out of memory"), None)}


def compiled(sizes: Sizes) -> dict:
    backbone = sizes.video_backbones[0]
    shape = (sizes.clip_batch, 3, sizes.frames, sizes.clip_size, sizes.clip_size)
    eager = Trained(build_backbone(backbone, num_classes=10, block="nonlocal", placement="nl-5", **PAPER_NONLOCAL),
                    sizes.device)
    eager_rate = steps_per_second(eager, shape, sizes)
    net = Trained(build_backbone(backbone, num_classes=10, block="nonlocal", placement="nl-5", **PAPER_NONLOCAL),
                  sizes.device).to(sizes.device)
    net.net.forward = torch.compile(net.net.forward, backend=sizes.compile_backend)
    started = time.perf_counter()
    steps_per_second(net, shape, replace(sizes, warmup=0), steps=1)  # the first step compiles
    compile_seconds = time.perf_counter() - started
    compiled_rate = steps_per_second(net, shape, sizes)
    return {"backbone": backbone, "backend": sizes.compile_backend, "compile_s": compile_seconds,
            "eager_steps_per_s": eager_rate, "compiled_steps_per_s": compiled_rate,
            "speedup": compiled_rate / eager_rate}


def ddp_step(sizes: Sizes) -> dict:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from modules.lightning import MODULES

    net = build_backbone(sizes.se_backbone, num_classes=10, block="se", placement="se-all", reduction=16)
    module = MODULES["se"](net, num_classes=10, optim={"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False,
                                                        "weight_decay": 1e-4, "decay_norm_and_bias": False,
                                                        "schedule": "cosine", "warmup_epochs": 0.0,
                                                        "milestones": [], "gamma": 0.1, "betas": [0.9, 0.999]},
                           channels_last=True)
    steps = min(5, sizes.warmup + sizes.steps)  # it runs; the throughput is section 1's
    data = TensorDataset(torch.randn(sizes.image_batch * steps, 3, sizes.image_size, sizes.image_size),
                         torch.randint(0, 10, (sizes.image_batch * steps,)))
    ends: list[float] = []

    class StepClock(pl.Callback):
        def on_train_batch_end(self, *args):
            synchronize(sizes.device)
            ends.append(time.perf_counter())

    trainer = pl.Trainer(accelerator="gpu" if sizes.device == "cuda" else "cpu", devices=1, strategy="ddp",
                         precision="bf16-mixed", max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[StepClock()])
    started = time.perf_counter()
    trainer.fit(module, DataLoader(data, batch_size=sizes.image_batch))
    seconds = time.perf_counter() - started
    step_seconds = [later - earlier for earlier, later in zip(ends, ends[1:])]  # after the first step
    group = torch.distributed.group.WORLD if torch.distributed.is_initialized() else None
    return {"strategy": type(trainer.strategy).__name__, "world_size": trainer.world_size,
            "backend": torch.distributed.get_backend(group) if group is not None else None,
            "steps": trainer.global_step, "seconds_incl_startup": seconds,
            "step_s": min(step_seconds) if step_seconds else None,
            "loss_finite": bool(torch.isfinite(trainer.callback_metrics["train/loss"]))}


SECTIONS = {"se_resnet": se_resnet, "nonlocal_networks": nonlocal_networks, "nonlocal_block": nonlocal_block,
            "compile": compiled, "ddp": ddp_step}


def machine(sizes: Sizes) -> str:
    if sizes.device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()}, smoke mode, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: checks the code, measures nothing")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else GPU
    if sizes.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke on a CPU-only machine")
        return 1
    print(f"attnlab GPU check on {machine(sizes)}")
    results, failed = {"machine": machine(sizes), "smoke": args.smoke}, False
    for name in args.sections:
        started = time.perf_counter()
        try:
            result = SECTIONS[name](sizes)
        except Exception as error:  # report it, run the other sections
            traceback.print_exc()
            result = {"error": f"{type(error).__name__}: {error}"}
        result_seconds = time.perf_counter() - started
        results[name] = result
        # smoke mode checks that the code runs; its tiny CPU figures judge nothing
        failed |= "error" in result or (not args.smoke and _any_failed(result))
        print(f"\n== {name} ({result_seconds:.0f} s)\n{json.dumps(result, indent=2, default=str)}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2, default=str)
    print(f"\n{'FAIL' if failed else 'PASS'}: {machine(sizes)}")
    return 1 if failed else 0


def _any_failed(result) -> bool:
    if isinstance(result, dict):
        return result.get("passed") is False or any(_any_failed(value) for value in result.values())
    return False


if __name__ == "__main__":
    sys.exit(main())
