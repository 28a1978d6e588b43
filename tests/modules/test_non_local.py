"""Non-local block: identity at init, equality with the paper's formulas, memory contract, attention maps, errors."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from modules.blocks import chunked_attention
from modules.blocks.non_local import MODES, NonLocalBlock

SIZES = {1: (8,), 2: (4, 6), 3: (4, 4, 6)}
# Settings beyond the defaults that change the computation: pooling on either side of the φ/g convs,
# the unscaled softmax of the paper, the reference code's temporal groups (alone and with pooling).
VARIANTS = {
    "dim1": dict(dim=1),
    "dim2": dict(dim=2),
    "dim3": dict(dim=3),
    "dim1-pool": dict(dim=1, sub_sample=True),
    "dim2-pool-before": dict(dim=2, sub_sample=True, sub_sample_position="before"),
    "dim3-pool-after": dict(dim=3, sub_sample=True, sub_sample_position="after"),
    "dim2-unscaled": dict(dim=2, use_scale=False),
    "dim3-groups": dict(dim=3, temporal_group=2),
    "dim3-groups-pool": dict(dim=3, temporal_group=2, sub_sample=True, use_scale=False),
}


def randomised(block):
    """Non-trivial weights and eval-mode BN statistics (γ ≠ 0), in float64, so z - x is a real function."""
    torch.manual_seed(1)
    block = block.double().eval()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(0, 0.5)
        block.norm.running_mean.normal_()
        block.norm.running_var.uniform_(0.5, 2.0)
    return block


def pool_by_two(t, dim):
    """Max over 2×2 (2D), 2 (1D) or 1×2×2 (3D) windows, by reshaping (B, C, *S) — independent of nn.MaxPool."""
    batch, channels, *spatial = t.shape
    pooled = list(range(len(spatial)))[-2:] if dim > 1 else [0]
    shape = [batch, channels]
    for axis, size in enumerate(spatial):
        shape += [size // 2, 2] if axis in pooled else [size, 1]
    return t.reshape(shape).amax(dim=tuple(range(3, len(shape), 2)))  # (B, C, S1, 2|1, S2, 2|1, ...) -> (B, C, *S')


def pointwise(conv, t):
    """1×1 conv as the paper writes it, W·x + b at every position: (B, C, N) -> (B, C', N)."""
    return torch.einsum("oc,bcn->bon", conv.weight.flatten(1), t) + conv.bias[:, None]


def paper_pairwise(block, theta, phi):
    """f(x_i, x_j) / C(x) of §3.2, eqs. 2-5, from θ (B, Cq, n) and φ (B, Cq, m) -> (B, n, m)."""
    count = phi.shape[-1]
    if block.mode in ("embedded_gaussian", "gaussian"):
        f = torch.exp(block.scale * torch.einsum("bci,bcj->bij", theta, phi))
        return f / f.sum(dim=-1, keepdim=True)  # C(x) = Σ_j f(x_i, x_j)
    if block.mode == "dot_product":
        return torch.einsum("bci,bcj->bij", theta, phi) / count  # C(x) = N
    # the literal [θ_i; φ_j] concatenation: (B, C', n, 1) and (B, C', 1, m) -> (B, 2C', n, m)
    pairs = torch.cat(torch.broadcast_tensors(theta[:, :, :, None], phi[:, :, None, :]), dim=1)
    return F.relu(torch.einsum("c,bcij->bij", block.concat_project.weight[0], pairs)) / count


def paper_embeddings(block, x):
    """θ (B, Cq, N), φ (B, Cq, N'), g (B, C', N') of one clip; pooling before or after the φ/g convs."""
    batch, _, *spatial = x.shape
    pooling = not isinstance(block.pool, torch.nn.Identity)
    pool = (lambda t: pool_by_two(t, block.dim)) if pooling else (lambda t: t)
    embed = (lambda conv, t: t) if block.mode == "gaussian" else pointwise
    if block.sub_sample_position == "before":
        key_input = pool(x).flatten(2)
        return embed(block.theta, x.flatten(2)), embed(block.phi, key_input), pointwise(block.g, key_input)
    after = lambda t: pool(t.reshape(batch, -1, *spatial)).flatten(2)  # noqa: E731  (B, C', N) -> (B, C', N')
    flat = x.flatten(2)
    return embed(block.theta, flat), after(embed(block.phi, flat)), after(pointwise(block.g, flat))


def clips(block, x):
    """The reference code's temporal groups: each group of frames is its own clip."""
    return x.split(block.temporal_group, dim=2) if block.temporal_group else [x]


def paper_nonlocal(block, x):
    """z = x + BN(W_z y) (eq. 6), y_i = Σ_j f(x_i, x_j) g(x_j) / C(x) (eq. 1), clip by clip."""
    responses = []
    for clip in clips(block, x):
        theta, phi, g = paper_embeddings(block, clip)
        y = torch.einsum("bij,bcj->bci", paper_pairwise(block, theta, phi), g)  # (B, C', N)
        z, norm = pointwise(block.w_z, y), block.norm
        z = (z - norm.running_mean[:, None]) / torch.sqrt(norm.running_var[:, None] + norm.eps)
        responses.append((z * norm.weight[:, None] + norm.bias[:, None]).reshape(clip.shape))
    return x + torch.cat(responses, dim=2)


def paper_affinity(block, x):
    """All rows f(x_i, x_j)/C(x): (B, N, N'), block-diagonal over temporal groups."""
    per_clip = [paper_pairwise(block, *paper_embeddings(block, clip)[:2]) for clip in clips(block, x)]
    return torch.stack([torch.block_diag(*[rows[b] for rows in per_clip]) for b in range(x.shape[0])])


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_nonlocal_is_identity_at_init(mode, dim):
    block = NonLocalBlock(8, dim=dim, mode=mode, sub_sample=True).train()
    x = torch.randn(2, 8, *SIZES[dim])
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("kernel", ["sdpa", "chunked"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_nonlocal_matches_paper_formula(mode, variant, kernel, monkeypatch):
    monkeypatch.setattr(chunked_attention, "DEFAULT_CHUNK", 5)  # several query blocks, the last one short
    block = randomised(NonLocalBlock(6, mode=mode, attention_kernel=kernel, **VARIANTS[variant]))
    x = torch.randn(2, 6, *SIZES[block.dim], dtype=torch.float64)
    expected = paper_nonlocal(block, x)
    assert not torch.allclose(expected, x, atol=1e-3)  # the residual branch contributes
    torch.testing.assert_close(block(x), expected)


class ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor an aten op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.numels = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.numels += [t.numel() for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        return out


@pytest.mark.parametrize(("mode", "kernel"), [("embedded_gaussian", "sdpa"), ("embedded_gaussian", "chunked"),
                                              ("gaussian", "sdpa"), ("gaussian", "chunked"), ("dot_product", "auto")])
def test_nonlocal_never_materialises_affinity(mode, kernel, monkeypatch):
    # N = 256 positions with 4 channels: every legitimate tensor is far smaller than N×N — the chunked
    # kernel's blocks included, at 16 query rows (16·N) as at its default 256 rows for N in the thousands.
    monkeypatch.setattr(chunked_attention, "DEFAULT_CHUNK", 16)
    block = NonLocalBlock(4, dim=3, mode=mode, attention_kernel=kernel)
    x = torch.randn(1, 4, 4, 8, 8, requires_grad=True)
    positions = 4 * 8 * 8
    recorder = ShapeRecorder()
    with recorder:
        block(x).sum().backward()
    assert max(recorder.numels) < positions * positions // 4


@pytest.mark.parametrize("mode", ["embedded_gaussian", "gaussian"])
def test_softmax_modes_run_the_fused_sdpa_kernel(mode):
    # Restricting SDPA to the flash kernel raises "No available kernel" if q/k/v would fall back to math.
    block = NonLocalBlock(8, dim=3, mode=mode, temporal_group=2, sub_sample=True, attention_kernel="sdpa")
    x = torch.randn(2, 8, 4, 4, 4, requires_grad=True)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        block(x).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize(("channels", "expected"), [(512, 526_592), (1024, 2_101_760)])
@pytest.mark.parametrize("dim", [2, 3])
def test_embedded_gaussian_parameter_count(channels, expected, dim):
    with torch.device("meta"):
        block = NonLocalBlock(channels, dim=dim)
    assert sum(p.numel() for p in block.parameters()) == expected


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("variant", ["dim2", "dim3-pool-after", "dim3-groups-pool"])
def test_attention_map_matches_paper_affinity(mode, variant):
    block = randomised(NonLocalBlock(6, mode=mode, **VARIANTS[variant]))
    x = torch.randn(2, 6, *SIZES[block.dim], dtype=torch.float64)
    queries = [0, 5, x[0, 0].numel() - 1]
    rows = block.attention_map(x, queries)
    torch.testing.assert_close(rows, paper_affinity(block, x)[:, queries])
    if mode in ("embedded_gaussian", "gaussian"):
        torch.testing.assert_close(rows.sum(-1), torch.ones(2, len(queries), dtype=torch.float64))


def test_attention_map_accepts_coordinates():
    block = NonLocalBlock(4, dim=3)
    x = torch.randn(1, 4, 2, 3, 5)
    flat = block.attention_map(x, [7, 29])
    torch.testing.assert_close(block.attention_map(x, [(0, 1, 2), (1, 2, 4)]), flat)
    with pytest.raises(ValueError, match=r"inside the feature map of shape \(2, 3, 5\)"):
        block.attention_map(x, [(2, 0, 0)])
    with pytest.raises(ValueError, match=r"flat indices in \[0, 30\)"):
        block.attention_map(x, [30])


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(mode="softmax"), r"mode must be one of \['embedded_gaussian', 'gaussian', 'dot_product', 'concatenation'\]"),
    (dict(dim=4), r"dim must be one of \[1, 2, 3\]"),
    (dict(reduction=0), r"reduction must be an int in \[1, 8\]"),
    (dict(reduction=16), r"reduction must be an int in \[1, 8\]"),
    (dict(reduction=2.0), r"reduction must be an int"),
    (dict(sub_sample_position="middle"), r"sub_sample_position must be one of \['before', 'after'\]"),
    (dict(dim=2, temporal_group=2), r"temporal_group .* needs dim=3"),
    (dict(sub_sample="false"), r"sub_sample must be True or False, got 'false'"),
    (dict(use_scale="yes"), r"use_scale must be True, False or None \(per mode\), got 'yes'"),
    (dict(attention_kernel="flash"), r"attention_kernel must be one of \['auto', 'sdpa', 'chunked'\]"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NonLocalBlock(8, **kwargs)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match=r"T=5 frames do not split into groups of temporal_group=2"):
        NonLocalBlock(4, dim=3, temporal_group=2)(torch.randn(1, 4, 5, 2, 2))
    with pytest.raises(ValueError, match=r"expects input of 4 axes \(B, 4, ...\), got shape \(1, 3, 2, 2\)"):
        NonLocalBlock(4, dim=2)(torch.randn(1, 3, 2, 2))


@pytest.mark.parametrize(("kwargs", "scale"), [
    (dict(), 1 / 4),  # embedded Gaussian: 1/√C' with C' = 32 // 2 (reference code's default)
    (dict(mode="gaussian"), 1.0),  # Gaussian: eq. (2), exp(x_iᵀx_j), unscaled (paper, mmcv)
    (dict(mode="gaussian", use_scale=True), 1 / 32**0.5),  # forced: it compares raw inputs, d = C
    (dict(reduction=4), 1 / 8**0.5),
    (dict(use_scale=False), 1.0),  # the paper's unscaled softmax
])
def test_softmax_scale_follows_the_query_width(kwargs, scale):
    assert NonLocalBlock(32, **kwargs).scale == pytest.approx(scale)


def test_nonlocal_exports_with_dynamic_batch():
    # MLflow logs models through torch.export: the block must trace with a symbolic batch size.
    block = NonLocalBlock(4, dim=3, temporal_group=2, sub_sample=True).eval()
    program = torch.export.export(block, (torch.randn(2, 4, 4, 4, 4),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch", min=2)}})
    x = torch.randn(3, 4, 4, 4, 4)
    torch.testing.assert_close(program.module()(x), block(x))  # block(x) eager: the chunked kernel
    assert "scaled_dot_product" in program.graph_module.code  # "auto" exported the fused SDPA op
