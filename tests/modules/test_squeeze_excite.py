"""Squeeze-and-Excitation: the paper's formula for every squeeze/excitation, the gate hook, parameter counts, errors."""

import pytest
import torch

from modules.blocks.squeeze_excite import SE_INTEGRATIONS, SqueezeExcite

SQUEEZES = {"avg": lambda x: x.flatten(2).mean(-1), "max": lambda x: x.flatten(2).amax(-1)}
EXCITATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


def paper_se(block, x, squeeze, excitation):
    """out = x ⊙ σ(W_2 δ(W_1 z) + b), z = squeeze(x) (eqs. 2-4), written with einsum."""
    first, second = block.gate[0], block.gate[2]
    z = SQUEEZES[squeeze](x)  # (B, C, *S) -> (B, C)
    hidden = torch.relu(torch.einsum("hc,bc->bh", first.weight.flatten(1), z) + first.bias)  # (B, C/r)
    scale = EXCITATIONS[excitation](torch.einsum("ch,bh->bc", second.weight.flatten(1), hidden) + second.bias)
    return x * scale.reshape(*scale.shape, *[1] * (x.dim() - 2))  # (B, C) -> (B, C, 1, ...)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("squeeze", list(SQUEEZES))
@pytest.mark.parametrize("excitation", list(EXCITATIONS))
def test_se_matches_paper_formula(dim, squeeze, excitation):
    torch.manual_seed(0)
    block = SqueezeExcite(32, dim=dim, reduction=4, squeeze=squeeze, excitation=excitation).double()
    x = torch.randn(2, 32, *[3] * dim, dtype=torch.float64)
    torch.testing.assert_close(block(x), paper_se(block, x, squeeze, excitation))


@pytest.mark.parametrize("dim", [2, 3])
def test_gate_hook_records_the_per_channel_scale(dim):
    block = SqueezeExcite(16, dim=dim, reduction=4)
    x = torch.randn(2, 16, *[4] * dim)
    recorded = []
    block.gate.register_forward_hook(lambda module, inputs, output: recorded.append(output))
    out = block(x)
    assert recorded[0].shape == (2, 16, *[1] * dim)
    torch.testing.assert_close(out, x * recorded[0])


@pytest.mark.parametrize(("channels", "reduction", "expected"), [
    (256, 16, 2 * 256 * 16 + 16 + 256),  # two FC layers with bias: C·C/r + C/r + C/r·C + C
    (2048, 16, 2 * 2048 * 128 + 128 + 2048),
    (8, 16, 8 + 1 + 8 + 8),  # hidden width clamped to 1
])
def test_se_parameter_count(channels, reduction, expected):
    block = SqueezeExcite(channels, reduction=reduction)
    assert sum(p.numel() for p in block.parameters()) == expected


def test_se_resnet50_adds_the_papers_parameters():
    # ResNet-50 (25,557,032) + SE in all 16 bottlenecks (r = 16) = 28,088,024 (the backbones test checks the total).
    stage_widths_and_depths = [(256, 3), (512, 4), (1024, 6), (2048, 3)]
    with torch.device("meta"):
        added = sum(depth * sum(p.numel() for p in SqueezeExcite(width).parameters())
                    for width, depth in stage_widths_and_depths)
    assert 25_557_032 + added == 28_088_024


def test_integration_names_are_the_papers():
    assert SE_INTEGRATIONS == ("standard", "pre", "post", "identity")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(squeeze="mean"), r"squeeze must be one of \['avg', 'max'\], got 'mean'"),
    (dict(excitation="gelu"), r"excitation must be one of \['sigmoid', 'tanh', 'relu'\], got 'gelu'"),
    (dict(dim=1), r"dim must be one of \[2, 3\], got 1"),
    (dict(reduction=0), r"reduction must be a positive int, got 0"),
    (dict(reduction=1.5), r"reduction must be a positive int, got 1.5"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SqueezeExcite(16, **kwargs)


def test_wrong_input_shape_raises_value_error():
    with pytest.raises(ValueError, match=r"expects input of 5 axes \(B, 16, ...\), got shape \(2, 16, 4, 4\)"):
        SqueezeExcite(16, dim=3)(torch.randn(2, 16, 4, 4))
