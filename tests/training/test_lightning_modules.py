"""The shared LightningModule: optimiser groups, schedules, metrics and multi-clip testing."""

import math

import pytest
import torch
from torch import nn

from modules.blocks import BLOCKS
from modules.lightning import MODULES, AttentionClassifier
from modules.lightning.base import lr_schedule, lr_scheduler, parameter_groups

OPTIM = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "betas": [0.9, 0.999],
         "weight_decay": 1e-4, "decay_norm_and_bias": False, "schedule": "cosine", "warmup_epochs": 1.0,
         "milestones": [2, 4], "gamma": 0.1}


def test_every_block_family_and_the_baseline_has_a_module():
    assert set(MODULES) == set(BLOCKS) | {"none"}
    assert all(MODULES[family].family == family for family in MODULES)


def test_norms_and_biases_get_no_weight_decay():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(2))
    net(torch.randn(1, 3, 5, 5))
    decay, no_decay = parameter_groups(net, 1e-4, decay_norm_and_bias=False)
    assert {p.ndim for p in decay["params"]} == {2, 4} and decay["weight_decay"] == 1e-4
    assert {p.ndim for p in no_decay["params"]} == {1} and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


def test_warmup_then_cosine_and_step_schedules():
    cosine = lr_schedule(OPTIM, total_steps=100, steps_per_epoch=10)
    assert cosine(0) == pytest.approx(0.01) and cosine(5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert cosine(10) == pytest.approx(1.0) and cosine(55) == pytest.approx(0.5)
    assert cosine(100) == pytest.approx(0.0, abs=1e-9)
    step = lr_schedule({**OPTIM, "schedule": "step", "warmup_epochs": 0}, total_steps=100, steps_per_epoch=10)
    assert [step(s) for s in (0, 19, 20, 39, 40, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def handwritten_multiplier(optim, total_steps, steps_per_epoch):
    """The LambdaLR multiplier the project used before torch's schedulers: the reference curve."""
    warmup = int(optim["warmup_epochs"] * steps_per_epoch)
    milestones = [m * steps_per_epoch for m in optim["milestones"]]

    def multiplier(step):
        if step < warmup:
            return 0.01 + 0.99 * step / warmup
        if optim["schedule"] == "cosine":
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if optim["schedule"] == "step":
            return optim["gamma"] ** sum(step >= m for m in milestones)
        return 1.0

    return multiplier


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
@pytest.mark.parametrize("warmup_epochs", [0, 0.5, 1, 2.5, 30])
@pytest.mark.parametrize("milestones", [[2, 4], [0, 3], [1, 1, 6]])
def test_torch_schedulers_reproduce_the_handwritten_curves(schedule, warmup_epochs, milestones):
    optim = {**OPTIM, "schedule": schedule, "warmup_epochs": warmup_epochs, "milestones": milestones, "gamma": 0.3}
    total_steps, steps_per_epoch = 157, 13
    reference = handwritten_multiplier(optim, total_steps, steps_per_epoch)
    # A real optimiser with two parameter groups, stepped as Lightning steps it: once per optimizer step.
    net = nn.Linear(3, 2)
    optimizer = torch.optim.SGD([{"params": [net.weight]}, {"params": [net.bias], "lr": 0.02}], lr=0.1)
    scheduler = lr_scheduler(optimizer, optim, total_steps, steps_per_epoch)
    for step in range(total_steps + 1):
        expected = reference(step)
        assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.1 * expected, 0.02 * expected],
                                                                                  rel=1e-9, abs=1e-15), step
        optimizer.step()
        scheduler.step()


class _Constant(nn.Module):
    """Logits that depend on the input's first value, to check clip averaging."""

    dim = 3

    def forward(self, x):  # (N, C, T, H, W) -> (N, 2)
        first = x.flatten(1)[:, 0]
        return torch.stack([first, -first], dim=1)


def test_multi_clip_test_batch_averages_softmax_over_clips():
    module = AttentionClassifier(_Constant(), num_classes=2, optim=OPTIM)
    x = torch.zeros(2, 3, 1, 1, 1, 1)  # (B=2, K=3, C, T, H, W)
    x[0, :, 0, 0, 0, 0] = torch.tensor([2.0, -1.0, 0.5])
    probabilities = module.predict_probabilities(x)
    expected = torch.stack([torch.tensor([v, -v]).softmax(0) for v in (2.0, -1.0, 0.5)]).mean(0)
    assert probabilities.shape == (2, 2)
    assert torch.allclose(probabilities[0], expected) and torch.allclose(probabilities[1], torch.tensor([0.5, 0.5]))
    assert module.single_clip(x).shape == (2, 1, 1, 1, 1)


@pytest.mark.parametrize("num_classes, has_top5", [(2, False), (4, False), (5, True), (10, True)])
def test_top5_only_with_five_or_more_classes(num_classes, has_top5):
    module = AttentionClassifier(nn.Linear(4, num_classes), num_classes=num_classes, optim=OPTIM)
    assert ("acc_top5" in module.val_metrics.keys(keep_base=True)) == has_top5
    assert module.hparams.num_classes == num_classes and "net" not in module.hparams


def test_accuracy_is_the_share_of_correct_samples():
    module = AttentionClassifier(nn.Linear(4, 3), num_classes=3, optim=OPTIM)
    metric = module.test_metrics["acc"]
    metric.update(torch.tensor([[1.0, 0, 0]] * 3 + [[0, 1.0, 0]]), torch.tensor([0, 0, 0, 2]))
    assert metric.compute().item() == pytest.approx(0.75)  # the class mean would be 0.5
    assert not math.isnan(metric.compute().item())
