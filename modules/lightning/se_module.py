"""Squeeze-and-Excitation networks (Hu et al., CVPR 2018, arXiv:1709.01507): training plus Fig. 6/7.

The paper's Fig. 6 plots, for SE blocks at several depths, the average excitation of each channel
for images of different classes (and over all classes): early blocks excite the same channels for
every class, late blocks become class-specific. `figures` records the output of every SE block's
`gate` (the per-channel scale, (B, C, 1, 1)) with forward hooks over a few test batches, averages by
class, and draws that figure plus a per-stage summary (mean excitation and its spread across classes).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from modules.blocks import BLOCKS
from modules.lightning.base import AttentionClassifier
from modules.lightning.plotting import new_figure, spread


class SqueezeExciteModule(AttentionClassifier):
    family = "se"
    max_blocks = 4  # panels of the per-channel figure
    max_channels = 64  # the paper shows the first 64 channels
    max_classes = 10

    def excitations(self, batches: list) -> dict[str, torch.Tensor]:
        """{SE block name: (classes, C) mean excitation per class} over `batches`."""
        blocks = [(name, m) for name, m in self.net.named_modules() if isinstance(m, BLOCKS["se"])]
        sums: dict[str, torch.Tensor] = {}
        counts = torch.zeros(self.hparams.num_classes)
        current: dict[str, torch.Tensor] = {}

        def record(name):
            return lambda module, args, output: current.__setitem__(name, output.detach().flatten(1).float().cpu())

        handles = [m.gate.register_forward_hook(record(name)) for name, m in blocks]
        self.net.eval()
        try:
            with torch.no_grad():
                for x, y in batches:
                    x = self.single_clip(x).to(self.device)
                    current.clear()
                    self.net(x)
                    one_hot = torch.nn.functional.one_hot(y.cpu(), self.hparams.num_classes).float()  # (B, classes)
                    counts += one_hot.sum(0)
                    for name, scale in current.items():  # scale (B, C)
                        total = one_hot.T @ scale  # (classes, B) x (B, C) -> (classes, C)
                        sums[name] = sums.get(name, 0) + total
        finally:
            for handle in handles:
                handle.remove()
        return {name: total / counts.clamp_min(1)[:, None] for name, total in sums.items()}

    def figures(self, batches: list) -> dict:
        means = self.excitations(batches)
        if not means:
            return {}
        classes = list(range(min(self.hparams.num_classes, self.max_classes)))
        names = spread(list(means), self.max_blocks)
        figure, axes = new_figure(1, len(names), cell=3.2)
        for axis, name in zip(axes[0], names):
            values = means[name][:, : self.max_channels]  # (classes, C')
            for c in classes:
                axis.plot(values[c].numpy(), lw=0.8, label=self.class_names[c])
            axis.plot(values.mean(0).numpy(), "k--", lw=1.2, label="all")
            axis.set_title(name, fontsize=8)
            axis.set_xlabel("channel index", fontsize=8)
            axis.set_ylim(0, 1.05)
            axis.set_yticks([0, 0.5, 1])
            axis.set_xticks(range(0, values.shape[1] + 1, 16))
        axes[0, 0].set_ylabel("mean excitation", fontsize=8)
        axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        figure.suptitle("SE excitation per channel by class (paper Fig. 6)", fontsize=9)

        by_stage: dict[str, list[torch.Tensor]] = defaultdict(list)
        for name, value in means.items():
            by_stage[_stage_of(name)].append(value)
        summary, axis = new_figure(1, 1, cell=3.6)
        axis = axis[0, 0]
        stages = sorted(by_stage)
        for c in classes:
            axis.plot(range(len(stages)), [torch.cat(by_stage[s], 1)[c].mean().item() for s in stages],
                      marker="o", lw=0.8, label=self.class_names[c])
        axis.set_xticks(range(len(stages)), stages)
        axis.set_yticks([0, 0.25, 0.5, 0.75, 1])
        axis.set_ylabel("mean excitation")
        axis.legend(fontsize=6)
        summary.suptitle("Average excitation per stage, by class (paper Fig. 7 style)", fontsize=9)
        return {"se_excitation_per_channel.png": figure, "se_excitation_per_stage.png": summary}


def _stage_of(block_name: str) -> str:
    """'res3.2.attn' -> 'res3' (stages are named as in the papers)."""
    for part in block_name.split("."):
        if part.startswith("res") or part.startswith("layer") or part.startswith("stage"):
            return part
    return block_name.split(".")[0]
