"""from_conv: a quadratic multi-head self-attention layer equals a K×K convolution at every pixel (Theorem 1)."""

import math

import pytest
import torch
from torch import nn

from modules.blocks.self_attention import FROM_CONV_SHARPNESS, SelfAttention2d, from_conv


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/modules/conftest.py


RELATIVE_TOLERANCE = 1e-5  # max |attention − conv| over every output pixel, relative to max |conv|, float64


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("in_channels, out_channels", [(4, 7), (8, 3), (6, 6)])
def test_from_conv_equals_zero_padded_conv_at_every_pixel(kernel_size, bias, in_channels, out_channels):
    torch.manual_seed(kernel_size * 100 + in_channels * 10 + out_channels)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias).double()
    layer = from_conv(conv)
    x = torch.randn(2, in_channels, 11, 13, dtype=torch.float64)

    with torch.no_grad():
        expected, actual = conv(x), layer(x)

    assert actual.shape == expected.shape == (2, out_channels, 11, 13)
    error = relative_error(actual, expected)  # over all pixels: the K//2-wide border included
    assert error <= RELATIVE_TOLERANCE, f"relative error {error:.2e} > {RELATIVE_TOLERANCE:.0e} (α = {FROM_CONV_SHARPNESS})"


def test_from_conv_accepts_same_padding():
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 5, 3, padding="same", bias=False).double()
    x = torch.randn(1, 6, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(from_conv(conv)(x), conv(x)) <= RELATIVE_TOLERANCE


def test_padding_keys_are_zero_valued_pixels_that_make_the_borders_exact():
    """The conv's zero padding enters as keys: a corner query of the head centred at (−1, −1) puts all its
    weight on the padded key up-left of the image, which contributes 0. Without those keys (padding=0,
    same weights) the same head spreads over image pixels and the border pixels differ from the conv."""
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    layer = from_conv(conv)
    x = torch.randn(1, 3, 6, 7, dtype=torch.float64)

    probabilities = layer.attention_probabilities(x, [(0, 0)])  # (1, 9, 1, 8, 9): the key grid has a ring of padding
    assert probabilities.shape == (1, 9, 1, 8, 9)
    assert probabilities[0, 0, 0, 0, 0].item() == pytest.approx(1.0, abs=1e-12)  # head 0: tap (−1, −1)

    unpadded = SelfAttention2d(3, heads=9, head_dim=3, out_channels=4).double()
    unpadded.load_state_dict(layer.state_dict())  # same parameters, keys = image pixels only
    with torch.no_grad():
        expected, without_padding = conv(x), unpadded(x)
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert relative_error(without_padding[interior], expected[interior]) <= RELATIVE_TOLERANCE
    assert relative_error(without_padding, expected) > 1e-2


def test_from_conv_heads_attend_to_kernel_taps():
    conv = nn.Conv2d(4, 4, 5, padding=2)
    layer = from_conv(conv)

    readout = layer.attention_centres()
    taps = torch.tensor([(i - 2, j - 2) for i in range(5) for j in range(5)], dtype=torch.float32)
    assert layer.heads == 25 and layer.padding == 2
    assert torch.equal(readout["centres"], taps)
    assert torch.allclose(readout["spread"], torch.full((25,), 1 / math.sqrt(FROM_CONV_SHARPNESS)))

    query = (4, 5)
    probabilities = layer.attention_probabilities(torch.randn(1, 4, 9, 10), [query])  # (1, 25, 1, 13, 14)
    for head, (d_row, d_col) in enumerate(taps.long().tolist()):
        target = probabilities[0, head, 0, 2 + query[0] + d_row, 2 + query[1] + d_col].item()  # +2: padded grid
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
