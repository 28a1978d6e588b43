"""Self-attention as convolution (Cordonnier et al., ICLR 2020, arXiv:1911.03584): training + Fig. 3/4.

Fig. 3 of the paper shows where each head of each layer looks (the centres Δ of the quadratic
encoding, around the query pixel): trained heads spread out into a grid like a k×k convolution.
Fig. 4 shows, for one query pixel, each head's attention probabilities over the image. `figures`
draws both: centres per layer (quadratic encodings only) and per-head probability maps for the
centre query of the first attention layer on a test image.
"""

from __future__ import annotations

import math

from modules.blocks import BLOCKS
from modules.lightning.base import AttentionClassifier
from modules.lightning.plotting import capture_inputs, new_figure, spread


class SelfAttentionModule(AttentionClassifier):
    family = "selfattn"
    max_layers = 6

    def figures(self, batches: list) -> dict:
        layers = [(name, m) for name, m in self.net.named_modules() if isinstance(m, BLOCKS["selfattn"])]
        if not layers:
            return {}
        figures = {}
        centres = self._centres_figure(spread(layers, self.max_layers))
        if centres is not None:
            figures["selfattn_attention_centres.png"] = centres
        if batches:
            figures["selfattn_attention_probabilities.png"] = self._probabilities_figure(layers[0], batches)
        return figures

    def _centres_figure(self, layers):
        readouts = []
        for name, layer in layers:
            try:
                readouts.append((name, layer.attention_centres()))
            except ValueError:  # learned encodings have no centres
                continue
        if not readouts:
            return None
        figure, axes = new_figure(1, len(readouts), cell=2.4)
        for axis, (name, readout) in zip(axes[0], readouts):
            centres = readout["centres"].detach().float().cpu()  # (heads, 2) as (Δrow, Δcol)
            reach = max(2.0, float(centres.abs().max()) + 1)
            axis.axhline(0, color="0.8", lw=0.5)
            axis.axvline(0, color="0.8", lw=0.5)
            axis.scatter(centres[:, 1], centres[:, 0], c=range(len(centres)), cmap="tab10", s=30)
            for head, (row, col) in enumerate(centres.tolist()):
                axis.annotate(str(head), (col, row), fontsize=6, xytext=(2, 2), textcoords="offset points")
            axis.plot(0, 0, "k+", ms=8)
            axis.set_xlim(-reach, reach)
            axis.set_ylim(reach, -reach)  # image convention: rows grow downwards
            axis.set_title(name, fontsize=7)
        figure.suptitle("Attention centres per head around the query pixel (paper Fig. 3)", fontsize=9)
        return figure

    def _probabilities_figure(self, named_layer, batches):
        name, layer = named_layer
        image = self.single_clip(batches[0][0])[:1].to(self.device)  # (1, C, H, W)
        self.net.eval()
        (features,) = capture_inputs(self.net, [layer], image)
        height, width = features.shape[-2:]
        query = [(height // 2, width // 2)]
        probabilities = layer.attention_probabilities(features, query)[0, :, 0].detach().float().cpu()  # (heads, H, W)
        heads = probabilities.shape[0]
        cols = math.ceil(math.sqrt(heads))
        figure, axes = new_figure(math.ceil(heads / cols), cols)
        for head in range(heads):
            axis = axes.flat[head]
            axis.imshow(probabilities[head].numpy(), cmap="viridis")
            axis.plot(query[0][1], query[0][0], "r+", ms=8)
            axis.set_title(f"head {head}", fontsize=7)
        for axis in list(axes.flat)[heads:]:
            axis.axis("off")
        figure.suptitle(f"Attention probabilities of the centre query (+) per head\n(paper Fig. 4) — {name}",
                        fontsize=8)
        return figure
