"""make_block / BLOCKS: every registered kind and dim keeps the shape and passes gradients; errors name the choices."""

import pytest
import torch

from modules.blocks import BLOCKS, make_block

# Dims each family supports; a kind registered later is tested in 2D until it is listed here.
DIMS = {"nonlocal": (1, 2, 3), "se": (2, 3)}
CASES = [(kind, dim) for kind in BLOCKS for dim in DIMS.get(kind, (2,))]
SPATIAL = {1: (6,), 2: (4, 6), 3: (2, 4, 6)}


@pytest.mark.parametrize(("kind", "dim"), CASES)
def test_block_keeps_shape_and_passes_gradients(kind, dim):
    torch.manual_seed(0)
    block = make_block(kind, 16, dim=dim)
    x = torch.randn(2, 16, *SPATIAL[dim], requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_blocks_are_found_by_class(kind):
    assert isinstance(make_block(kind, 16), BLOCKS[kind])


def test_unknown_kind_names_valid_kinds():
    with pytest.raises(ValueError, match=r"unknown block kind 'cbam'; valid kinds: \[.*'nonlocal'.*'se'.*\]"):
        make_block("cbam", 16)


@pytest.mark.parametrize(("kind", "keyword"), [("nonlocal", "heads"), ("se", "mode")])
def test_unknown_keyword_names_accepted_keywords(kind, keyword):
    message = rf"block '{kind}' does not accept \['{keyword}'\]; accepted keywords: \[.*'reduction'"
    with pytest.raises(ValueError, match=message):
        make_block(kind, 16, **{keyword: 1})


@pytest.mark.parametrize(("kind", "kwargs", "message"), [
    ("nonlocal", dict(mode="gaussian_kernel"), r"mode must be one of \['embedded_gaussian', 'gaussian'"),
    ("se", dict(excitation="softmax"), r"excitation must be one of \['sigmoid', 'tanh', 'relu'\]"),
    ("se", dict(reduction=-2), r"reduction must be a positive int"),
])
def test_bad_values_name_allowed_values(kind, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_block(kind, 16, **kwargs)


def test_family_keywords_reach_the_block():
    block = make_block("nonlocal", 16, dim=3, mode="dot_product", reduction=4, sub_sample=True)
    assert (block.mode, block.dim, block.g.out_channels) == ("dot_product", 3, 4)
    assert make_block("se", 64, reduction=8).gate[0].out_channels == 8
