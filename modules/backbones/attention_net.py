"""The pure self-attention network for small images of Cordonnier, Loukas, Jaggi (ICLR 2020, arXiv:1911.03584, §4).

2×2 space-to-depth (invertible downsampling) → per-pixel linear embedding → ``layers`` post-LayerNorm
transformer layers whose attention is ``SelfAttention2d`` (relative encoding over the pixel grid) →
mean pooling over pixels → linear classifier. The paper trains 6 layers, 9 heads, hidden 400,
feed-forward 512 on CIFAR-10 (``attention_net``, Table 1/§4); ``attention_net_tiny`` (2 layers,
4 heads, hidden 32, feed-forward 64) trains on CPU in seconds.

The defaults reproduce the authors' released model (epfml/attention-cnn: ``models/transformer.py``
``BertImage`` with ``pooling_concatenate_size=2``, ``models/bert.py`` ``BertEncoder``; ``runs/*/run.sh``),
weight for weight — tests/modules/test_fidelity_selfattn.py runs an independent transcription of
their forward pass on copied weights:

- space-to-depth concatenates each 2×2 patch as (row offset, column offset, channel), their
  ``downsample_concatenate`` order (``F.pixel_unshuffle`` orders channel first);
- each layer: the attention (values = the input, ``W_out`` = their ``value`` 3600→400, then their
  ``BertSelfOutput.dense`` 400→400: ``output_projection``), dropout 0.1, LayerNorm(x + ·), GELU
  feed-forward, dropout 0.1, LayerNorm(x + ·); LayerNorm ε = 1e-12 (BERT's), attention dropout 0.1;
- ``learned_content``: a full ``hidden``-wide query/key per head, scores scaled by 1/√hidden;
  learned tables of ``hidden`` per axis (``position_dim = 2·hidden``) over shifts −15..15;
- no LayerNorm or dropout after the embedding, no positional encoding added to the input.

Parameter counts for 3 input channels and 10 classes, checked in tests/modules/test_attention_net.py
(the paper's Table 1 rounds them: 12.1M quadratic, 12.3M learned, 29.5M learned + content):

| encoding               | attention_net | attention_net_tiny |
|------------------------|---------------|--------------------|
| quadratic              | 12,086,844    | 19,778             |
| quadratic_generalized  | 12,087,006    | 19,802             |
| learned                | 12,278,682    | 24,234             |
| learned_content        | 29,601,882    | 41,130             |
| learned_content, shared tables | 29,477,882 | 39,146 |

Per layer of the paper size: ``W_out`` 9·400·400 + 400 = 1,440,400, output projection 160,400,
feed-forward 410,512, two LayerNorms 1,600; encoding 27 (quadratic), 54 (generalized), 32,000
(learned: 2·31·400 tables + 9·800 head vectors), plus 2,887,200 query/key weights for content;
embedding 5,200, classifier 4,010. ``share_position_encoding`` keeps one pair of tables for all
layers (the authors' ``share_position_encoding`` option; their loop in ``BertEncoder.__init__`` gives
layer 0 the last layer's tables and keeps the others' own, see docs/fidelity.md).
"""

import torch
from torch import nn

from modules.blocks.self_attention import SelfAttention2d

PAPER_SIZE = {"layers": 6, "heads": 9, "hidden": 400, "ffn": 512}
TINY_SIZE = {"layers": 2, "heads": 4, "hidden": 32, "ffn": 64}
# BertLayerNorm's ε in the authors' code (BERT's TF-style LayerNorm).
AUTHORS_LAYER_NORM_EPS = 1e-12


def authors_attention_options(hidden: int) -> dict:
    """``SelfAttention2d`` options of the authors' layers (``models/bert.py``; BERT's config defaults)."""
    return {"output_projection": True, "attention_dropout": 0.1, "key_dim": hidden}


class AttentionLayer(nn.Module):
    """One post-LayerNorm transformer layer on pixel tokens (BERT's layout, as the authors' code)."""

    def __init__(self, hidden: int, *, heads: int, ffn: int, encoding: str, dropout: float, layer_norm_eps: float,
                 **attention_kw):
        super().__init__()
        self.attention = SelfAttention2d(hidden, heads=heads, encoding=encoding, **attention_kw)
        self.attention_norm = nn.LayerNorm(hidden, eps=layer_norm_eps)
        self.feed_forward = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.output_norm = nn.LayerNorm(hidden, eps=layer_norm_eps)
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
    Defaults are the paper's size and the authors' model (module docstring); ``attention_kw`` go to
    every ``SelfAttention2d`` and override ``authors_attention_options`` (e.g. ``output_projection=False``).
    ``share_position_encoding`` (learned encodings only): one pair of row/column tables for all layers.
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
        layer_norm_eps: float = AUTHORS_LAYER_NORM_EPS,
        share_position_encoding: bool = False,
        **attention_kw,
    ):
        super().__init__()
        if share_position_encoding and not encoding.startswith("learned"):
            raise ValueError(f"share_position_encoding shares the learned tables: it needs encoding 'learned' or "
                             f"'learned_content', got {encoding!r}")
        self.dim = 2
        self.stage_depths: dict[str, int] = {}
        self.block_kind = "selfattn"
        self.placement: dict[str, list[int]] = {}
        self.in_channels = in_channels
        self.embedding = nn.Linear(4 * in_channels, hidden)
        attention_kw = {**authors_attention_options(hidden), **attention_kw}
        self.layers = nn.ModuleList(
            AttentionLayer(hidden, heads=heads, ffn=ffn, encoding=encoding, dropout=dropout,
                           layer_norm_eps=layer_norm_eps, **attention_kw)
            for _ in range(layers)
        )
        if share_position_encoding:
            first = self.layers[0].attention.encoding
            for layer in self.layers[1:]:
                layer.attention.encoding.row_embedding = first.row_embedding
                layer.attention.encoding.col_embedding = first.col_embedding
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(
                f"AttentionNet expects (B, {self.in_channels}, H, W) with even H and W (2×2 space-to-depth); "
                f"got shape {tuple(x.shape)}"
            )
        batch, channels, height, width = x.shape
        patches = x.view(batch, channels, height // 2, 2, width // 2, 2)  # (B, C, H/2, di, W/2, dj)
        # Each 2×2 patch as (di, dj, C), the authors' downsample_concatenate order, so their weights port as they are.
        patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, -1, 4 * channels)  # (B, H/2, W/2, di, dj, C) -> (B, N, 4C)
        tokens = self.embedding(patches)  # (B, N, 4C) -> (B, N, hidden)
        for layer in self.layers:
            tokens = layer(tokens, height // 2, width // 2)  # (B, N, hidden)
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
