"""SelfAttention2d: shapes, gradients, translation equivariance, readouts and errors."""

import pytest
import torch

from modules.blocks import make_block
from modules.blocks.self_attention import ENCODINGS, SelfAttention2d


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/modules/conftest.py


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_encoding_keeps_map_shape_and_passes_gradients(encoding):
    torch.manual_seed(0)
    layer = SelfAttention2d(16, heads=4, encoding=encoding)
    x = torch.randn(2, 16, 7, 9, requires_grad=True)

    out = layer(x)
    out.square().mean().backward()

    assert out.shape == x.shape
    assert x.grad.abs().sum() > 0
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, f"no gradient reaches {name}"


def reference_positional_scores(layer: SelfAttention2d, height: int, width: int) -> torch.Tensor:
    """Scores straight from the paper's definitions, one (query, key) pair at a time; with ``padding`` the
    keys run over the map and its rings of padding (rows/columns −p..size+p−1)."""
    encoding, pad = layer.encoding, layer.padding
    keys = [(row, col) for row in range(-pad, height + pad) for col in range(-pad, width + pad)]
    scores = torch.empty(layer.heads, height * width, len(keys))
    pixels = [(row, col) for row in range(height) for col in range(width)]
    for query, (query_row, query_col) in enumerate(pixels):
        for key, (key_row, key_col) in enumerate(keys):
            shift = torch.tensor([key_row - query_row, key_col - query_col], dtype=torch.float32)
            if layer.window is not None and shift.abs().max() > layer.window:
                scores[:, query, key] = float("-inf")
            elif layer.encoding_name == "quadratic":
                scores[:, query, key] = -encoding.sharpness * (shift - encoding.centres).square().sum(dim=1)
            elif layer.encoding_name == "quadratic_generalized":
                offset = shift - encoding.centres  # (heads, 2)
                scores[:, query, key] = -torch.einsum("hi,hij,hj->h", offset, encoding.precision, offset)
            else:
                row, col = int(shift[0]) + encoding.window, int(shift[1]) + encoding.window
                embedding = torch.cat([encoding.row_embedding[row], encoding.col_embedding[col]])  # r_δ, (D_p,)
                scores[:, query, key] = encoding.head_vectors @ embedding
    return scores


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("window, padding", [(None, 0), (2, 0), (2, 1), (None, 2)])
def test_positional_scores_follow_the_definitions(encoding, window, padding):
    torch.manual_seed(4)
    layer = SelfAttention2d(4, heads=3, encoding=encoding, window=window, padding=padding)
    with torch.no_grad():
        for parameter in layer.encoding.parameters():
            parameter.normal_()
        torch.testing.assert_close(layer.positional_scores(4, 5), reference_positional_scores(layer, 4, 5))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_relative_encodings_are_translation_equivariant_on_interior_pixels(encoding):
    # With a window w, the output at p only reads pixels within w of p. After a circular shift by s,
    # pixels p with s + w <= p < size - w see the same (unwrapped) neighbourhood as p - s did.
    torch.manual_seed(1)
    window, size, shift = 2, 12, (2, 3)
    layer = SelfAttention2d(8, heads=3, encoding=encoding, window=window).eval()
    x = torch.randn(2, 8, size, size)

    with torch.no_grad():
        out = layer(x)
        shifted_out = layer(torch.roll(x, shifts=shift, dims=(2, 3)))

    rows = slice(shift[0] + window, size - window)
    cols = slice(shift[1] + window, size - window)
    expected = torch.roll(out, shifts=shift, dims=(2, 3))[..., rows, cols]
    torch.testing.assert_close(shifted_out[..., rows, cols], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_attention_probabilities_reproduce_the_forward_pass(encoding):
    torch.manual_seed(2)
    layer = SelfAttention2d(6, heads=3, encoding=encoding, reduction=2).eval()
    x = torch.randn(2, 6, 5, 4)
    every_pixel = list(range(20))

    with torch.no_grad():
        probabilities = layer.attention_probabilities(x, every_pixel)  # (B, heads, N, H, W)
        values = layer.value(x.flatten(2).transpose(1, 2)).view(2, 20, 3, 3).transpose(1, 2)  # (B, heads, N, D_h)
        mixed = probabilities.flatten(3) @ values  # (B, heads, N, N) x (B, heads, N, D_h) -> (B, heads, N, D_h)
        expected = layer.output(mixed.transpose(1, 2).reshape(2, 20, 9))  # (B, N, C)
        out = layer(x)

    assert probabilities.shape == (2, 3, 20, 5, 4)
    torch.testing.assert_close(probabilities.sum(dim=(3, 4)), torch.ones(2, 3, 20))
    torch.testing.assert_close(out, expected.transpose(1, 2).reshape(2, 6, 5, 4), atol=1e-5, rtol=1e-5)


def test_window_masks_far_keys_and_query_positions_accept_pairs():
    layer = SelfAttention2d(4, heads=2, encoding="quadratic", window=1)
    x = torch.randn(1, 4, 6, 6)

    by_pair = layer.attention_probabilities(x, [(2, 3)])
    by_index = layer.attention_probabilities(x, torch.tensor([2 * 6 + 3]))

    torch.testing.assert_close(by_pair, by_index)
    outside = torch.ones(6, 6, dtype=torch.bool)
    outside[1:4, 2:5] = False
    assert by_pair[0, :, 0][:, outside].abs().max() == 0


def test_positional_attention_ignores_content_but_content_attention_does_not():
    torch.manual_seed(3)
    x, other = torch.randn(1, 8, 5, 5), torch.randn(1, 8, 5, 5)
    for encoding, depends_on_content in [("learned", False), ("learned_content", True)]:
        layer = SelfAttention2d(8, heads=2, encoding=encoding)
        first = layer.attention_probabilities(x, [(2, 2)])
        second = layer.attention_probabilities(other, [(2, 2)])
        assert (not torch.allclose(first, second)) == depends_on_content, encoding


def test_quadratic_readout_reports_centres_and_spreads():
    quadratic = SelfAttention2d(4, heads=5, encoding="quadratic")
    generalized = SelfAttention2d(4, heads=5, encoding="quadratic_generalized")
    with torch.no_grad():
        quadratic.encoding.log_sharpness.fill_(torch.tensor(4.0).log())
        generalized.encoding.precision_factor.normal_()

    readout = quadratic.attention_centres()
    assert readout["centres"].shape == (5, 2)
    torch.testing.assert_close(readout["spread"], torch.full((5,), 0.5))
    precision = generalized.attention_centres()["precision"]
    assert precision.shape == (5, 2, 2)
    assert torch.linalg.eigvalsh(precision).min() >= -1e-6  # Σ⁻¹ stays positive semi-definite
    with pytest.raises(ValueError, match="quadratic, quadratic_generalized"):
        SelfAttention2d(4, heads=2, encoding="learned").attention_centres()


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("padding", [1, 2])
def test_padded_keys_are_zero_valued_pixels(encoding, padding):
    """padding=p with window=p equals the same weights on the zero-padded map, read at the original pixels:
    there the window keeps every key inside the map or its p rings of zeros."""
    torch.manual_seed(6)
    padded = SelfAttention2d(6, heads=3, encoding=encoding, reduction=2, padding=padding, window=padding).eval()
    plain = SelfAttention2d(6, heads=3, encoding=encoding, reduction=2, window=padding).eval()
    plain.load_state_dict(padded.state_dict())
    x = torch.randn(2, 6, 5, 7)
    inside = (..., slice(padding, -padding), slice(padding, -padding))
    with torch.no_grad():
        expected = plain(torch.nn.functional.pad(x, (padding,) * 4))[inside]
        torch.testing.assert_close(padded(x), expected)
        assert not torch.allclose(plain(x), expected)  # without the padded keys the borders differ


def test_reduction_sets_head_value_size():
    assert SelfAttention2d(32, heads=4).head_dim == 32
    assert SelfAttention2d(32, heads=4).value is None  # W_val = I, the paper's construction
    reduced = make_block("selfattn", 32, dim=2, heads=4, reduction=8)
    assert reduced.head_dim == 4
    assert reduced.value.out_features == 16
    assert reduced(torch.randn(1, 32, 4, 4)).shape == (1, 32, 4, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"encoding": "gaussian"}, "quadratic, quadratic_generalized, learned, learned_content"),
        ({"dim": 3}, "2D"),
        ({"reduction": 64}, "reduction must be in 1..16"),
        ({"reduction": 2, "head_dim": 4}, "not both"),
        ({"window": 0}, "window"),
        ({"encoding": "learned", "position_dim": 7}, "even"),
        ({"padding": -1}, "padding must be an integer >= 0"),
        ({"attention_dropout": 1.0}, r"attention_dropout must be in \[0, 1\)"),
    ],
)
def test_bad_options_raise_value_errors_naming_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelfAttention2d(16, **kwargs)


def test_bad_inputs_raise_value_errors():
    layer = SelfAttention2d(4, heads=2)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        layer(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match="rows 0..4"):
        layer.attention_probabilities(torch.randn(1, 4, 5, 5), [(5, 0)])
    with pytest.raises(ValueError, match="0..24"):
        layer.attention_probabilities(torch.randn(1, 4, 5, 5), [25])
