"""Non-local block — Wang, Girshick, Gupta, He, *Non-local Neural Networks*, CVPR 2018, arXiv:1711.07971.

    y_i = 1/C(x) · Σ_j f(x_i, x_j) g(x_j)          (§3.1, eq. 1)
    z_i = BN(W_z y_i) + x_i                        (§3.3, eq. 6; BN γ = 0 at init, §4 "Training")

Reference code: facebookresearch/video-nonlocal-net, ``lib/models/nonlocal_helper.py`` (Caffe2).
"""

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from modules import autotune
from modules.blocks import chunked_attention
from modules.blocks.chunked_attention import chunked_softmax_attention
from modules.layers import BATCH_NORM, CONV, CONV_FUNCTION

_CONV, _CONV_FUNCTION, _BATCH_NORM = CONV, CONV_FUNCTION, BATCH_NORM
_CONV_TYPES = tuple(_CONV.values())
# In 3D only space is pooled: the reference code keeps every frame (kernel and stride (1, 2, 2)).
_MAX_POOL = {1: lambda: nn.MaxPool1d(2), 2: lambda: nn.MaxPool2d(2), 3: lambda: nn.MaxPool3d((1, 2, 2))}
SUB_SAMPLE_POSITIONS = ("before", "after")
# How the softmax modes compute softmax(θᵀφ) g; none forms the N×N' affinity. "auto": measured, see _kernel.
ATTENTION_KERNELS = ("auto", "sdpa", "chunked")


# Every aggregation takes the sequence layout of _to_sequence — query (S, 1, n, Cq), key (S, 1, m, Cq),
# value (S, 1, m, C') with S = B·groups — and returns y of shape (S, 1, n, C').
def _softmax_aggregate(block, query, key, value):
    """Embedded Gaussian / Gaussian (eqs. 2-3): softmax(θᵀφ) g, never forming n×m (kernel: ATTENTION_KERNELS)."""
    query, key, value = _common_dtype(query, key, value)
    kernel = _kernel(block.attention_kernel, query, key, value, block.scale)
    if kernel == "sdpa":
        return _sdpa(query, key, value, block.scale)
    _, rows, product = kernel.split("-")  # "chunked-<rows>-<product>"
    return _chunked(query, key, value, block.scale, int(rows), product)


def _sdpa(query, key, value, scale):
    width = value.shape[-1]
    # SDPA's fused kernels (CPU flash, CUDA flash) want one head size for q, k and v; the Gaussian
    # mode's q/k keep all C input channels while v has C', so v is zero-padded and the padded output
    # columns dropped — far cheaper than the math fallback, which materialises the n×m affinity.
    if width != query.shape[-1]:
        value = F.pad(value, (0, query.shape[-1] - width))  # (S, 1, m, C') -> (S, 1, m, Cq)
    y = F.scaled_dot_product_attention(query, key, value, scale=scale)  # -> (S, 1, n, Cq)
    return y[..., :width]  # (S, 1, n, C')


def _chunked(query, key, value, scale, chunk, product):
    y = chunked_softmax_attention(query.squeeze(1), key.squeeze(1), value.squeeze(1), scale, chunk, product)
    return y.unsqueeze(1)  # (S, n, C') -> (S, 1, n, C')


def _common_dtype(*tensors):
    """One dtype for q, k and v: autocast's where it is on (as SDPA casts), else their promoted type.

    Under autocast the Gaussian mode's q/k are the block input (often fp32) while g's conv gave bf16.
    """
    device = tensors[0].device.type
    # Devices without autocast (meta, for shape propagation) would raise in is_autocast_enabled.
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = functools.reduce(torch.promote_types, (tensor.dtype for tensor in tensors))
    return [tensor.to(dtype) for tensor in tensors]


