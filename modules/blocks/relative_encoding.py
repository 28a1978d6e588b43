"""Relative positional attention scores for 2D self-attention.

Cordonnier, Loukas, Jaggi — *On the Relationship between Self-Attention and Convolutional Layers*,
ICLR 2020, arXiv:1911.03584. Authors' code: epfml/attention-cnn, ``models/bert.py``
(``GaussianSelfAttention``, ``Learned2DRelativeSelfAttention``).

Each module here turns a query grid ``(H, W)`` into positional attention scores ``(heads, N, N_k)``
(``N = H·W`` query rows, ``N_k`` key columns) that depend only on the shift ``δ = k − q`` between key
and query pixels, written ``(Δrow, Δcol)``. The key grid is the query grid, or that grid with
``padding`` extra rows/columns on each side (zero-valued key pixels, ``SelfAttention2d(padding=...)``):
keys at rows ``−p..H+p−1`` and columns ``−p..W+p−1``, ``N_k = (H+2p)(W+2p)``.

- ``QuadraticEncoding`` (§3, eq. (9)): per head a centre Δ and a sharpness α > 0;
  score ``−α‖δ − Δ‖²``. The paper writes ``−α(‖δ − Δ‖² − ‖Δ‖²)``; the two differ by a constant per
  head, which the softmax over keys removes, and the form used here keeps the largest score at 0,
  so a very sharp head (``from_conv``) cannot overflow.
- ``GeneralizedQuadraticEncoding`` (§4, the non-isotropic variant of the quadratic encoding):
  score ``−(δ − Δ)ᵀ Σ⁻¹ (δ − Δ)`` with ``Σ⁻¹ = L Lᵀ`` (L a free 2×2 factor per head), so Σ⁻¹ stays
  positive semi-definite without constraints.
- ``LearnedEncoding`` (§4, "learned embedding"): a table of row-shift embeddings and one of
  column-shift embeddings, each ``position_dim / 2`` wide, concatenated into ``r_δ``; score ``r_δᵀ u_h``
  with one learned vector ``u_h`` per head (the position-only ``vᵀ Ŵ_key r_δ`` term of the relative
  attention score, §2.2).

Initialisation follows the authors' code (config ``gaussian_init_mu_std=2``, ``gaussian_init_sigma_std=0.01``;
``nn.Embedding``/``nn.Linear`` defaults for the learned tables and head keys, since their ``BertImage``
never applies BERT's 0.02 initialiser). The authors parametrise a head by its inverse standard
deviation s (``attention_spreads``, 1 + N(0, 0.01²)) and score ``−½ s²‖δ − Δ‖²``: α = s²/2 ≈ 0.5,
a Gaussian of σ = 1/s ≈ 1 px.

Window: with ``window = w`` every shift with ``|Δrow| > w`` or ``|Δcol| > w`` scores ``-inf`` (the key is
masked). The learned tables hold exactly the shifts ``-w..w`` per axis, so they are never clipped:
keys outside the table are masked instead (a deviation from Shaw et al.'s clipping, chosen so that
the layer is exactly translation-equivariant on interior pixels; the authors' tables cover every
shift of their 16×16 maps, ``max_position_embeddings=16`` = window 15, so nothing is masked there).
"""

import math

import torch
from torch import nn

# The authors' initialisation (train.py config): centres Δ ~ N(0, 2²), inverse spreads s ~ 1 + N(0, 0.01²).
CENTRE_INIT_STD = 2.0
SPREAD_INIT_STD = 0.01


def axis_shifts(length: int, device=None, padding: int = 0) -> torch.Tensor:
    """Shifts ``key − query`` along one axis, ``(L, L + 2p)`` (query rows, key columns; keys at −p..L+p−1)."""
    queries = torch.arange(length, device=device)
    keys = torch.arange(-padding, length + padding, device=device)
    return keys[None, :] - queries[:, None]  # (1, L+2p) - (L, 1) -> (L, L+2p)


def combine_axes(row_part: torch.Tensor, col_part: torch.Tensor) -> torch.Tensor:
    """Scores separable over axes, ``(heads, H, H_k)`` and ``(heads, W, W_k)``, summed into ``(heads, N, N_k)``.

    Working per axis keeps every intermediate at ``heads·(H·H_k + W·W_k)`` instead of ``heads·N·N_k·2``.
    """
    heads, height, key_height = row_part.shape
    width, key_width = col_part.shape[1:]
    total = row_part[:, :, None, :, None] + col_part[:, None, :, None, :]  # (heads, H, 1, H_k, 1) + (heads, 1, W, 1, W_k) -> (heads, H, W, H_k, W_k)
    return total.reshape(heads, height * width, key_height * key_width)  # (heads, H·W queries, H_k·W_k keys)


