"""Multi-head self-attention over the pixels of a 2D feature map, with relative positional encoding.

Cordonnier, Loukas, Jaggi — *On the Relationship between Self-Attention and Convolutional Layers*,
ICLR 2020, arXiv:1911.03584. Theorem 1: a multi-head self-attention layer with N_h heads and a
relative positional encoding can express any √N_h × √N_h convolution; ``from_conv`` builds that layer.

Authors' code: epfml/attention-cnn, ``models/bert.py`` (``GaussianSelfAttention``,
``Learned2DRelativeSelfAttention``, ``BertSelfOutput``); docs/fidelity.md lists where the defaults here
follow it and where they do not.

Shapes: input ``(B, C, H, W)``; pixels are flattened row-major into ``N = H·W`` query tokens; keys are
the same pixels, plus ``padding`` rings of zero-valued pixels when set (``N_k = (H+2p)(W+2p)``); shifts
``δ = k − q`` are ``(Δrow, Δcol)`` in pixels.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks.relative_encoding import (
    GeneralizedQuadraticEncoding,
    LearnedEncoding,
    QuadraticEncoding,
    window_mask,
)

ENCODINGS = ("quadratic", "quadratic_generalized", "learned", "learned_content")
QUADRATIC_ENCODINGS = ("quadratic", "quadratic_generalized")
# Shifts covered by the learned tables when no window is given: every shift of a 16×16 map, the
# size the paper's network sees on CIFAR-10 after its 2×2 space-to-depth.
DEFAULT_LEARNED_WINDOW = 15
# α used by from_conv. A key one pixel from the head's centre gets weight ≈ 4·e^-α relative to the
# centre (four such neighbours), 4·e^-40 ≈ 2e-17: far below float32 resolution on interior pixels.
FROM_CONV_SHARPNESS = 40.0


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over pixels with a relative positional encoding (§2–§4).

    ``out = concat_h[softmax(A_h) X W_val^h] W_out + b_out`` (multi-head self-attention, §2.1),
    followed by ``W_proj`` when ``output_projection`` is set, with the score ``A_h[q, k]`` depending on
    ``δ = k − q`` through ``encoding``:

    - ``quadratic``: ``−α_h‖δ − Δ_h‖²`` (§3, eq. (9)); ``quadratic_generalized``: full Σ⁻¹ per head;
    - ``learned``: ``r_δᵀ u_h`` with half-row, half-column relative embeddings (§4), no content;
    - ``learned_content``: ``q_qᵀ k_k / √d_k + r_δᵀ u_h`` (content plus learned position).

    Args:
        channels: input channels C (first positional, the block contract).
        dim: must be 2 — this family is 2D only.
        heads: N_h. With ``quadratic`` and N_h = K², the layer can be a K×K convolution.
        encoding: one of ``ENCODINGS``.
        reduction: the shared keyword of the block families; here it sets the value size of each
            head, ``head_dim = channels // reduction``. Default (None) means 1: ``head_dim = C`` and
            the values are the input itself (``W_val = I``, no parameters, as in the authors' code
            for the quadratic and learned encodings); ``W_out`` (``N_h·C → C_out``, as many weights as a
            √N_h×√N_h convolution) then carries each head's filter — Lemma 1 only needs the product
            ``W_val^h W_out^h`` to be the kernel slice of the head's shift.
        head_dim: D_h, alternative to ``reduction`` (give one, not both). Any D_h ≠ C adds a learned
            value projection ``C → N_h·D_h``.
        out_channels: C_out, default C (same-shape block).
        key_dim: query/key size per head for ``learned_content``, scores scaled by 1/√key_dim. Default
            ``C // N_h`` (the standard multi-head split: 1/N_h of the weights when the layer replaces
            convs in a ResNet); the authors use ``C`` per head (``AttentionNet``'s default).
        position_dim: D_p of the learned embeddings (half rows, half columns). Default ``2·C``: the
            authors' ``position_encoding_size=-1``, a table of ``hidden_size`` per axis.
        window: if set, keys with ``|Δrow| > window`` or ``|Δcol| > window`` are masked (local
            attention for large maps). The learned encodings always have a window (their tables
            are finite): default ``DEFAULT_LEARNED_WINDOW``; farther keys are masked, not clipped.
        attention_dropout: dropout on the attention probabilities (authors: 0.1, BERT's
            ``attention_probs_dropout_prob``; default 0 here, like the convolution the layer replaces).
        output_projection: a further ``C_out → C_out`` linear map after ``W_out`` — the authors'
            ``BertSelfOutput.dense``, 160,400 weights per layer of their network (``AttentionNet`` turns
            it on). Default off: it composes with ``W_out`` into one linear map, adding no expressivity.
        padding: keys include ``padding`` rings of zero-valued pixels around the map, like a
            convolution's zero padding (``from_conv`` sets K//2, which makes the layer equal to the
            convolution at every pixel). The positional scores see them as ordinary shifts, and they go
            through the value (and key) projections like any pixel: with ``W_val = I`` (``from_conv``)
            their values are 0.

    Deviations from the paper: the quadratic score drops the per-head constant α‖Δ‖² (softmax
    removes it); the content term uses its own query/key projections of size ``key_dim`` and no
    content-position cross terms of the relative attention score (§2.2); learned shifts beyond the
    window are masked.
    """

    def __init__(
        self,
        channels: int,
        *,
        dim: int = 2,
        heads: int = 9,
        encoding: str = "quadratic",
        reduction: int | None = None,
        head_dim: int | None = None,
        out_channels: int | None = None,
        key_dim: int | None = None,
        position_dim: int | None = None,
        window: int | None = None,
        attention_dropout: float = 0.0,
        output_projection: bool = False,
        padding: int = 0,
    ):
        super().__init__()
        if dim != 2:
            raise ValueError(f"SelfAttention2d works on 2D maps only: dim must be 2, got {dim}")
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown self-attention encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        if window is not None and window < 1:
            raise ValueError(f"window must be None or an integer >= 1, got {window}")
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"padding must be an integer >= 0 (rings of zero-valued key pixels), got {padding!r}")
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must be in [0, 1), got {attention_dropout}")
        self.channels = channels
        self.out_channels = out_channels or channels
        self.heads = heads
        self.encoding_name = encoding
        self.head_dim = _head_dim(channels, reduction, head_dim)
        self.content = encoding == "learned_content"
        self.attention_dropout = attention_dropout
        self.padding = padding

        if encoding == "quadratic":
            self.encoding = QuadraticEncoding(heads)
            self.window = window
        elif encoding == "quadratic_generalized":
            self.encoding = GeneralizedQuadraticEncoding(heads)
            self.window = window
        else:
            self.window = window or DEFAULT_LEARNED_WINDOW
            self.encoding = LearnedEncoding(heads, position_dim or 2 * channels, self.window)

        # W_val = I when D_h = C (the authors' code; enough for Lemma 1); otherwise a learned projection.
        self.value = None if self.head_dim == channels else nn.Linear(channels, heads * self.head_dim)
        if self.content:
            self.key_dim = key_dim or max(1, channels // heads)
            self.query = nn.Linear(channels, heads * self.key_dim)
            self.key = nn.Linear(channels, heads * self.key_dim)
        self.output = nn.Linear(heads * self.head_dim, self.out_channels)
        self.projection = nn.Linear(self.out_channels, self.out_channels) if output_projection else None

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, out_channels={self.out_channels}, heads={self.heads}, "
            f"encoding={self.encoding_name!r}, head_dim={self.head_dim}, window={self.window}, padding={self.padding}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = self._check_input(x)
        tokens = x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, C, N) -> (B, N, C)
        out = self.attend(tokens, height, width)  # (B, N, C_out)
        return out.transpose(1, 2).reshape(batch, self.out_channels, height, width)  # (B, C_out, N) -> (B, C_out, H, W)

    def attend(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Token form of ``forward``: ``(B, N, C) -> (B, N, C_out)`` with ``N = height·width``."""
        batch, length, _ = tokens.shape
        key_tokens = self._key_tokens(tokens, height, width)  # (B, N_k, C)
        positional = self.positional_scores(height, width)  # (heads, N, N_k)
        dropout = self.attention_dropout if self.training else 0.0
        if self.content:
            values = self._values(key_tokens)  # (B, heads, N_k, D_h)
            queries, keys = self._project(self.query, tokens), self._project(self.key, key_tokens)  # (B, heads, N, d_k), (B, heads, N_k, d_k)
            # The positional scores enter as SDPA's additive float mask (-inf outside the window);
            # the mask must share the queries' dtype (bf16 under autocast).
            mixed = F.scaled_dot_product_attention(
                queries, keys, values, attn_mask=positional.to(queries.dtype), dropout_p=dropout
            )  # softmax((B, heads, N, d_k) x (B, heads, d_k, N_k) + (heads, N, N_k)) x (B, heads, N_k, D_h) -> (B, heads, N, D_h)
        else:
            # Positional-only attention does not depend on the input: one (heads, N, N_k) map for the
            # batch, and one dropout mask for it (as the authors' code, whose probabilities have no batch axis).
            probabilities = F.dropout(positional.softmax(dim=-1), dropout, self.training)  # (heads, N, N_k)
            if self.value is None:
                return self._project_output(self._mix_identity_values(probabilities, key_tokens))
            mixed = probabilities @ self._values(key_tokens)  # (heads, N, N_k) x (B, heads, N_k, D_h) -> (B, heads, N, D_h)
        merged = mixed.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim)  # (B, N, heads, D_h) -> (B, N, heads·D_h)
        return self._project_output(self.output(merged))  # (B, N, heads·D_h) -> (B, N, C_out)

    def _project_output(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.projection is None else self.projection(out)  # (B, N, C_out)

    def _key_tokens(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The key/value pixels: the tokens, or the map with ``padding`` rings of zeros, ``(B, N_k, C)``."""
        if not self.padding:
            return tokens
        batch, _, channels = tokens.shape
        grid = tokens.view(batch, height, width, channels)  # (B, N, C) -> (B, H, W, C)
        padded = F.pad(grid, (0, 0, self.padding, self.padding, self.padding, self.padding))  # -> (B, H+2p, W+2p, C)
        return padded.reshape(batch, -1, channels)  # (B, N_k, C)

    def _mix_identity_values(self, probabilities: torch.Tensor, key_tokens: torch.Tensor) -> torch.Tensor:
        """``Σ_h P_h X W_out^h + b_out`` one head at a time (W_val = I), ``(heads, N, N_k), (B, N_k, C) -> (B, N, C_out)``.

        Same result as concatenating the heads, but folding ``W_out^h`` into each head before
        attending never materialises ``(B, heads, N, C)`` value copies: in benchmarks/bench_selfattn.py
        the step's peak memory drops from ~135 to ~49 MiB, with no more FLOPs when ``C_out <= C``.
        """
        batch, keys, _ = key_tokens.shape
        length = probabilities.shape[1]
        by_pixel = key_tokens.transpose(0, 1).contiguous()  # (B, N_k, C) -> (N_k, B, C)
        out = None
        for head in range(self.heads):
            columns = slice(head * self.channels, (head + 1) * self.channels)
            projected = F.linear(by_pixel, self.output.weight[:, columns])  # (N_k, B, C) x (C, C_out) -> (N_k, B, C_out)
            mixed = probabilities[head] @ projected.reshape(keys, batch * self.out_channels)  # (N, N_k) x (N_k, B·C_out) -> (N, B·C_out)
            out = mixed if out is None else out + mixed
        out = out.view(length, batch, self.out_channels).transpose(0, 1)  # (N, B·C_out) -> (N, B, C_out) -> (B, N, C_out)
        return out + self.output.bias  # (B, N, C_out)

    def positional_scores(self, height: int, width: int) -> torch.Tensor:
        """Positional attention scores ``(heads, N, N_k)`` (query rows, key columns), ``-inf`` outside the window."""
        scores = self.encoding.scores(height, width, self.padding)  # (heads, N, N_k)
        outside = window_mask(height, width, self.window, scores.device, self.padding)  # (N, N_k) or None
        return scores if outside is None else scores.masked_fill(outside, float("-inf"))

    def attention_probabilities(self, x: torch.Tensor, query_positions) -> torch.Tensor:
        """Attention of chosen query pixels over the keys, ``(B, heads, Q, H_k, W_k)``, ready to plot (Fig. 3/4).

        The key grid is the map (``H_k, W_k = H, W``), or the map with its ``padding`` rings
        (``H + 2p, W + 2p``; the map's pixel (r, c) at (r + p, c + p)).
        ``query_positions``: ``(row, col)`` pairs (a sequence or a ``(Q, 2)`` tensor) or flat
        row-major indices (a sequence or ``(Q,)`` tensor). No dropout is applied.
        """
        batch, _, height, width = self._check_input(x)
        index = _query_indices(query_positions, height, width).to(x.device)  # (Q,)
        positional = self.positional_scores(height, width).to(x.dtype)[:, index]  # (heads, Q, N_k)
        if self.content:
            tokens = x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, N, C)
            queries = self._project(self.query, tokens)[:, :, index]  # (B, heads, Q, d_k)
            keys = self._project(self.key, self._key_tokens(tokens, height, width))  # (B, heads, N_k, d_k)
            content = queries @ keys.transpose(-1, -2) / math.sqrt(self.key_dim)  # (B, heads, Q, d_k) x (B, heads, d_k, N_k) -> (B, heads, Q, N_k)
            scores = content + positional  # (B, heads, Q, N_k) + (heads, Q, N_k)
        else:
            scores = positional.expand(batch, -1, -1, -1)  # (heads, Q, N_k) -> (B, heads, Q, N_k)
        probabilities = scores.softmax(dim=-1)  # (B, heads, Q, N_k)
        grid = (height + 2 * self.padding, width + 2 * self.padding)
        return probabilities.reshape(batch, self.heads, len(index), *grid)  # (B, heads, Q, N_k) -> (B, heads, Q, H_k, W_k)

    def attention_centres(self) -> dict[str, torch.Tensor]:
        """Where each quadratic head looks: ``centres`` (heads, 2) as (Δrow, Δcol) in pixels, plus
        ``sharpness`` α and ``spread`` 1/√α (heads,) for ``quadratic``, or ``precision`` Σ⁻¹
        (heads, 2, 2) for ``quadratic_generalized``."""
        if self.encoding_name not in QUADRATIC_ENCODINGS:
            raise ValueError(
                f"attention centres exist for the encodings {', '.join(QUADRATIC_ENCODINGS)}; this layer uses "
                f"{self.encoding_name!r} (use attention_probabilities instead)"
            )
        return self.encoding.readout()

    def _check_input(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"SelfAttention2d({self.channels}) expects input (B, {self.channels}, H, W); got shape {tuple(x.shape)}"
            )
        return tuple(x.shape)

    def _values(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, _ = tokens.shape
        if self.value is None:
            return tokens.unsqueeze(1).expand(batch, self.heads, length, self.channels)  # (B, N, C) -> (B, heads, N, C), no copy
        projected = self.value(tokens)  # (B, N, C) -> (B, N, heads·D_h)
        return projected.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, N, heads, D_h) -> (B, heads, N, D_h)

    def _project(self, linear: nn.Linear, tokens: torch.Tensor) -> torch.Tensor:
        """Queries or keys per head: ``(B, L, C) -> (B, heads, L, d_k)``."""
        batch, length, _ = tokens.shape
        return linear(tokens).view(batch, length, self.heads, self.key_dim).transpose(1, 2)  # (B, L, heads·d_k) -> (B, L, heads, d_k) -> (B, heads, L, d_k)