def _kernel(requested, query, key, value, scale):
    """``"sdpa"`` or ``"chunked-<rows>-<product>"``: the requested kernel, measured where the request leaves a
    choice.

    ``auto`` times SDPA against the chunked kernel at each size in CHUNKS and with each matrix-product
    library (oneDNN, torch's matmul), ``chunked`` times the chunked variants only — once per (n, m,
    widths, dtype, device, with or without backward) on this machine, cached by
    modules/autotune.py (in memory, and on disk for other ranks, trials and runs). Which wins depends on
    the machine: oneDNN's products beat MKL's AVX2 path inside CPU SDPA on AMD, MKL and AMX win on Intel,
    CUDA's flash kernels win on GPUs. Inside torch.compile/export/jit tracing and under dispatch modes
    (FLOP counters, fake tensors) nothing is timed: ``auto`` is SDPA there, the one fused op tracers want.
    """
    if requested == "sdpa":
        return "sdpa"
    if _tracing(query):
        return ("sdpa" if requested == "auto" else
                f"chunked-{chunked_attention.DEFAULT_CHUNK}-{chunked_attention.DEFAULT_PRODUCT}")
    backward = torch.is_grad_enabled() and any(tensor.requires_grad for tensor in (query, key, value))
    trials = {f"chunked-{rows}-{product}": functools.partial(_chunked, chunk=rows, product=product)
              for rows in chunked_attention.CHUNKS
              for product in chunked_attention.products_for(query.device, query.dtype)}
    if requested == "auto":
        trials = {"sdpa": _sdpa, **trials}
    # One sequence is timed: both kernels treat the S sequences alike, so S does not change the winner.
    operands = [tensor[:1].detach().requires_grad_(backward) for tensor in (query, key, value)]

    def trial(function):
        def run():
            with torch.set_grad_enabled(backward):
                y = function(*operands, scale=scale)
                if backward:
                    y.sum().backward()
        return run

    shape = {"n": query.shape[-2], "m": key.shape[-2], "query_width": query.shape[-1],
             "value_width": value.shape[-1], "dtype": str(query.dtype).removeprefix("torch."),
             "device": query.device.type, "backward": backward}
    return autotune.choose(f"nonlocal-attention-{requested}", shape,
                           {name: trial(function) for name, function in trials.items()}, query.device)


def _tracing(tensor):
    return (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
            or is_in_torch_dispatch_mode() or tensor.is_meta)


def _dot_product_aggregate(block, query, key, value):
    """Dot product (eq. 4): θ (φᵀ g) / m by associativity — n·C'² work and no n×m affinity."""
    context = key.transpose(-2, -1) @ value  # (S, 1, C', m) x (S, 1, m, C') -> (S, 1, C', C')
    return query @ context / key.shape[-2]  # (S, 1, n, C') x (S, 1, C', C') -> (S, 1, n, C')


def _concatenation_aggregate(block, query, key, value):
    """Concatenation (eq. 5): the ReLU between the pairwise terms forbids associativity, so n×m is formed."""
    return _concatenation_affinity(block, query, key) @ value  # (S, 1, n, m) x (S, 1, m, C') -> (S, 1, n, C')


# Affinities f(x_i, x_j)/C(x) as explicit (…, n, m) rows: used by attention_map (plots) and concatenation.
def _softmax_affinity(block, query, key):
    logits = query @ key.transpose(-2, -1) * block.scale  # (…, n, Cq) x (…, Cq, m) -> (…, n, m)
    return torch.softmax(logits, dim=-1)


def _dot_product_affinity(block, query, key):
    return query @ key.transpose(-2, -1) / key.shape[-2]  # (…, n, C') x (…, C', m) -> (…, n, m)


def _concatenation_affinity(block, query, key):
    # w_fᵀ[θ_i; φ_j] = w_θ·θ_i + w_φ·φ_j: splitting w_f forms n×m scalars, not the (2C', n, m) concatenation.
    weight_theta, weight_phi = block.concat_project.weight.chunk(2, dim=-1)  # (1, 2C') -> 2 × (1, C')
    rows = query @ weight_theta.T  # (…, n, C') x (C', 1) -> (…, n, 1)
    columns = (key @ weight_phi.T).transpose(-2, -1)  # (…, m, C') x (C', 1) -> (…, m, 1) -> (…, 1, m)
    return F.relu(rows + columns) / key.shape[-2]  # (…, n, 1) + (…, 1, m) -> (…, n, m)


@dataclass(frozen=True)
class _Mode:
    learned_embedding: bool  # θ and φ are 1×1 convs; False: the Gaussian compares raw inputs x_i, x_j
    aggregate: Callable
    affinity: Callable


MODES = {
    "embedded_gaussian": _Mode(True, _softmax_aggregate, _softmax_affinity),
    "gaussian": _Mode(False, _softmax_aggregate, _softmax_affinity),
    "dot_product": _Mode(True, _dot_product_aggregate, _dot_product_affinity),
    "concatenation": _Mode(True, _concatenation_aggregate, _concatenation_affinity),
}


def _choose(name, value, choices):
    if value not in choices:
        raise ValueError(f"NonLocalBlock: {name} must be one of {list(choices)}, got {value!r}")
    return choices[value] if isinstance(choices, dict) else value


