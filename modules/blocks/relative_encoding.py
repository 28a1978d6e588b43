"""Relative positional attention scores for 2D self-attention.

Cordonnier, Loukas, Jaggi — *On the Relationship between Self-Attention and Convolutional Layers*,
ICLR 2020, arXiv:1911.03584.

Each module here turns a map size ``(H, W)`` into positional attention scores ``(heads, N, N)``
(``N = H * W``, rows = queries, columns = keys) that depend only on the shift ``δ = k − q`` between
key and query pixels, written ``(Δrow, Δcol)``:

- ``QuadraticEncoding`` (§3, eq. (9)): per head a centre Δ and a sharpness α > 0;
  score ``−α‖δ − Δ‖²``. The paper writes ``−α(‖δ − Δ‖² − ‖Δ‖²)``; the two differ by a constant per
  head, which the softmax over keys removes, and the form used here keeps the largest score at 0,
  so a very sharp head (``from_conv``) cannot overflow.
- ``GeneralizedQuadraticEncoding`` (§4, the non-isotropic variant of the quadratic encoding):
  score ``−(δ − Δ)ᵀ Σ⁻¹ (δ − Δ)`` with ``Σ⁻¹ = L Lᵀ`` (L a free 2×2 factor per head), so Σ⁻¹ stays
  positive semi-definite without constraints.
- ``LearnedEncoding`` (§4, "learned embedding"): a table of row embeddings and one of column
  embeddings, each ``position_dim / 2`` wide, concatenated into ``r_δ``; score ``r_δᵀ u_h`` with one
  learned vector ``u_h`` per head (the position-only ``vᵀ Ŵ_key r_δ`` term of the relative
  attention score, §2.2).

Window: with ``window = w`` every shift with ``|Δrow| > w`` or ``|Δcol| > w`` scores ``-inf`` (the key is
masked). The learned tables hold exactly the shifts ``-w..w`` per axis, so they are never clipped:
keys outside the table are masked instead (a deviation from Shaw et al.'s clipping, chosen so that
the layer is exactly translation-equivariant on interior pixels).
"""

import torch
from torch import nn


def axis_shifts(length: int, device=None) -> torch.Tensor:
    """Shifts ``key − query`` along one axis, ``(L, L)`` (query rows, key columns)."""
    positions = torch.arange(length, device=device)
    return positions[None, :] - positions[:, None]  # (1, L) - (L, 1) -> (L, L)


def combine_axes(row_part: torch.Tensor, col_part: torch.Tensor) -> torch.Tensor:
    """Scores separable over axes, ``(heads, H, H)`` and ``(heads, W, W)``, summed into ``(heads, N, N)``.

    Working per axis keeps every intermediate at ``heads·(H² + W²)`` instead of ``heads·N²·2``.
    """
    heads, height, width = row_part.shape[0], row_part.shape[1], col_part.shape[1]
    total = row_part[:, :, None, :, None] + col_part[:, None, :, None, :]  # (heads, H, 1, H, 1) + (heads, 1, W, 1, W) -> (heads, H, W, H, W)
    return total.reshape(heads, height * width, height * width)  # (heads, H·W queries, H·W keys)


def window_mask(height: int, width: int, window: int | None, device=None) -> torch.Tensor | None:
    """Boolean ``(N, N)``: True where the key lies outside the window around the query."""
    if window is None:
        return None
    far_rows = axis_shifts(height, device).abs() > window  # (H, H)
    far_cols = axis_shifts(width, device).abs() > window  # (W, W)
    outside = far_rows[:, None, :, None] | far_cols[None, :, None, :]  # (H, 1, H, 1) | (1, W, 1, W) -> (H, W, H, W)
    return outside.reshape(height * width, height * width)  # (N, N)


class QuadraticEncoding(nn.Module):
    """Isotropic quadratic encoding (§3, eq. (9)): score ``−α_h ‖δ − Δ_h‖²`` per head h.

    α is stored as ``log α`` so it stays positive. Initialisation: Δ ~ N(0, 2²) per coordinate (the
    authors' code uses this spread for the centres), α = 1.
    """

    def __init__(self, heads: int):
        super().__init__()
        self.centres = nn.Parameter(torch.randn(heads, 2) * 2.0)  # (heads, 2) as (Δrow, Δcol)
        self.log_sharpness = nn.Parameter(torch.zeros(heads))  # (heads,)

    @property
    def sharpness(self) -> torch.Tensor:
        """α per head, ``(heads,)``."""
        return self.log_sharpness.exp()

    def scores(self, height: int, width: int) -> torch.Tensor:
        row_offset, col_offset = _offsets_from_centres(self.centres, height, width)  # (heads, H, H), (heads, W, W)
        sharpness = self.sharpness[:, None, None]  # (heads, 1, 1)
        # −α‖δ − Δ‖² = −α(δrow − Δrow)² − α(δcol − Δcol)²
        return combine_axes(-sharpness * row_offset.square(), -sharpness * col_offset.square())  # (heads, N, N)

    def readout(self) -> dict[str, torch.Tensor]:
        sharpness = self.sharpness.detach()
        return {
            "centres": self.centres.detach().clone(),  # (heads, 2)
            "sharpness": sharpness,  # (heads,)
            "spread": sharpness.rsqrt(),  # (heads,) — 1/√α, in pixels
        }