def from_conv(conv: nn.Conv2d, *, sharpness: float = FROM_CONV_SHARPNESS) -> SelfAttention2d:
    """The self-attention layer equal to ``conv`` at every pixel (Theorem 1, Lemmas 1–2).

    ``conv`` must be a K×K convolution (K odd), stride 1, dilation 1, one group, zero padding K//2.
    The layer has N_h = K² ``quadratic`` heads; the head for kernel tap (i, j) has centre
    ``Δ = (i − K//2, j − K//2)`` and sharpness α = ``sharpness`` (Lemma 2: the quadratic encoding
    with large α is hard attention on the pixel at shift Δ); values are the input (``W_val = I``) and
    the output projection's block for that head is the tap's weight ``conv.weight[:, :, i, j]``, so
    ``W_val^h W_out^h`` is the kernel slice Lemma 1 asks for; ``b_out`` is the conv's bias.

    Borders: the layer has ``padding = K//2`` — its keys include the conv's zero padding as
    zero-valued pixels — so every head finds a key exactly at its centre, at the border as inside,
    and reads the 0 the convolution reads there. The output equals the convolution at every pixel
    up to ≈ 4·e^-α relative (the weight leaking to the four nearest keys; 2e-17 with the default
    α = 40) plus float rounding: tests/modules/test_from_conv.py holds 1e-5 relative in float64.
    (The paper's Lemma 1 assumes an infinite or circular map; without the padded keys a border
    head would spread over the nearest existing pixels instead.)
    """
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"from_conv expects an nn.Conv2d, got {type(conv).__name__}")
    size = conv.kernel_size[0]
    padding = conv.padding if conv.padding != "same" else (size // 2, size // 2)
    problems = [
        f"{name} is {value}, must be {allowed}"
        for name, value, allowed, ok in [
            ("kernel_size", conv.kernel_size, "square and odd", conv.kernel_size[0] == conv.kernel_size[1] and size % 2 == 1),
            ("stride", conv.stride, "(1, 1)", tuple(conv.stride) == (1, 1)),
            ("dilation", conv.dilation, "(1, 1)", tuple(conv.dilation) == (1, 1)),
            ("groups", conv.groups, "1", conv.groups == 1),
            ("padding", conv.padding, f"({size // 2}, {size // 2})", tuple(padding) == (size // 2, size // 2)),
            ("padding_mode", conv.padding_mode, "'zeros'", conv.padding_mode == "zeros"),
        ]
        if not ok
    ]
    if problems:
        raise ValueError("from_conv cannot express this convolution: " + "; ".join(problems))

    in_channels, out_channels, radius = conv.in_channels, conv.out_channels, size // 2
    layer = SelfAttention2d(
        in_channels, heads=size * size, encoding="quadratic", head_dim=in_channels, out_channels=out_channels,
        padding=radius,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    taps = [(i - radius, j - radius) for i in range(size) for j in range(size)]  # head h = i·K + j
    with torch.no_grad():
        layer.encoding.centres.copy_(torch.tensor(taps, dtype=conv.weight.dtype))
        layer.encoding.log_sharpness.fill_(math.log(sharpness))
        # Head h owns input columns h·C_in..(h+1)·C_in of W_out, matching the (heads, D_h) merge order.
        weight = conv.weight.permute(0, 2, 3, 1).reshape(out_channels, size * size * in_channels)  # (C_out, C_in, K, K) -> (C_out, K, K, C_in) -> (C_out, K²·C_in)
        layer.output.weight.copy_(weight)
        layer.output.bias.copy_(conv.bias if conv.bias is not None else torch.zeros(out_channels))
    return layer


def _head_dim(channels: int, reduction: int | None, head_dim: int | None) -> int:
    if reduction is not None and head_dim is not None:
        raise ValueError(f"give head_dim or reduction, not both (got head_dim={head_dim}, reduction={reduction})")
    if head_dim is None:
        reduction = reduction or 1
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"reduction must be in 1..{channels} for {channels} channels, got {reduction}")
        head_dim = channels // reduction
    if head_dim < 1:
        raise ValueError(f"head_dim must be >= 1, got {head_dim}")
    return head_dim


def _query_indices(query_positions, height: int, width: int) -> torch.Tensor:
    positions = torch.as_tensor(
        query_positions if not isinstance(query_positions, Sequence) else list(query_positions), dtype=torch.long
    )
    if positions.ndim == 2 and positions.shape[1] == 2:
        rows, cols = positions.unbind(dim=1)  # (Q, 2) -> (Q,), (Q,)
        if ((rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)).any():
            raise ValueError(f"query positions must lie in rows 0..{height - 1}, columns 0..{width - 1}; got {positions.tolist()}")
        return rows * width + cols  # (Q,) row-major flat indices
    if positions.ndim == 1:
        if ((positions < 0) | (positions >= height * width)).any():
            raise ValueError(f"flat query indices must lie in 0..{height * width - 1}; got {positions.tolist()}")
        return positions
    raise ValueError(f"query_positions must be (row, col) pairs (Q, 2) or flat indices (Q,); got shape {tuple(positions.shape)}")
