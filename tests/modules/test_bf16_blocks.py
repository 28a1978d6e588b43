"""Every block family under CPU bf16 autocast (how `precision: bf16-mixed` trains it) stays within bf16
tolerance of its fp32 self, in output and in the input's gradient: the products run in bf16, the sums
that need it (softmax statistics, pooling) in fp32."""

import pytest
import torch

from modules.blocks import BLOCKS, make_block

OPTIONS = {"nonlocal": {"mode": "embedded_gaussian"}, "se": {}, "selfattn": {"heads": 4}}
TOLERANCE = 2**-5  # max |bf16 − fp32| / max |fp32|: 8-bit mantissas, a few products and roundings deep


def relative_error(value, reference):
    return ((value.float() - reference).abs().max() / reference.abs().max()).item()


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_block_in_bfloat16_autocast_matches_float32(kind, single_thread):
    torch.manual_seed(0)
    block = make_block(kind, 16, **OPTIONS[kind])
    # Trained-like weights: Non-local's init (N(0, 0.01²) convs, zero output BN) makes the attention uniform
    # and its branch constant over positions, which BN then divides by a near-zero spread.
    for parameter in block.parameters():
        if parameter.dim() == 1:
            torch.nn.init.uniform_(parameter, 0.5, 1.5)
        else:
            torch.nn.init.normal_(parameter, std=parameter[0].numel() ** -0.5)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    expected = block(x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = block(x)
    (grad,) = torch.autograd.grad(output.float().square().sum(), x)
    assert relative_error(output, expected) <= TOLERANCE
    assert relative_error(grad, expected_grad) <= TOLERANCE
    assert output.dtype in (torch.bfloat16, torch.float32)
