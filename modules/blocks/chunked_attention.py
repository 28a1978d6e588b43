"""Softmax attention in query chunks: flash-attention's algorithm on oneDNN matrix products, fp32 or bf16.

    y = softmax(scale · q kᵀ) v        for q (S, n, d), k (S, m, d), v (S, m, dv)

Forward keeps one (chunk, m) block of logits at a time and saves only y and the row log-sum-exp; backward
recomputes each block's probabilities from them (Dao et al., *FlashAttention*, NeurIPS 2022, §3.1 and
Alg. 4), so no (n, m) tensor is ever held — the memory contract of ``F.scaled_dot_product_attention``.

Why not always SDPA on the CPU: PyTorch's fused CPU kernel builds on MKL's sgemm, which on AMD processors
runs its AVX2 code path; oneDNN's matrix product (``torch.ops.mkldnn._linear_pointwise``) picks its kernel
by instruction set. Measured on a 2-core AMD EPYC (Zen 5): 400-510 GFLOP/s against MKL's 180-220 for the
block's shapes. On an Intel Xeon MKL is fast and SDPA wins — so the Non-local block does not guess: its
``auto`` kernel times this kernel (at several chunk sizes) against SDPA on first use (modules/autotune.py).

Reduced precision (bf16/fp16 inputs, e.g. under ``bf16-mixed`` autocast): torch's CPU matrix products
return their operands' dtype (no fp32 result from bf16 operands), so every product whose result is summed
further runs in fp32 — the logits q·kᵀ (bf16 logits, |logit|·2⁻⁹ off each, doubled the output's error
against an fp64 reference) and the k/v gradients, which add one product per query block (their bf16
roundings would add up). P·v, dP = dO·vᵀ and dq = dS·k, each one product summing all its terms at once,
take bf16 operands on oneDNN's AVX512-BF16 / AMX kernels (fp32 accumulation inside). Softmax statistics,
probabilities, δ = Σ dO·O and dS = P∘(dP − δ) are fp32, as in FlashAttention on GPUs. The output's and
gradients' errors then match SDPA's bf16 kernel's (tests/modules/test_chunked_attention.py) — at the cost
of bf16 speed in four of the seven products, so in bf16 the measured choice usually lands on SDPA.
"""

import torch
from torch.autograd.function import once_differentiable

DEFAULT_CHUNK = 256  # query rows per block when nothing is measured (inside torch.compile tracing)
CHUNKS = (128, 256, 1024)  # sizes the Non-local block's kernel choice times: 256 × 6272 fp32 logits = 6 MiB


def _onednn_available():
    try:
        torch.ops.mkldnn._linear_pointwise(torch.ones(1, 1), torch.ones(1, 1), None, "none", [], "")
    except (AttributeError, RuntimeError):
        return False
    return True


_ONEDNN = torch.backends.mkldnn.is_available() and _onednn_available()
_ONEDNN_DTYPES = {torch.float32} | ({torch.bfloat16} if _ONEDNN and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                                   else set())


def _matmul_transposed(a, b):
    """a (r, k) x b (c, k)ᵀ -> (r, c): oneDNN's linear on the CPU for fp32 (and bf16 where oneDNN has
    bf16 kernels), ``a @ bᵀ`` otherwise."""
    if _ONEDNN and a.device.type == "cpu" and a.dtype in _ONEDNN_DTYPES:
        return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    return a @ b.transpose(0, 1)


def _accumulation_dtype(dtype):
    """fp32 for bf16/fp16 operands; fp32 and fp64 stay themselves."""
    return torch.promote_types(dtype, torch.float32)


