"""Softmax attention in query chunks: flash-attention's algorithm on oneDNN matrix products, fp32 or bf16.

    y = softmax(scale · q kᵀ) v        for q (S, n, d), k (S, m, d), v (S, m, dv)

Forward keeps one (chunk, m) block of logits at a time and saves only y and the row log-sum-exp; backward
recomputes each block's probabilities from them (Dao et al., *FlashAttention*, NeurIPS 2022, §3.1 and
Alg. 4), so no (n, m) tensor is ever held — the memory contract of ``F.scaled_dot_product_attention``.

Why not always SDPA on the CPU: PyTorch's fused CPU kernel builds on MKL's sgemm, which on AMD processors
runs its AVX2 code path; oneDNN's matrix product (``torch.ops.mkldnn._linear_pointwise``) picks its kernel
by instruction set. Measured on a 2-core AMD EPYC (Zen 5): 400-510 GFLOP/s against MKL's 180-220 for the
block's shapes. On an Intel Xeon MKL is fast and SDPA won — so nothing here is a vendor guess: the products
run on oneDNN or through torch's matmul (PRODUCTS), and the Non-local block's ``auto`` kernel times this
kernel at each chunk size and product against SDPA on first use (modules/autotune.py).

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
CHUNKS = (128, 512)  # sizes the Non-local block's kernel choice times: 512 × 6272 fp32 logits = 12 MiB


def _onednn_available():
    # A private op: a torch upgrade may drop it or change its signature; then a @ bᵀ serves (slower on
    # AMD), and tests/modules/test_chunked_attention.py fails so that the loss is noticed.
    try:
        torch.ops.mkldnn._linear_pointwise(torch.ones(1, 1), torch.ones(1, 1), None, "none", [], "")
    except (AttributeError, RuntimeError, TypeError):
        return False
    return True


_ONEDNN = torch.backends.mkldnn.is_available() and _onednn_available()
_ONEDNN_DTYPES = {torch.float32} | ({torch.bfloat16} if _ONEDNN and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                                   else set())


def _onednn_product(a, b):
    """a (r, k) x b (c, k)ᵀ -> (r, c) on oneDNN's linear for CPU fp32 (and bf16 where oneDNN has bf16
    kernels): its kernel is picked by instruction set, on any vendor's CPU."""
    if _ONEDNN and a.device.type == "cpu" and a.dtype in _ONEDNN_DTYPES:
        return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    return a @ b.transpose(0, 1)


def _aten_product(a, b):
    """a (r, k) x b (c, k)ᵀ -> (r, c) through torch's matmul: MKL's sgemm for CPU fp32, cuBLAS on GPUs."""
    return a @ b.transpose(0, 1)


# Which library multiplies: oneDNN beat MKL's AVX2 path on AMD; MKL may win on Intel. Measured, not guessed.
PRODUCTS = {"onednn": _onednn_product, "aten": _aten_product}
DEFAULT_PRODUCT = "onednn"


def products_for(device, dtype):
    """The PRODUCTS that differ for tensors of ``dtype`` on ``device``: oneDNN only applies to CPU fp32/bf16."""
    onednn = _ONEDNN and torch.device(device).type == "cpu" and dtype in _ONEDNN_DTYPES
    return list(PRODUCTS) if onednn else ["aten"]


def _accumulation_dtype(dtype):
    """fp32 for bf16/fp16 operands; fp32 and fp64 stay themselves."""
    return torch.promote_types(dtype, torch.float32)


class ChunkedSoftmaxAttention(torch.autograd.Function):
    """``apply(q, k, v, scale, chunk, product)`` -> (S, n, dv) in q's dtype. Not twice differentiable."""

    @staticmethod
    def forward(ctx, query, key, value, scale, chunk, product):
        multiply = PRODUCTS[product]
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
                    logits = multiply(query[sequence, block].to(accumulate) * scale, key_wide)  # (c, d) x (m, d)ᵀ -> (c, m)
                    normaliser = torch.logsumexp(logits, dim=-1, keepdim=True)  # (c, 1)
                    probabilities = logits.sub_(normaliser).exp_()  # in place: the only (c, m) buffer in fp32
                    output[sequence, block] = multiply(probabilities.to(query.dtype), value_t)  # (c, m) x (dv, m)ᵀ -> (c, dv)
                    log_normaliser[sequence, block] = normaliser.squeeze(-1)
        ctx.save_for_backward(query, key, value, output, log_normaliser)
        ctx.scale, ctx.chunk, ctx.product = scale, chunk, product
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        query, key, value, output, log_normaliser = ctx.saved_tensors
        scale, chunk, dtype, multiply = ctx.scale, ctx.chunk, query.dtype, PRODUCTS[ctx.product]
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
                    probabilities = multiply(scaled_query, key_wide)  # (c, d) x (m, d)ᵀ -> (c, m)
                    probabilities.sub_(log_normaliser[sequence, block, None]).exp_()
                    grad_block = grad_output[sequence, block]  # (c, dv)
                    # dV and dK add one product per query block: fp32 products, or each partial sum's bf16
                    # rounding would add up over the n / chunk blocks
                    grad_value_t += multiply(grad_block.t().to(accumulate).contiguous(), probabilities.t())  # (dv, c) x (m, c)ᵀ -> (dv, m)
                    grad_logits = multiply(grad_block, value[sequence]).to(accumulate)  # dP: (c, dv) x (m, dv)ᵀ -> (c, m)
                    grad_logits.sub_(delta[sequence, block, None]).mul_(probabilities)  # dS, in place
                    grad_query[sequence, block] = multiply(grad_logits.to(dtype), key_t).mul_(scale)  # (c, m) x (d, m)ᵀ -> (c, d)
                    grad_key_t += multiply(scaled_query.t().contiguous(), grad_logits.t())  # (d, c) x (m, c)ᵀ -> (d, m)
                grad_key[sequence], grad_value[sequence] = grad_key_t.t(), grad_value_t.t()
        return grad_query, grad_key, grad_value, None, None, None


def chunked_softmax_attention(query, key, value, scale, chunk=None, product=DEFAULT_PRODUCT):
    """softmax(scale · q kᵀ) v for q (S, n, d), k (S, m, d), v (S, m, dv), in blocks of ``chunk`` query rows,
    the matrix products by ``product`` (a key of PRODUCTS).

    q, k and v must share one dtype: fp32, fp64, or bf16/fp16 (products in that dtype, sums in fp32).
    """
    if not query.dtype == key.dtype == value.dtype:
        raise ValueError(f"chunked_softmax_attention: q, k and v need one dtype, got "
                         f"{query.dtype}, {key.dtype}, {value.dtype}")
    if product not in PRODUCTS:
        raise ValueError(f"chunked_softmax_attention: product must be one of {list(PRODUCTS)}, got {product!r}")
    return ChunkedSoftmaxAttention.apply(query, key, value, scale, chunk or DEFAULT_CHUNK, product)