def window_mask(height: int, width: int, window: int | None, device=None, padding: int = 0) -> torch.Tensor | None:
    """Boolean ``(N, N_k)``: True where the key lies outside the window around the query."""
    if window is None:
        return None
    far_rows = axis_shifts(height, device, padding).abs() > window  # (H, H_k)
    far_cols = axis_shifts(width, device, padding).abs() > window  # (W, W_k)
    outside = far_rows[:, None, :, None] | far_cols[None, :, None, :]  # (H, 1, H_k, 1) | (1, W, 1, W_k) -> (H, W, H_k, W_k)
    return outside.reshape(height * width, -1)  # (N, N_k)


class QuadraticEncoding(nn.Module):
    """Isotropic quadratic encoding (§3, eq. (9)): score ``−α_h ‖δ − Δ_h‖²`` per head h.

    α is stored as ``log α`` so it stays positive. Initialisation (authors' code, see module doc):
    Δ ~ N(0, 2²) per coordinate, α = s²/2 with s ~ 1 + N(0, 0.01²), i.e. α ≈ 0.5 (σ ≈ 1 px).
    """

    def __init__(self, heads: int):
        super().__init__()
        inverse_spread = 1 + SPREAD_INIT_STD * torch.randn(heads)  # the authors' s per head
        self.centres = nn.Parameter(torch.randn(heads, 2) * CENTRE_INIT_STD)  # (heads, 2) as (Δrow, Δcol)
        self.log_sharpness = nn.Parameter((inverse_spread.square() / 2).log())  # (heads,)

    @property
    def sharpness(self) -> torch.Tensor:
        """α per head, ``(heads,)``."""
        return self.log_sharpness.exp()

    def scores(self, height: int, width: int, padding: int = 0) -> torch.Tensor:
        row_offset, col_offset = _offsets_from_centres(self.centres, height, width, padding)  # (heads, H, H_k), (heads, W, W_k)
        sharpness = self.sharpness[:, None, None]  # (heads, 1, 1)
        # −α‖δ − Δ‖² = −α(δrow − Δrow)² − α(δcol − Δcol)²
        return combine_axes(-sharpness * row_offset.square(), -sharpness * col_offset.square())  # (heads, N, N_k)

    def no_weight_decay_parameters(self) -> list[nn.Parameter]:
        """Centres and spreads: the authors' optimiser exempts them from weight decay (train.py ``get_optimizer``)."""
        return [self.centres, self.log_sharpness]

    def readout(self) -> dict[str, torch.Tensor]:
        sharpness = self.sharpness.detach()
        return {
            "centres": self.centres.detach().clone(),  # (heads, 2)
            "sharpness": sharpness,  # (heads,)
            "spread": sharpness.rsqrt(),  # (heads,) — 1/√α, in pixels
        }


class GeneralizedQuadraticEncoding(nn.Module):
    """Quadratic encoding with a full precision matrix per head: ``−(δ − Δ)ᵀ Σ⁻¹ (δ − Δ)``.

    ``Σ⁻¹ = L Lᵀ`` with a free factor L ``(heads, 2, 2)``. The authors score ``−½ (δ − Δ)ᵀ A Aᵀ (δ − Δ)``
    with A = I + N(0, 0.01²) per entry, so L = A/√2 here (Σ⁻¹ ≈ I/2, like ``QuadraticEncoding``'s α ≈ 0.5).
    """

    def __init__(self, heads: int):
        super().__init__()
        factor = torch.eye(2).repeat(heads, 1, 1) + SPREAD_INIT_STD * torch.randn(heads, 2, 2)  # the authors' A
        self.centres = nn.Parameter(torch.randn(heads, 2) * CENTRE_INIT_STD)  # (heads, 2)
        self.precision_factor = nn.Parameter(factor / math.sqrt(2))  # (heads, 2, 2)

    @property
    def precision(self) -> torch.Tensor:
        """Σ⁻¹ per head, ``(heads, 2, 2)``."""
        factor = self.precision_factor
        return factor @ factor.transpose(1, 2)  # (heads, 2, 2) x (heads, 2, 2) -> (heads, 2, 2)

    def scores(self, height: int, width: int, padding: int = 0) -> torch.Tensor:
        row_offset, col_offset = _offsets_from_centres(self.centres, height, width, padding)  # (heads, H, H_k), (heads, W, W_k)
        precision = self.precision  # (heads, 2, 2)
        # (δ − Δ)ᵀ Σ⁻¹ (δ − Δ) = Σ⁻¹₀₀ r² + Σ⁻¹₁₁ c² + 2 Σ⁻¹₀₁ r c with r, c the row and column offsets.
        squares = combine_axes(
            -precision[:, 0, 0, None, None] * row_offset.square(),
            -precision[:, 1, 1, None, None] * col_offset.square(),
        )  # (heads, N, N_k)
        cross = (-2 * precision[:, 0, 1, None, None] * row_offset)[:, :, None, :, None] * col_offset[:, None, :, None, :]  # (heads, H, 1, H_k, 1) * (heads, 1, W, 1, W_k) -> (heads, H, W, H_k, W_k)
        return squares + cross.reshape(squares.shape)  # (heads, N, N_k)

    def no_weight_decay_parameters(self) -> list[nn.Parameter]:
        """Centres and spreads (Σ's factor): no weight decay, as in the authors' optimiser."""
        return [self.centres, self.precision_factor]

    def readout(self) -> dict[str, torch.Tensor]:
        return {
            "centres": self.centres.detach().clone(),  # (heads, 2)
            "precision": self.precision.detach(),  # (heads, 2, 2) — Σ⁻¹
        }