def _pointwise_together(layers, x):
    """Apply 1×1 convs (or identities) that read the same x; the convs run as one convolution.

    One convolution over the concatenated weights reads the C-channel input once, and its backward
    forms one input gradient instead of summing three — ~30% off the projections' step time on CPU.
    """
    convs = [layer for layer in layers if isinstance(layer, _CONV_TYPES)]
    if len(convs) < 2:
        return [layer(x) for layer in layers]
    weight = torch.cat([conv.weight for conv in convs])  # k × (C', C, 1, ...) -> (k·C', C, 1, ...)
    bias = torch.cat([conv.bias for conv in convs])
    outputs = _CONV_FUNCTION[x.dim() - 2](x, weight, bias)  # (B, C, *S) -> (B, k·C', *S)
    outputs = iter(outputs.split([conv.out_channels for conv in convs], dim=1))  # -> k × (B, C', *S)
    return [next(outputs) if isinstance(layer, _CONV_TYPES) else layer(x) for layer in layers]


def _to_sequence(features, groups):
    """(B, C, *S) -> (B·G, 1, N/G, C), contiguous: SDPA's fused kernels need unit stride on the last axis."""
    batch, width = features.shape[:2]
    # T leads the flattened T·H·W axis, so splitting it into (G, N/G) keeps whole frames in a group.
    grouped = features.reshape(batch, width, groups, -1)  # (B, C, *S) -> (B, C, G, N/G)
    grouped = grouped.permute(0, 2, 3, 1).contiguous()  # -> (B, G, N/G, C)
    return grouped.view(batch * groups, 1, -1, width)  # -> (B·G, 1, N/G, C)


def _from_sequence(sequence, batch, spatial):
    """(B·G, 1, N/G, C') -> (B, C', *S)."""
    width = sequence.shape[-1]
    flat = sequence.reshape(batch, -1, width)  # (B·G, 1, N/G, C') -> (B, N, C')
    return flat.transpose(1, 2).reshape(batch, width, *spatial)  # (B, N, C') -> (B, C', N) -> (B, C', *S)


def _flat_positions(query_positions, spatial):
    """Flat indices (Q,) or coordinate tuples (Q, len(S)) -> flat indices (Q,) into the N = prod(S) positions."""
    positions = torch.atleast_1d(torch.as_tensor(query_positions, dtype=torch.long))
    if positions.dim() == 2:
        if positions.shape[1] != len(spatial):
            raise ValueError(f"query coordinates need {len(spatial)} entries per position (shape {tuple(spatial)})")
        flat = torch.zeros(len(positions), dtype=torch.long)
        for coordinate, size in zip(positions.unbind(1), spatial):
            if (coordinate < 0).any() or (coordinate >= size).any():
                raise ValueError(f"query coordinates must lie inside the feature map of shape {tuple(spatial)}")
            flat = flat * size + coordinate  # row-major ravel, as flatten() orders T·H·W
        positions = flat
    total = math.prod(spatial)
    if positions.dim() != 1 or (positions < 0).any() or (positions >= total).any():
        raise ValueError(f"query positions must be flat indices in [0, {total}) or coordinate tuples")
    return positions


