"""Fine-tuning controls over a network whose starting weights were loaded (loading.py's report says which).

- ``freeze``: the pretrained parameters of the stem and of every stage up to the named one stop
  training (``requires_grad=False``), and the BatchNorm layers there keep the source's statistics
  (mmaction2's ``frozen_stages``; Detectron's frozen stem). Inserted blocks and the re-initialised head
  inside those stages still train: they are new.
- ``frozen_bn``: every pretrained BatchNorm keeps the source's running statistics (eval mode during
  training) and its γ/β — torchvision.ops.FrozenBatchNorm2d's behaviour. The Non-local authors'
  128-frame models are fine-tuned this way (facebookresearch/video-nonlocal-net README, "freeze bn?
  Yes": the BatchNorm layers of the 32-frame model are converted to fixed affine layers,
  process_data/convert_models/modify_caffe2_ftvideo.py). The BatchNorm inside an inserted Non-local
  block is new and keeps training, else the block would stay the identity (its γ starts at 0).
- ``new_lr_multiplier``: parameters that did not come from the source (blocks, head, ``from_conv``
  attention) learn at ``lr × multiplier``, the pretrained ones at ``lr`` (Caffe's ``lr_mult``).

No weight decay on norms and biases is ``optim.decay_norm_and_bias: false`` (the default).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from modules.pretrained.report import PRETRAINED, LoadingReport

STEM = ("conv1", "bn1")
FREEZE_POINTS = ("stem", "res2", "res3", "res4", "res5")


@dataclass
class FineTuning:
    """What the LightningModule needs: per-parameter lr multipliers and the norms to keep in eval mode."""

    lr_multipliers: dict[str, float] = field(default_factory=dict)
    frozen_norms: list[nn.Module] = field(default_factory=list)
    frozen_parameters: list[str] = field(default_factory=list)


def fine_tuning(net: nn.Module, report: LoadingReport, *, freeze: str | None = None, frozen_bn: bool = False,
                new_lr_multiplier: float = 1.0) -> FineTuning:
    """Apply `freeze` / `frozen_bn` to `net` (requires_grad) and return the controls for training."""
    pretrained = set(report.keys(*PRETRAINED))
    prefixes = frozen_prefixes(net, freeze)
    result = FineTuning()
    for name, parameter in net.named_parameters():
        if name not in pretrained:
            if new_lr_multiplier != 1.0:
                result.lr_multipliers[name] = new_lr_multiplier
            continue
        norm_parameter = isinstance(net.get_submodule(name.rpartition(".")[0]), _BatchNorm)
        if name.startswith(prefixes) or (frozen_bn and norm_parameter):
            parameter.requires_grad_(False)
            result.frozen_parameters.append(name)
    for name, module in net.named_modules():
        if isinstance(module, _BatchNorm) and f"{name}.running_mean" in pretrained and (
                frozen_bn or f"{name}.".startswith(prefixes)):
            result.frozen_norms.append(module)
    return result


def frozen_prefixes(net: nn.Module, freeze: str | None) -> tuple[str, ...]:
    """Name prefixes of the stem and the stages up to `freeze` (``()`` for None)."""
    if freeze is None:
        return ()
    if freeze not in FREEZE_POINTS:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_POINTS)} or null, got {freeze!r}")
    stages = list(getattr(net, "stage_depths", {}) or {})
    if not stages or not all(isinstance(getattr(net, name, None), nn.Module) for name in STEM):
        raise ValueError(f"freeze: {freeze!r} needs a ResNet backbone (a stem and stages res2..res5); "
                         f"this network has none")
    upto = FREEZE_POINTS.index(freeze)
    return tuple(f"{name}." for name in (*STEM, *FREEZE_POINTS[1:upto + 1]))