class LearnedEncoding(nn.Module):
    """Learned relative embedding (§4): ``r_δ = [row_emb[Δrow]; col_emb[Δcol]]``, score ``r_δᵀ u_h``.

    Half of ``position_dim`` encodes the row shift, half the column shift, as in the paper. The
    tables cover shifts ``-window..window``; further keys are masked by the caller (see module doc).
    Initialisation as the authors' code: tables N(0, 1) (``nn.Embedding``), head vectors
    U(±1/√(D_p/2)) per half (``nn.Linear(D_p/2, heads, bias=False)``, their ``head_keys_row/col``).
    Porting their weights: their ``col_embeddings``/``head_keys_col`` index the first image axis (our
    rows: ``row_embedding``, ``head_vectors[:, :D_p/2]``), their ``row_embeddings``/``head_keys_row`` the
    second (our ``col_embedding``, ``head_vectors[:, D_p/2:]``).
    The tables may be shared between layers (``AttentionNet(share_position_encoding=True)`` assigns one
    layer's table parameters to the others); ``head_vectors`` stay per layer.
    """

    def __init__(self, heads: int, position_dim: int, window: int):
        super().__init__()
        if position_dim < 2 or position_dim % 2:
            raise ValueError(f"position_dim must be an even integer >= 2 (half rows, half columns); got {position_dim}")
        half = position_dim // 2
        self.window = window
        self.row_embedding = nn.Parameter(torch.randn(2 * window + 1, half))  # (2w+1, D_p/2)
        self.col_embedding = nn.Parameter(torch.randn(2 * window + 1, half))  # (2w+1, D_p/2)
        bound = 1 / math.sqrt(half)
        self.head_vectors = nn.Parameter(torch.empty(heads, position_dim).uniform_(-bound, bound))  # (heads, D_p)

    def scores(self, height: int, width: int, padding: int = 0) -> torch.Tensor:
        half = self.row_embedding.shape[1]
        # r_δᵀ u_h = row_emb[Δrow]ᵀ u_h[:half] + col_emb[Δcol]ᵀ u_h[half:]: score each table row once, then gather.
        row_scores = self.row_embedding @ self.head_vectors[:, :half].T  # (2w+1, D_p/2) x (D_p/2, heads) -> (2w+1, heads)
        col_scores = self.col_embedding @ self.head_vectors[:, half:].T  # (2w+1, heads)
        row_part = row_scores[self._table_index(height, padding)].permute(2, 0, 1)  # (H, H_k, heads) -> (heads, H, H_k)
        col_part = col_scores[self._table_index(width, padding)].permute(2, 0, 1)  # (W, W_k, heads) -> (heads, W, W_k)
        return combine_axes(row_part, col_part)  # (heads, N, N_k)

    def _table_index(self, length: int, padding: int) -> torch.Tensor:
        # Out-of-window shifts are clamped only to index safely; the caller masks them.
        shifts = axis_shifts(length, self.row_embedding.device, padding)  # (L, L+2p)
        return shifts.clamp(-self.window, self.window) + self.window  # (L, L+2p) in [0, 2w]


def _offsets_from_centres(centres: torch.Tensor, height: int, width: int, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``δ − Δ`` per axis and head: ``(heads, H, H_k)`` for rows and ``(heads, W, W_k)`` for columns."""
    rows = axis_shifts(height, centres.device, padding).to(centres.dtype)  # (H, H_k)
    cols = axis_shifts(width, centres.device, padding).to(centres.dtype)  # (W, W_k)
    return rows[None] - centres[:, 0, None, None], cols[None] - centres[:, 1, None, None]  # (heads, H, H_k), (heads, W, W_k)
