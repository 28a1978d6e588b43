"""Chunked softmax attention: SDPA's values and gradients in float32, through oneDNN's product on this CPU."""

import pytest
import torch
import torch.nn.functional as F

from modules.blocks import chunked_attention
from modules.blocks.chunked_attention import chunked_softmax_attention
from modules.blocks.non_local import NonLocalBlock


def sdpa_reference(query, key, value, scale):
    if value.shape[-1] != query.shape[-1]:  # the math kernel takes any value width
        with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
            return F.scaled_dot_product_attention(query, key, value, scale=scale)
    return F.scaled_dot_product_attention(query, key, value, scale=scale)


@pytest.mark.parametrize(("rows", "keys", "width", "value_width", "chunk"), [
    (37, 37, 16, 16, 8),  # blocks of 8 with a short last block
    (50, 13, 24, 8, 64),  # one block; fewer keys than queries; value narrower than query (Gaussian mode)
    (64, 96, 8, 8, 16),
])
def test_chunked_attention_matches_sdpa_in_float32(rows, keys, width, value_width, chunk):
    torch.manual_seed(0)
    query = torch.randn(3, rows, width, requires_grad=True)
    key = torch.randn(3, keys, width, requires_grad=True)
    value = torch.randn(3, keys, value_width, requires_grad=True)
    scale = width**-0.5
    grad = torch.randn(3, rows, value_width)
    ours = chunked_softmax_attention(query, key, value, scale, chunk)
    expected = sdpa_reference(query, key, value, scale)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    for ours_grad, expected_grad in zip(torch.autograd.grad(ours, (query, key, value), grad),
                                        torch.autograd.grad(expected, (query, key, value), grad)):
        torch.testing.assert_close(ours_grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_chunked_attention_passes_gradcheck_in_float64():
    torch.manual_seed(0)
    inputs = [torch.randn(2, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda q, k, v: chunked_softmax_attention(q, k, v, 0.5, 3), inputs)


def test_cpu_float32_products_run_on_onednn():
    # The speed of the chunked kernel is oneDNN's: the x86-64 torch build this project pins ships it.
    assert chunked_attention._ONEDNN
    a, b = torch.randn(33, 17), torch.randn(21, 17)
    torch.testing.assert_close(chunked_attention._matmul_transposed(a, b), a @ b.T)


def test_without_the_private_onednn_op_the_kernel_falls_back_to_matmul(monkeypatch):
    """`torch.ops.mkldnn._linear_pointwise` is private: were a torch upgrade to drop it, the kernel
    must still give SDPA's values through a plain product (the test above then flags the lost speed)."""
    monkeypatch.setattr(chunked_attention, "_ONEDNN", False)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", None, raising=False)  # any call would fail
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 37, 16, requires_grad=True) for _ in range(3))
    ours = chunked_softmax_attention(query, key, value, 0.25, 8)
    expected = sdpa_reference(query, key, value, 0.25)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    for ours_grad, expected_grad in zip(torch.autograd.grad(ours.sum(), (query, key, value)),
                                        torch.autograd.grad(expected.sum(), (query, key, value))):
        torch.testing.assert_close(ours_grad, expected_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("kernel", "dtype", "fused_op"), [
    ("auto", torch.float32, False), ("auto", torch.float64, True), ("sdpa", torch.float32, True),
    ("chunked", torch.float64, False),
])
def test_auto_kernel_picks_chunked_for_cpu_float32(kernel, dtype, fused_op):
    block = NonLocalBlock(8, dim=2, attention_kernel=kernel).to(dtype)
    x = torch.randn(2, 8, 4, 4, dtype=dtype)
    with torch.profiler.profile() as profiler:
        block(x)
    names = {event.name for event in profiler.events()}
    assert any("scaled_dot_product" in name for name in names) == fused_op