class ChunkedSoftmaxAttention(torch.autograd.Function):
    """``apply(q, k, v, scale, chunk)`` -> (S, n, dv) in q's dtype. Not twice differentiable."""

    @staticmethod
    def forward(ctx, query, key, value, scale, chunk):
        accumulate = _accumulation_dtype(query.dtype)
        rows = query.shape[1]
        output = query.new_empty(*query.shape[:2], value.shape[-1])  # (S, n, dv)
        log_normaliser = query.new_empty(query.shape[:2], dtype=accumulate)  # (S, n): log Σ_j exp(scale · q_i·k_j)
        with torch.autocast(query.device.type, enabled=False):  # dtypes are chosen here, not by autocast
            for sequence in range(query.shape[0]):
                value_t = value[sequence].t().contiguous()  # (m, dv) -> (dv, m)
                key_wide = key[sequence].to(accumulate)  # (m, d); no copy in fp32
                for start in range(0, rows, chunk):
                    block = slice(start, start + chunk)
                    # fp32 product: logits rounded to bf16 would double the output's error (|logit|·2⁻⁹ each)
                    logits = _matmul_transposed(query[sequence, block].to(accumulate) * scale, key_wide)  # (c, d) x (m, d)ᵀ -> (c, m)
                    normaliser = torch.logsumexp(logits, dim=-1, keepdim=True)  # (c, 1)
                    probabilities = logits.sub_(normaliser).exp_()  # in place: the only (c, m) buffer in fp32
                    output[sequence, block] = _matmul_transposed(probabilities.to(query.dtype), value_t)  # (c, m) x (dv, m)ᵀ -> (c, dv)
                    log_normaliser[sequence, block] = normaliser.squeeze(-1)
        ctx.save_for_backward(query, key, value, output, log_normaliser)
        ctx.scale, ctx.chunk = scale, chunk
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        query, key, value, output, log_normaliser = ctx.saved_tensors
        scale, chunk, dtype = ctx.scale, ctx.chunk, query.dtype
        accumulate = log_normaliser.dtype
        with torch.autocast(query.device.type, enabled=False):
            grad_output = grad_output.to(dtype).contiguous()
            # dL/dlogits = P ∘ (dP − δ) with δ_i = Σ_j P_ij dP_ij = dO_i · O_i (FlashAttention eq. in App. B.2)
            delta = (grad_output.to(accumulate) * output.to(accumulate)).sum(-1)  # (S, n, dv) -> (S, n)
            grad_query = torch.empty_like(query)
            grad_key, grad_value = torch.empty_like(key), torch.empty_like(value)
            for sequence in range(query.shape[0]):
                key_t = key[sequence].t().contiguous()  # (m, d) -> (d, m)
                key_wide = key[sequence].to(accumulate)  # (m, d): logits in fp32, as in the forward
                grad_key_t = key.new_zeros(key_t.shape, dtype=accumulate)  # (d, m): summed over query blocks
                grad_value_t = value.new_zeros(value.shape[-1], value.shape[1], dtype=accumulate)  # (dv, m)
                for start in range(0, query.shape[1], chunk):
                    block = slice(start, start + chunk)
                    scaled_query = query[sequence, block].to(accumulate) * scale  # (c, d)
                    probabilities = _matmul_transposed(scaled_query, key_wide)  # (c, d) x (m, d)ᵀ -> (c, m)
                    probabilities.sub_(log_normaliser[sequence, block, None]).exp_()
                    grad_block = grad_output[sequence, block]  # (c, dv)
                    # dV and dK add one product per query block: fp32 products, or each partial sum's bf16
                    # rounding would add up over the n / chunk blocks
                    grad_value_t += _matmul_transposed(grad_block.t().to(accumulate).contiguous(), probabilities.t())  # (dv, c) x (m, c)ᵀ -> (dv, m)
                    grad_logits = _matmul_transposed(grad_block, value[sequence]).to(accumulate)  # dP: (c, dv) x (m, dv)ᵀ -> (c, m)
                    grad_logits.sub_(delta[sequence, block, None]).mul_(probabilities)  # dS, in place
                    grad_query[sequence, block] = _matmul_transposed(grad_logits.to(dtype), key_t).mul_(scale)  # (c, m) x (d, m)ᵀ -> (c, d)
                    grad_key_t += _matmul_transposed(scaled_query.t().contiguous(), grad_logits.t())  # (d, c) x (m, c)ᵀ -> (d, m)
                grad_key[sequence], grad_value[sequence] = grad_key_t.t(), grad_value_t.t()
        return grad_query, grad_key, grad_value, None, None


def chunked_softmax_attention(query, key, value, scale, chunk=None):
    """softmax(scale · q kᵀ) v for q (S, n, d), k (S, m, d), v (S, m, dv), in blocks of ``chunk`` query rows.

    q, k and v must share one dtype: fp32, fp64, or bf16/fp16 (products in that dtype, sums in fp32).
    """
    if not query.dtype == key.dtype == value.dtype:
        raise ValueError(f"chunked_softmax_attention: q, k and v need one dtype, got "
                         f"{query.dtype}, {key.dtype}, {value.dtype}")
    return ChunkedSoftmaxAttention.apply(query, key, value, scale, chunk or DEFAULT_CHUNK)
