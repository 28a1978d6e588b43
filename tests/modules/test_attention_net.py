"""The paper's pure self-attention network: parameter counts, builder contract, and that it trains."""

import pytest
import torch
import torch.nn.functional as F

from modules.backbones.attention_net import PAPER_SIZE, TINY_SIZE, attention_net, attention_net_tiny
from modules.blocks.self_attention import DEFAULT_LEARNED_WINDOW, ENCODINGS, SelfAttention2d

# Pinned counts (3 input channels, 10 classes, default options = the authors' model); also in the module
# docstring. The paper-size ones are the authors' code's (tests/modules/test_fidelity_selfattn.py).
PINNED_PARAMETERS = {
    ("attention_net", "quadratic"): 12_086_844,
    ("attention_net", "quadratic_generalized"): 12_087_006,
    ("attention_net", "learned"): 12_278_682,
    ("attention_net", "learned_content"): 29_601_882,
    ("attention_net_tiny", "quadratic"): 19_778,
    ("attention_net_tiny", "quadratic_generalized"): 19_802,
    ("attention_net_tiny", "learned"): 24_234,
    ("attention_net_tiny", "learned_content"): 41_130,
}
pytestmark = pytest.mark.usefixtures("single_thread")  # tests/modules/conftest.py


BUILDERS = {"attention_net": (attention_net, PAPER_SIZE), "attention_net_tiny": (attention_net_tiny, TINY_SIZE)}


def expected_parameters(encoding, *, layers, heads, hidden, ffn, in_channels=3, num_classes=10):
    """Parameter count from the architecture's definition (values = input, D_h = hidden; the authors'
    options: tables of `hidden` per axis, a `hidden`-wide query/key per head, an output projection)."""
    linear = lambda fan_in, fan_out: fan_in * fan_out + fan_out  # noqa: E731 — weight + bias
    position_dim = 2 * hidden
    encoding_parameters = {
        "quadratic": heads * (2 + 1),  # centre Δ, log α
        "quadratic_generalized": heads * (2 + 4),  # centre Δ, 2×2 factor of Σ⁻¹
        "learned": 2 * (2 * DEFAULT_LEARNED_WINDOW + 1) * (position_dim // 2) + heads * position_dim,
    }
    encoding_parameters["learned_content"] = encoding_parameters["learned"] + 2 * linear(hidden, heads * hidden)
    per_layer = (
        linear(heads * hidden, hidden)  # W_out over the concatenated heads
        + linear(hidden, hidden)  # output projection
        + encoding_parameters[encoding]
        + linear(hidden, ffn) + linear(ffn, hidden)  # feed-forward
        + 2 * 2 * hidden  # two LayerNorms
    )
    return linear(4 * in_channels, hidden) + layers * per_layer + linear(hidden, num_classes)


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_parameter_counts_match_definition_and_pinned_numbers(name, encoding):
    builder, size = BUILDERS[name]
    net = builder(num_classes=10, encoding=encoding)

    count = sum(parameter.numel() for parameter in net.parameters())

    assert count == expected_parameters(encoding, **size)
    assert count == PINNED_PARAMETERS[(name, encoding)]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_tiny_net_classifies_images_with_each_encoding(encoding):
    net = attention_net_tiny(num_classes=5, in_channels=1, encoding=encoding)
    assert net(torch.randn(3, 1, 12, 16)).shape == (3, 5)
    assert net.dim == 2 and net.stage_depths == {}
    assert sum(isinstance(module, SelfAttention2d) for module in net.modules()) == TINY_SIZE["layers"]


def test_forward_hooks_see_each_attention_layer_input_map():
    net = attention_net_tiny(num_classes=2).eval()
    layers = [module for module in net.modules() if isinstance(module, SelfAttention2d)]
    seen = []
    handles = [layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape)) for layer in layers]
    net(torch.randn(1, 3, 12, 16))
    for handle in handles:
        handle.remove()

    assert seen == [(1, TINY_SIZE["hidden"], 6, 8)] * TINY_SIZE["layers"]
    probabilities = layers[0].attention_probabilities(torch.randn(1, TINY_SIZE["hidden"], 6, 8), [(3, 4)])
    assert probabilities.shape == (1, TINY_SIZE["heads"], 1, 6, 8)


def test_builders_reject_other_blocks_placements_and_odd_maps():
    assert attention_net_tiny(num_classes=2, block="selfattn", placement=None) is not None
    with pytest.raises(ValueError, match="'selfattn'"):
        attention_net_tiny(num_classes=2, block="se")
    with pytest.raises(ValueError, match="placement must be None"):
        attention_net_tiny(num_classes=2, placement="sa-all")
    with pytest.raises(ValueError, match="learned_content"):
        attention_net_tiny(num_classes=2, encoding="sinusoidal")
    with pytest.raises(ValueError, match="even H and W"):
        attention_net_tiny(num_classes=2)(torch.randn(1, 3, 15, 16))


def test_registered_in_backbones():
    from modules.backbones import build_backbone

    net = build_backbone("attention_net_tiny", num_classes=3, block="selfattn", encoding="learned", heads=2)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    assert {layer.attention.heads for layer in net.layers} == {2}


def test_tiny_attention_net_loss_falls_on_cpu():
    # 64 random 16×16 images; the label says which image half is brighter — learnable from pixels and
    # positions, not memorised. Full-batch Adam, 40 steps.
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(64, 3, 16, 16, generator=generator)
    labels = (images[:, :, :8].mean(dim=(1, 2, 3)) > images[:, :, 8:].mean(dim=(1, 2, 3))).long()
    torch.manual_seed(0)
    net = attention_net_tiny(num_classes=2, dropout=0.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)

    losses = []
    for _ in range(40):
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert losses[-1] < 0.5 * losses[0], f"loss went {losses[0]:.3f} -> {losses[-1]:.3f}"
