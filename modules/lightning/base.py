"""The LightningModule shared by every block family: steps, metrics, optimiser and schedule.

It receives a built network (thin modules, injected nets); the family subclasses add only
what their paper shows as figures (`figures(batches) -> {artifact file name: matplotlib Figure}`).

Batch contract (`datamodules.batch.Batch`, a NamedTuple): `(x, y)`, x float `(B, C, H, W)` or
`(B, C, T, H, W)`, y int64 `(B,)`.
Video test batches carry all K clips of each video, x `(B, K, C, T, H, W)`: the video's prediction is
the average of the K clips' softmax (the Non-local paper's multi-clip testing), so `test/acc` is
video-level accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

if TYPE_CHECKING:
    from datamodules.batch import Batch


class AttentionClassifier(pl.LightningModule):
    """Classifier over an injected network; `family` names the block family it was built with."""

    family = "none"

    def __init__(self, net: nn.Module, *, num_classes: int, optim: dict[str, Any],
                 class_names: list[str] | None = None, channels_last: bool = False,
                 compile: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.input_dims = 5 if getattr(net, "dim", 2) == 3 else 4  # (B,C,[T,]H,W)
        self.memory_format = None
        if channels_last:
            self.memory_format = torch.channels_last_3d if self.input_dims == 5 else torch.channels_last
            self.net.to(memory_format=self.memory_format)
        # A function, not a Module attribute: the net must not appear twice in the state dict.
        self._forward = torch.compile(self.net.forward) if compile else self.net.forward

        # average="micro": the share of correct samples (torchmetrics' default is the class mean).
        metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
        if num_classes >= 5:
            metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        metrics = MetricCollection(metrics)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.test_per_class = MulticlassAccuracy(num_classes, average=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        return self._forward(x)

    def single_clip(self, x: torch.Tensor) -> torch.Tensor:
        """First clip of a multi-clip test batch (B, K, ...) -> (B, ...); other batches unchanged."""
        return x[:, 0] if x.dim() == self.input_dims + 1 else x

    def predict_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities; multi-clip (B, K, ...) batches average the K clips' softmax."""
        if x.dim() == self.input_dims + 1:
            batch, clips = x.shape[:2]
            logits = self(x.flatten(0, 1))  # (B*K, ...) -> (B*K, classes)
            return logits.softmax(-1).view(batch, clips, -1).mean(1)  # (B, K, classes) -> (B, classes)
        return self(x).softmax(-1)

    # ---- steps ----------------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_metrics.update(logits.detach(), y)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: Batch, metrics: MetricCollection, stage: str) -> torch.Tensor:
        x, y = batch
        probabilities = self.predict_probabilities(x)
        loss = F.nll_loss(probabilities.clamp_min(1e-12).log(), y)
        metrics.update(probabilities, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return probabilities

    def validation_step(self, batch: Batch, batch_idx: int):
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: Batch, batch_idx: int):
        probabilities = self._evaluate(batch, self.test_metrics, "test")
        self.test_per_class.update(probabilities, batch[1])

    def on_test_epoch_end(self) -> None:
        per_class = self.test_per_class.compute()  # synced across ranks by torchmetrics
        for name, value in zip(self.class_names, per_class.tolist()):
            self.log(f"test/acc_class/{_metric_safe(name)}", value, rank_zero_only=True)
        self.test_per_class.reset()

    # ---- optimisation ---------------------------------------------------------------------------

    def configure_optimizers(self):
        optim = self.hparams.optim
        groups = parameter_groups(self.net, optim["weight_decay"], optim["decay_norm_and_bias"])
        if optim["name"] == "sgd":
            optimizer = torch.optim.SGD(groups, lr=optim["lr"], momentum=optim["momentum"],
                                        nesterov=optim["nesterov"])
        else:
            optimizer = torch.optim.AdamW(groups, lr=optim["lr"], betas=tuple(optim["betas"]))
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        steps_per_epoch = max(1, total_steps // epochs)
        scheduler = lr_scheduler(optimizer, optim, total_steps, steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- figures --------------------------------------------------------------------------------

    def figures(self, batches: list[Batch]) -> dict[str, Any]:
        """The family's paper figures from a few test batches; the baseline has none."""
        return {}


def parameter_groups(net: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """Weight decay on conv/linear weights only: norms' scales and all biases (ndim <= 1) get none unless
    `decay_norm_and_bias`, nor do the parameters a module lists in `no_weight_decay_parameters()` (the
    self-attention head centres and spreads, as in Cordonnier et al.'s train.py)."""
    exempt = {id(parameter) for module in net.modules() if hasattr(module, "no_weight_decay_parameters")
              for parameter in module.no_weight_decay_parameters()}
    decay, no_decay = [], []
    for parameter in net.parameters():
        if not parameter.requires_grad:
            continue
        skip = id(parameter) in exempt or (parameter.ndim <= 1 and not decay_norm_and_bias)
        (no_decay if skip else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_scheduler(optimizer: torch.optim.Optimizer, optim: dict[str, Any], total_steps: int,
                 steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """torch's schedulers, stepped once per optimizer step: a linear warm-up from lr/100 over
    `warmup_epochs` (LinearLR), then cosine to 0 at `total_steps` (CosineAnnealingLR), ×gamma at each
    milestone epoch (MultiStepLR; milestones count from the start of training) or constant (ConstantLR),
    chained by SequentialLR."""
    from torch.optim import lr_scheduler as schedulers

    warmup = int(optim["warmup_epochs"] * steps_per_epoch)
    if optim["schedule"] == "cosine":
        main = schedulers.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup))
    elif optim["schedule"] == "step":
        # SequentialLR restarts the step count at the end of warm-up; earlier milestones count at once.
        main = schedulers.MultiStepLR(optimizer, milestones=[m * steps_per_epoch - warmup for m in optim["milestones"]],
                                      gamma=optim["gamma"])
    else:
        main = schedulers.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    warm_up = schedulers.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    return schedulers.SequentialLR(optimizer, [warm_up, main], milestones=[warmup])


def lr_schedule(optim: dict[str, Any], total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of the base lr at each optimizer step 0..total_steps, read off `lr_scheduler`
    (for plots and tests); later steps keep the last value."""
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = lr_scheduler(probe, optim, total_steps, steps_per_epoch)
    multipliers = []
    for _ in range(total_steps + 1):
        multipliers.append(probe.param_groups[0]["lr"])
        probe.step()  # no gradients: nothing moves, but torch sees the optimizer step it expects first
        scheduler.step()
    return lambda step: multipliers[min(step, total_steps)]


def _metric_safe(name: str) -> str:
    # MLflow metric names allow alphanumerics, _ - . space / only.
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in str(name))
