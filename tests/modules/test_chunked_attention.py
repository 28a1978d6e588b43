"""Chunked softmax attention: SDPA's values and gradients in float32 (oneDNN's product on this CPU), SDPA's
accuracy in bfloat16, and the Non-local block's measured choice between it and SDPA."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from modules import autotune
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


def test_cpu_products_offer_onednn_and_torch_matmul_with_equal_results():
    # Two libraries to measure between on CPU fp32/bf16 (the x86-64 torch build this project pins ships
    # oneDNN); one elsewhere, where oneDNN's linear does not apply.
    assert chunked_attention._ONEDNN
    assert chunked_attention.products_for("cpu", torch.float32) == ["onednn", "aten"]
    assert chunked_attention.products_for("cpu", torch.float64) == ["aten"]
    a, b = torch.randn(33, 17), torch.randn(21, 17)
    for product in chunked_attention.PRODUCTS.values():
        torch.testing.assert_close(product(a, b), a @ b.T)
    query = torch.randn(2, 40, 8, requires_grad=True)
    outputs = [chunked_softmax_attention(query, query, query, 0.3, 16, product) for product in ("onednn", "aten")]
    torch.testing.assert_close(*outputs)
    with pytest.raises(ValueError, match=r"product must be one of \['onednn', 'aten'\]"):
        chunked_softmax_attention(query, query, query, 0.3, 16, "mkl")


@pytest.mark.parametrize("spread", [1.0, 3.0])  # logits of std 1 and 9
def test_chunked_attention_in_bfloat16_is_as_accurate_as_sdpa(spread):
    # Against an fp64 reference, output and gradients are as close as SDPA's bf16 kernel's (fp32 logits and
    # softmax statistics, fp32 products where partial sums add up); bf16 logits had doubled the error.
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 300, 32, dtype=torch.float64) * factor for factor in (spread, spread, 1))
    grad = torch.randn(2, 300, 32, dtype=torch.float64)
    scale = 32**-0.5

    def errors(attention, dtype):
        inputs = [t.to(dtype).requires_grad_() for t in (query, key, value)]
        output = attention(*inputs)
        return [output, *torch.autograd.grad(output, inputs, grad.to(dtype))]

    def sdpa(q, k, v):
        return sdpa_reference(q[:, None], k[:, None], v[:, None], scale)[:, 0]

    exact = errors(sdpa, torch.float64)
    ours = errors(lambda q, k, v: chunked_softmax_attention(q, k, v, scale, 64), torch.bfloat16)
    fused = errors(sdpa, torch.bfloat16)
    for name, mine, theirs, reference in zip(("output", "dq", "dk", "dv"), ours, fused, exact):
        assert mine.dtype == torch.bfloat16
        mine_error = (mine.double() - reference).abs().max() / reference.abs().max()
        sdpa_error = (theirs.double() - reference).abs().max() / reference.abs().max()
        assert mine_error <= 1.5 * sdpa_error + 1e-3, name


def test_chunked_attention_rejects_mixed_dtypes():
    query = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="q, k and v need one dtype"):
        chunked_softmax_attention(query, query.bfloat16(), query, 1.0)


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


def _ran_fused_sdpa(block, x):
    with torch.profiler.profile() as profiler:
        block(x)
    return any("scaled_dot_product" in event.name for event in profiler.events())


CHUNKED = ["chunked-128-aten", "chunked-128-onednn", "chunked-512-aten", "chunked-512-onednn"]


@pytest.mark.parametrize(("fastest", "fused_op"), [("sdpa", True), ("chunked-128-onednn", False),
                                                   ("chunked-512-aten", False)])
def test_auto_kernel_runs_the_kernel_measured_fastest(fastest, fused_op, monkeypatch):
    # The timings are given (a real measurement's winner depends on the machine): auto must run the winner.
    timed = []

    def timings(candidates, device, repeats=3):
        timed.append(sorted(candidates))
        return {name: 0.001 if name == fastest else 0.002 for name in candidates}

    monkeypatch.setattr(autotune, "time_candidates", timings)
    autotune.forget()
    block = NonLocalBlock(8, dim=2)
    x = torch.randn(2, 8, 4, 4)
    assert _ran_fused_sdpa(block, x) == fused_op
    assert timed == [[*CHUNKED, "sdpa"]]
    assert _ran_fused_sdpa(block, x) == fused_op and len(timed) == 1  # measured once, then remembered


def test_chunked_kernel_measures_its_block_size_only(monkeypatch):
    timed = []
    monkeypatch.setattr(autotune, "time_candidates",
                        lambda candidates, device, repeats=3: timed.append(sorted(candidates)) or
                        dict.fromkeys(candidates, 0.001))
    autotune.forget()
    block = NonLocalBlock(8, dim=2, attention_kernel="chunked")
    assert not _ran_fused_sdpa(block, torch.randn(2, 8, 4, 4))
    assert timed == [CHUNKED]


def test_auto_kernel_times_forward_and_backward_separately_from_inference(monkeypatch):
    keys = []
    real_choose = autotune.choose
    monkeypatch.setattr(autotune, "choose", lambda topic, key, *args, **kw: keys.append(key) or
                        real_choose(topic, key, *args, **kw))
    autotune.forget()
    block = NonLocalBlock(8, dim=2)
    x = torch.randn(2, 8, 6, 4)
    block(x).sum().backward()
    with torch.no_grad():
        block(x)
    assert [key["backward"] for key in keys] == [True, False]
    assert keys[0] | {"backward": False} == keys[1]
    assert keys[0]["n"] == keys[0]["m"] == 24 and keys[0]["dtype"] == "float32"


def test_bfloat16_autocast_block_matches_float32(monkeypatch):
    # Under bf16 autocast q/k/v share autocast's dtype (the Gaussian mode's q/k are the fp32 input, g's conv
    # gives bf16) and either kernel keeps the output within bf16 tolerance of the fp32 block.
    torch.manual_seed(0)
    for mode in ("embedded_gaussian", "gaussian"):
        for kernel in ("sdpa", "chunked"):
            block = NonLocalBlock(16, dim=2, mode=mode, attention_kernel=kernel)
            torch.nn.init.normal_(block.norm.weight)
            x = torch.randn(2, 16, 6, 6) * 0.5
            expected = block(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                output = block(x)
            torch.testing.assert_close(output.float(), expected, rtol=2e-2, atol=2e-2)


class OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_under_a_dispatch_mode_auto_is_sdpa_and_measures_nothing(monkeypatch):
    # FLOP counters, shape recorders and fake tensors are dispatch modes: they see the one fused op, and no
    # timing runs inside them (torch.utils._python_dispatch.is_in_torch_dispatch_mode tells).
    def must_not_measure(candidates, device, repeats=3):
        raise AssertionError("measured inside a dispatch mode")

    monkeypatch.setattr(autotune, "time_candidates", must_not_measure)
    autotune.forget()
    block = NonLocalBlock(8, dim=2)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    with OpRecorder() as recorder:
        block(x).sum().backward()
    assert any("scaled_dot_product" in op for op in recorder.ops)
    assert not any("mkldnn._linear_pointwise" in op for op in recorder.ops)