class GeneralizedQuadraticEncoding(nn.Module):
    """Quadratic encoding with a full precision matrix per head: ``−(δ − Δ)ᵀ Σ⁻¹ (δ − Δ)``.

    ``Σ⁻¹ = L Lᵀ`` with a free factor L ``(heads, 2, 2)``, initialised to the identity (an isotropic
    head with α = 1, like ``QuadraticEncoding``).
    """

    def __init__(self, heads: int):
        super().__init__()
        self.centres = nn.Parameter(torch.randn(heads, 2) * 2.0)  # (heads, 2)
        self.precision_factor = nn.Parameter(torch.eye(2).repeat(heads, 1, 1))  # (heads, 2, 2)

    @property
    def precision(self) -> torch.Tensor:
        """Σ⁻¹ per head, ``(heads, 2, 2)``."""
        factor = self.precision_factor
        return factor @ factor.transpose(1, 2)  # (heads, 2, 2) x (heads, 2, 2) -> (heads, 2, 2)

    def scores(self, height: int, width: int) -> torch.Tensor:
        row_offset, col_offset = _offsets_from_centres(self.centres, height, width)  # (heads, H, H), (heads, W, W)
        precision = self.precision  # (heads, 2, 2)
        # (δ − Δ)ᵀ Σ⁻¹ (δ − Δ) = Σ⁻¹₀₀ r² + Σ⁻¹₁₁ c² + 2 Σ⁻¹₀₁ r c with r, c the row and column offsets.
        squares = combine_axes(
            -precision[:, 0, 0, None, None] * row_offset.square(),
            -precision[:, 1, 1, None, None] * col_offset.square(),
        )  # (heads, N, N)
        cross = (-2 * precision[:, 0, 1, None, None] * row_offset)[:, :, None, :, None] * col_offset[:, None, :, None, :]  # (heads, H, 1, H, 1) * (heads, 1, W, 1, W) -> (heads, H, W, H, W)
        return squares + cross.reshape(squares.shape)  # (heads, N, N)

    def readout(self) -> dict[str, torch.Tensor]:
        return {
            "centres": self.centres.detach().clone(),  # (heads, 2)
            "precision": self.precision.detach(),  # (heads, 2, 2) — Σ⁻¹
        }


class LearnedEncoding(nn.Module):
    """Learned relative embedding (§4): ``r_δ = [row_emb[Δrow]; col_emb[Δcol]]``, score ``r_δᵀ u_h``.

    Half of ``position_dim`` encodes the row shift, half the column shift, as in the paper. The
    tables cover shifts ``-window..window``; further keys are masked by the caller (see module doc).
    Initialisation: N(0, 0.02²) for tables and head vectors (BERT's initialiser range, which the
    authors' code inherits), so a fresh layer attends nearly uniformly.
    """

    def __init__(self, heads: int, position_dim: int, window: int):
        super().__init__()
        if position_dim < 2 or position_dim % 2:
            raise ValueError(f"position_dim must be an even integer >= 2 (half rows, half columns); got {position_dim}")
        half = position_dim // 2
        self.window = window
        self.row_embedding = nn.Parameter(torch.randn(2 * window + 1, half) * 0.02)  # (2w+1, D_p/2)
        self.col_embedding = nn.Parameter(torch.randn(2 * window + 1, half) * 0.02)  # (2w+1, D_p/2)
        self.head_vectors = nn.Parameter(torch.randn(heads, position_dim) * 0.02)  # (heads, D_p)

    def scores(self, height: int, width: int) -> torch.Tensor:
        half = self.row_embedding.shape[1]
        # r_δᵀ u_h = row_emb[Δrow]ᵀ u_h[:half] + col_emb[Δcol]ᵀ u_h[half:]: score each table row once, then gather.
        row_scores = self.row_embedding @ self.head_vectors[:, :half].T  # (2w+1, D_p/2) x (D_p/2, heads) -> (2w+1, heads)
        col_scores = self.col_embedding @ self.head_vectors[:, half:].T  # (2w+1, heads)
        row_part = row_scores[self._table_index(height)].permute(2, 0, 1)  # (H, H, heads) -> (heads, H, H)
        col_part = col_scores[self._table_index(width)].permute(2, 0, 1)  # (W, W, heads) -> (heads, W, W)
        return combine_axes(row_part, col_part)  # (heads, N, N)

    def _table_index(self, length: int) -> torch.Tensor:
        # Out-of-window shifts are clamped only to index safely; the caller masks them.
        shifts = axis_shifts(length, self.row_embedding.device)  # (L, L)
        return shifts.clamp(-self.window, self.window) + self.window  # (L, L) in [0, 2w]


def _offsets_from_centres(centres: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``δ − Δ`` per axis and head: ``(heads, H, H)`` for rows and ``(heads, W, W)`` for columns."""
    rows = axis_shifts(height, centres.device).to(centres.dtype)  # (H, H)
    cols = axis_shifts(width, centres.device).to(centres.dtype)  # (W, W)
    return rows[None] - centres[:, 0, None, None], cols[None] - centres[:, 1, None, None]  # (heads, H, H), (heads, W, W)
