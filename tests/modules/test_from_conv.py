"""from_conv: a quadratic multi-head self-attention layer equals a K×K convolution (Theorem 1)."""

import math

import pytest
import torch
from torch import nn

from modules.blocks.self_attention import FROM_CONV_SHARPNESS, from_conv


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/modules/conftest.py


TOLERANCE = 1e-4  # max abs difference on interior pixels, with the default α = FROM_CONV_SHARPNESS (40)


def interior(tensor: torch.Tensor, radius: int) -> torch.Tensor:
    return tensor[..., radius:-radius, radius:-radius]


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("in_channels, out_channels", [(4, 4), (8, 8), (12, 12), (4, 7), (8, 3)])
def test_from_conv_equals_conv_on_interior_pixels(kernel_size, in_channels, out_channels):
    torch.manual_seed(kernel_size * 100 + in_channels * 10 + out_channels)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    layer = from_conv(conv)
    x = torch.randn(2, in_channels, 11, 13)

    with torch.no_grad():
        expected, actual = conv(x), layer(x)

    assert actual.shape == expected.shape
    radius = kernel_size // 2
    error = (interior(actual, radius) - interior(expected, radius)).abs().max().item()
    assert error <= TOLERANCE, f"max interior error {error:.2e} > {TOLERANCE:.0e} (α = {FROM_CONV_SHARPNESS})"


def test_from_conv_without_bias_and_with_same_padding():
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 5, 3, padding="same", bias=False)
    layer = from_conv(conv)
    x = torch.randn(1, 6, 9, 9)
    with torch.no_grad():
        assert torch.allclose(interior(layer(x), 1), interior(conv(x), 1), atol=TOLERANCE)


def test_from_conv_heads_attend_to_kernel_taps():
    conv = nn.Conv2d(4, 4, 5, padding=2)
    layer = from_conv(conv)

    readout = layer.attention_centres()
    taps = torch.tensor([(i - 2, j - 2) for i in range(5) for j in range(5)], dtype=torch.float32)
    assert layer.heads == 25
    assert torch.equal(readout["centres"], taps)
    assert torch.allclose(readout["spread"], torch.full((25,), 1 / math.sqrt(FROM_CONV_SHARPNESS)))

    query = (4, 5)
    probabilities = layer.attention_probabilities(torch.randn(1, 4, 9, 10), [query])  # (1, 25, 1, 9, 10)
    for head, (d_row, d_col) in enumerate(taps.long().tolist()):
        target = probabilities[0, head, 0, query[0] + d_row, query[1] + d_col].item()
        assert target == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "conv, reason",
    [
        (nn.Conv2d(4, 4, 3, padding=1, stride=2), "stride"),
        (nn.Conv2d(4, 4, 4, padding=2), "kernel_size"),
        (nn.Conv2d(4, 4, 3, padding=1, groups=2), "groups"),
        (nn.Conv2d(4, 4, 3, padding=0), "padding"),
        (nn.Conv2d(4, 4, 3, padding=2, dilation=2), "dilation"),
        (nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), "padding_mode"),
        (nn.Conv1d(4, 4, 3, padding=1), "nn.Conv2d"),
    ],
)
def test_from_conv_rejects_convolutions_it_cannot_express(conv, reason):
    with pytest.raises(ValueError, match=reason):
        from_conv(conv)
