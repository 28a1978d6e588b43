"""Non-local networks (Wang et al., CVPR 2018, arXiv:1711.07971): training plus the paper's figure.

Fig. 1/3 of the paper show, for a query position in one frame, where a Non-local block attends
across all frames of the clip. `figures` draws that: one row per query, one column per frame, the
affinity row `attention_map(x, query)` of a block over the (T, H, W) feature grid, upsampled onto the
clip's frames, the query marked with a cross.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modules.blocks import BLOCKS
from modules.lightning.base import AttentionClassifier
from modules.lightning.plotting import capture_inputs, displayable, new_figure, spread


class NonLocalModule(AttentionClassifier):
    family = "nonlocal"
    max_frames = 8  # columns of the figure
    max_blocks = 2  # first and last Non-local block

    def figures(self, batches: list) -> dict:
        blocks = [(name, m) for name, m in self.net.named_modules() if isinstance(m, BLOCKS["nonlocal"])]
        if not blocks or not batches:
            return {}
        clip = self.single_clip(batches[0][0])[:1].to(self.device)  # one clip (1, C, [T,] H, W)
        chosen = spread(blocks, self.max_blocks)
        self.net.eval()
        inputs = capture_inputs(self.net, [m for _, m in chosen], clip)
        figures = {}
        for (name, block), features in zip(chosen, inputs):
            figure = self._attention_figure(name, block, features, clip[0])
            if figure is not None:
                figures[f"nonlocal_attention_{name.replace('.', '_')}.png"] = figure
        return figures

    def _attention_figure(self, name: str, block, features: torch.Tensor, clip: torch.Tensor):
        grid = features.shape[2:] if features.dim() == 5 else (1, *features.shape[2:])  # (T', H', W')
        frames_t, height, width = grid
        middle = frames_t // 2
        # Queries in the middle frame: centre, and two off-centre points (as the paper's examples).
        points = [(height // 2, width // 2), (height // 4, width // 4), (3 * height // 4, 3 * width // 4)]
        queries = [middle * height * width + r * width + c for r, c in points]
        with torch.no_grad():
            affinity = block.attention_map(features, queries)[0].float().cpu()  # (Q, N)
        keys_grid = _key_grid(affinity.shape[-1], frames_t, height, width)
        if keys_grid is None:
            return None
        maps = affinity.view(len(queries), *keys_grid)  # (Q, N) -> (Q, T', H'', W'')

        video = clip if clip.dim() == 4 else clip.unsqueeze(1)  # (C, T, H, W)
        frame_ids = spread(list(range(keys_grid[0])), self.max_frames)
        figure, axes = new_figure(len(queries), len(frame_ids))
        size = video.shape[-2:]
        for q, (row, col) in enumerate(points):
            for j, t in enumerate(frame_ids):
                source_t = min(video.shape[1] - 1, round(t * video.shape[1] / keys_grid[0]))
                heat = F.interpolate(maps[q, t][None, None], size=size, mode="bilinear")[0, 0]  # (H'', W'') -> (H, W)
                axis = axes[q, j]
                axis.imshow(displayable(video[:, source_t]), cmap="gray")
                axis.imshow(heat.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=float(maps[q].max()))
                if t == round(middle * keys_grid[0] / frames_t):
                    axis.plot((col + 0.5) * size[1] / width, (row + 0.5) * size[0] / height, "wx", ms=10, mew=2)
                if q == 0:
                    axis.set_title(f"t={source_t}", fontsize=8)
        figure.suptitle(f"Non-local attention over the clip\nqueries (x) in frame {middle}\n{name}", fontsize=8)
        return figure


def _key_grid(keys: int, frames: int, height: int, width: int) -> tuple[int, int, int] | None:
    """Shape of the key positions: the full grid, or the spatially max-pooled one (sub_sample)."""
    for grid in ((frames, height, width), (frames, (height + 1) // 2, (width + 1) // 2),
                 (frames, height // 2, width // 2)):
        if grid[0] * grid[1] * grid[2] == keys:
            return grid
    return None