class NonLocalBlock(nn.Module):
    """Residual non-local block for (B, C, L), (B, C, H, W) or (B, C, T, H, W); output has the input's shape.

    Args:
        channels: C of the input.
        dim: 1, 2 or 3 spatial(-temporal) axes.
        reduction: bottleneck width C' = channels // reduction (§3.3: half, i.e. 2).
        mode: pairwise function f of §3.2 — ``embedded_gaussian`` (eq. 3, softmax(θᵀφ)),
            ``gaussian`` (eq. 2, softmax(xᵀx) on raw inputs), ``dot_product`` (eq. 4, θᵀφ / N),
            ``concatenation`` (eq. 5, ReLU(w_fᵀ[θ; φ]) / N). N counts the key positions (after pooling,
            within a temporal group).
        sub_sample: max-pool the keys/values φ and g by 2 along H and W — along L in 1D (§3.3 "Implementation";
            reference code ``NONLOCAL.USE_MAXPOOL``, kernel and stride (1, 2, 2)). Default off, see below.
        sub_sample_position: pool ``"before"`` the φ/g convs (reference code, default) or ``"after"`` (paper).
        use_scale: multiply θᵀφ by 1/√d before the softmax (d = C' — or C for ``gaussian``). Default None:
            per mode as the references do — on for ``embedded_gaussian`` (reference code ``USE_SCALE``),
            off for ``gaussian`` (the paper's eq. (2), ``exp(x_iᵀx_j)``, and mmcv's NonLocal). True/False
            force it for both softmax modes.
        temporal_group: dim 3 only — split T into groups of this many frames; attention stays in a group.
        attention_kernel: softmax modes only — ``"sdpa"`` (``F.scaled_dot_product_attention``), ``"chunked"``
            (modules/blocks/chunked_attention.py: query blocks on oneDNN matrix products, recomputed in
            backward; block size measured) or ``"auto"`` (default: whichever of the two ran faster when
            timed on this machine for this shape and dtype; SDPA inside torch.compile/export).

    Memory: the softmax modes run through ``F.scaled_dot_product_attention`` with contiguous q/k/v of one
    head size, so its fused kernels never materialise the N×N' affinity — or through the chunked kernel,
    which holds one (rows, N') block at a time. Neither is faster everywhere (the chunked kernel computes
    the attention 1.7× faster than CPU SDPA on an AMD EPYC, whose MKL products run AVX2 code there; SDPA
    wins on Intel Xeons and GPUs), so ``auto`` measures both on first use and caches the choice
    (modules/autotune.py; benchmarks/bench_blocks.py prints both). In bf16 (autocast) q, k and v share
    autocast's dtype and both kernels keep softmax statistics in fp32.
    ``dot_product`` computes θ(φᵀg)/N' (associativity); ``concatenation`` must form the N×N' ReLU terms
    (N·N' scalars per group, not the 2C'·N·N' concatenation a literal implementation builds).
    Speed: θ, φ and g that read the same tensor run as one convolution over their concatenated weights
    (the modules keep their own parameters, but forward hooks on them do not fire).

    Paper vs reference code (facebookresearch/video-nonlocal-net), and what this class does:
        * 1/√d scale: reference scales before its softmax (``USE_SCALE``), the paper does not mention it.
          Default: on for the embedded Gaussian (reference; its released models use it), off for the
          Gaussian (eq. (2); the reference has no Gaussian mode). Dot product and concatenation: never.
        * Sub-sampling: the paper pools after φ and g (§3.3); the reference pools x before both convs,
          which makes the convs 4× cheaper. Default position: before (reference). The papers' models
          sub-sample (reference ``USE_MAXPOOL=True``; configs/nonlocal_*_r50.yaml set ``sub_sample: true``);
          the block alone keeps every key by default, as mmcv, pytorchvideo and timm do, so that
          ``attention_map`` covers the input grid and a block on an odd-sized or 1-pixel map loses nothing.
        * Temporal grouping: reference only (``add_nonlocal_group``, 128-frame inputs). Default: off.
        * Modes: the reference implements embedded Gaussian (``USE_SOFTMAX``) and dot product (dividing
          by N with a stopped gradient — N is a constant here too); Gaussian and concatenation follow the
          paper's equations; the Gaussian is unscaled unless ``use_scale=True`` (then 1/√C).
        * Initialisation: reference — 1×1 convs N(0, 0.01²) with zero bias; both set the output BN γ to 0,
          so the block is the identity at initialisation. ``reset_parameters()`` restores this after a
          backbone-wide re-initialisation.
    """

    def __init__(self, channels, *, dim=2, reduction=2, mode="embedded_gaussian", sub_sample=False,
                 sub_sample_position="before", use_scale=None, temporal_group=None, attention_kernel="auto"):
        super().__init__()
        conv = _choose("dim", dim, _CONV)
        self.mode_spec = _choose("mode", mode, MODES)
        self.sub_sample_position = _choose("sub_sample_position", sub_sample_position, SUB_SAMPLE_POSITIONS)
        self.attention_kernel = _choose("attention_kernel", attention_kernel, ATTENTION_KERNELS)
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"NonLocalBlock: channels must be a positive int, got {channels!r}")
        if not isinstance(reduction, int) or isinstance(reduction, bool) or not 1 <= reduction <= channels:
            raise ValueError(f"NonLocalBlock: reduction must be an int in [1, {channels}] "
                             f"(bottleneck width channels // reduction >= 1), got {reduction!r}")
        for name, flag, allowed in (("sub_sample", sub_sample, "True or False"),
                                    ("use_scale", use_scale, "True, False or None (per mode)")):
            if not isinstance(flag, bool) and not (name == "use_scale" and flag is None):
                # a YAML string "false" would otherwise count as on
                raise ValueError(f"NonLocalBlock: {name} must be {allowed}, got {flag!r}")
        if temporal_group is not None and (dim != 3 or not isinstance(temporal_group, int) or temporal_group < 1):
            raise ValueError(f"NonLocalBlock: temporal_group must be None or a positive int of frames, "
                             f"and needs dim=3; got temporal_group={temporal_group!r}, dim={dim!r}")
        self.channels, self.dim, self.mode, self.temporal_group = channels, dim, mode, temporal_group
        self.sub_sample = sub_sample
        inner = channels // reduction
        embedding = (lambda: conv(channels, inner, 1)) if self.mode_spec.learned_embedding else nn.Identity
        self.theta, self.phi = embedding(), embedding()
        self.g = conv(channels, inner, 1)
        self.concat_project = nn.Linear(2 * inner, 1, bias=False) if mode == "concatenation" else None
        self.pool = _MAX_POOL[dim]() if sub_sample else nn.Identity()
        self.w_z = conv(inner, channels, 1)
        self.norm = _BATCH_NORM[dim](channels)
        query_width = inner if self.mode_spec.learned_embedding else channels
        if use_scale is None:
            use_scale = mode != "gaussian"  # only the softmax modes read the scale
        self.scale = query_width**-0.5 if use_scale else 1.0
        self.reset_parameters()

    def reset_parameters(self):
        """Reference-code initialisation; zero output-BN γ and β make the block the identity."""
        for module in self.modules():
            if isinstance(module, (*_CONV_TYPES, nn.Linear)):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x):
        groups = self._groups(x)
        query, key, value = (_to_sequence(t, groups) for t in self._project(x))  # (B·G, 1, N/G or N'/G, ·)
        y = self.mode_spec.aggregate(self, query, key, value)  # -> (B·G, 1, N/G, C')
        return x + self.norm(self.w_z(_from_sequence(y, x.shape[0], x.shape[2:])))  # (B, C, *S)

    def attention_map(self, x, query_positions):
        """Normalised affinity rows f(x_i, x_j)/C(x) for chosen queries i: (B, Q, N'), for plots.

        ``query_positions``: flat indices into the N positions of x (row-major over T·H·W), or a list of
        coordinate tuples such as ``[(t, h, w), ...]``. Columns run over the N' key positions — all of x,
        or the pooled grid (T, H/2, W/2) flattened when ``sub_sample``. Rows sum to 1 for the softmax
        modes; with ``temporal_group`` keys outside the query's group get 0.
        """
        groups = self._groups(x)
        batch, positions = x.shape[0], _flat_positions(query_positions, x.shape[2:]).to(x.device)
        theta, phi, _ = self._project(x)
        query = _to_sequence(theta, groups).view(batch, groups, -1, theta.shape[1])  # (B, G, N/G, Cq)
        key = _to_sequence(phi, groups).view(batch, groups, -1, phi.shape[1])  # (B, G, N'/G, Cq)
        group, local = positions // query.shape[2], positions % query.shape[2]
        rows = self.mode_spec.affinity(self, query[:, group, local].unsqueeze(2), key[:, group])
        # (B, Q, 1, Cq) against (B, Q, N'/G, Cq) -> (B, Q, 1, N'/G); scattered into the query's group
        full = rows.new_zeros(batch, len(positions), groups, key.shape[2])  # (B, Q, G, N'/G)
        full[:, torch.arange(len(positions), device=x.device), group] = rows.squeeze(2)
        return full.view(batch, len(positions), -1)  # -> (B, Q, N')

    def _project(self, x):
        """x (B, C, *S) -> θ (B, Cq, *S), φ (B, Cq, *S'), g (B, C', *S'); S' is S pooled when sub-sampling."""
        pool_first = self.sub_sample_position == "before"
        key_input = self.pool(x) if pool_first else x
        if key_input is x:  # nothing pooled yet: θ, φ and g all read x
            theta, phi, g = _pointwise_together([self.theta, self.phi, self.g], x)
        else:
            theta, (phi, g) = self.theta(x), _pointwise_together([self.phi, self.g], key_input)
        if not pool_first:
            phi, g = self.pool(phi), self.pool(g)
        return theta, phi, g

    def _groups(self, x):
        """Number of temporal groups G for input x, after checking its shape."""
        if x.dim() != self.dim + 2 or x.shape[1] != self.channels:
            raise ValueError(f"NonLocalBlock(channels={self.channels}, dim={self.dim}) expects input of "
                             f"{self.dim + 2} axes (B, {self.channels}, ...), got shape {tuple(x.shape)}")
        if self.temporal_group is None:
            return 1
        if x.shape[2] % self.temporal_group:
            raise ValueError(f"NonLocalBlock: T={x.shape[2]} frames do not split into groups of "
                             f"temporal_group={self.temporal_group}")
        return x.shape[2] // self.temporal_group

    def extra_repr(self):
        return (f"mode={self.mode!r}, scale={self.scale:.4g}, temporal_group={self.temporal_group}, "
                f"attention_kernel={self.attention_kernel!r}")
