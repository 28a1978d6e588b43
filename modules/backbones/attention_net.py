"""The pure self-attention network for small images of Cordonnier, Loukas, Jaggi (ICLR 2020, arXiv:1911.03584, §4).

2×2 space-to-depth (invertible downsampling) → per-pixel linear embedding → ``layers`` post-LayerNorm
transformer layers whose attention is ``SelfAttention2d`` (relative encoding over the pixel grid) →
mean pooling over pixels → linear classifier. The paper trains 6 layers, 9 heads, hidden 400,
feed-forward 512 on CIFAR-10 (``attention_net``); ``attention_net_tiny`` (2 layers, 4 heads, hidden 32,
feed-forward 64) trains on CPU in seconds.

Parameter counts for 3 input channels and 10 classes, default block options (the value of each head
is the input itself, D_h = hidden; learned encodings: position_dim 32, window 15; content key size
hidden // heads), checked in tests/modules/test_attention_net.py:

| encoding               | attention_net | attention_net_tiny |
|------------------------|---------------|--------------------|
| quadratic              | 11,124,444    | 17,666             |
| quadratic_generalized  | 11,124,606    | 17,690             |
| learned                | 11,131,962    | 19,882             |
| learned_content        | 13,037,514    | 24,106             |

Paper size, per layer: output projection 9·400·400 + 400 = 1,440,400 (the values are the input
itself, as in the authors' code), feed-forward 410,512, two LayerNorms 1,600; encoding 27
(quadratic), 54 (generalized), 1,280 (learned: 2·31·16 table + 9·32 head vectors), plus 317,592
query/key weights for content; embedding 5,200, classifier 4,010.

Deviations from the paper and the authors' code: no LayerNorm/dropout right after the embedding;
``nn.LayerNorm`` (eps 1e-5) instead of BERT's (1e-12); the score conventions of ``SelfAttention2d``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks.self_attention import SelfAttention2d

PAPER_SIZE = {"layers": 6, "heads": 9, "hidden": 400, "ffn": 512}
TINY_SIZE = {"layers": 2, "heads": 4, "hidden": 32, "ffn": 64}


class AttentionLayer(nn.Module):
    """One post-LayerNorm transformer layer on pixel tokens (BERT's layout, as the authors' code)."""

    def __init__(self, hidden: int, *, heads: int, ffn: int, encoding: str, dropout: float, **attention_kw):
        super().__init__()
        self.attention = SelfAttention2d(hidden, heads=heads, encoding=encoding, **attention_kw)
        self.attention_norm = nn.LayerNorm(hidden)
        self.feed_forward = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.output_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, length, hidden = tokens.shape
        # Through the attention's forward on a (B, C, H, W) map, not its token form `attend`, so
        # forward hooks (the Fig. 3/4 figures capture each layer's input map) see every layer.
        feature_map = tokens.transpose(1, 2).reshape(batch, hidden, height, width)  # (B, N, C) -> (B, C, N) -> (B, C, H, W)
        attended = self.attention(feature_map).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, C, N) -> (B, N, C)
        tokens = self.attention_norm(tokens + self.dropout(attended))  # (B, N, hidden)
        return self.output_norm(tokens + self.dropout(self.feed_forward(tokens)))  # (B, N, hidden)


class AttentionNet(nn.Module):
    """Space-to-depth, embedding, attention layers, mean pooling, classifier (§4).

    Input ``(B, C, H, W)`` with even H and W; output logits ``(B, num_classes)``. Like the ResNet
    backbones it exposes ``dim`` (2), ``stage_depths`` and ``placement`` (empty: it has no residual
    stages to place blocks in — every layer already is a self-attention layer) and ``block_kind``
    ("selfattn"; its ``SelfAttention2d`` layers are found by isinstance like inserted blocks).
    Defaults are the paper's size; ``attention_kw`` go to every ``SelfAttention2d`` (window, ...).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        *,
        encoding: str = "quadratic",
        layers: int = 6,
        heads: int = 9,
        hidden: int = 400,
        ffn: int = 512,
        dropout: float = 0.1,
        **attention_kw,
    ):
        super().__init__()
        self.dim = 2
        self.stage_depths: dict[str, int] = {}
        self.block_kind = "selfattn"
        self.placement: dict[str, list[int]] = {}
        self.in_channels = in_channels
        self.embedding = nn.Linear(4 * in_channels, hidden)
        self.layers = nn.ModuleList(
            AttentionLayer(hidden, heads=heads, ffn=ffn, encoding=encoding, dropout=dropout, **attention_kw)
            for _ in range(layers)
        )
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(
                f"AttentionNet expects (B, {self.in_channels}, H, W) with even H and W (2×2 space-to-depth); "
                f"got shape {tuple(x.shape)}"
            )
        x = F.pixel_unshuffle(x, 2)  # (B, C, H, W) -> (B, 4C, H/2, W/2)
        _, _, height, width = x.shape
        tokens = self.embedding(x.flatten(2).transpose(1, 2))  # (B, 4C, N) -> (B, N, 4C) -> (B, N, hidden)
        for layer in self.layers:
            tokens = layer(tokens, height, width)  # (B, N, hidden)
        return self.classifier(tokens.mean(dim=1))  # (B, N, hidden) -> (B, hidden) -> (B, num_classes)


def attention_net(num_classes: int, in_channels: int = 3, block=None, placement=None, **block_kw) -> AttentionNet:
    """Backbone builder: paper size (6 layers, 9 heads, hidden 400, FFN 512). ``block_kw`` override sizes or
    set attention options (``encoding``, ``window``, ``reduction`` → head_dim = hidden // reduction, ...)."""
    return _build(PAPER_SIZE, num_classes, in_channels, block, placement, block_kw)


def attention_net_tiny(num_classes: int, in_channels: int = 3, block=None, placement=None, **block_kw) -> AttentionNet:
    """Backbone builder: CPU size (2 layers, 4 heads, hidden 32, FFN 64); same options as ``attention_net``."""
    return _build(TINY_SIZE, num_classes, in_channels, block, placement, block_kw)


def _build(size: dict, num_classes: int, in_channels: int, block, placement, block_kw: dict) -> AttentionNet:
    if block not in (None, "selfattn"):
        raise ValueError(f"attention_net is built from self-attention layers: block must be None or 'selfattn', got {block!r}")
    if placement not in (None, {}):
        raise ValueError(
            f"attention_net has no residual stages to place blocks in (stage_depths is empty): placement must be None, "
            f"got {placement!r}"
        )
    return AttentionNet(num_classes, in_channels, **{**size, **block_kw})
