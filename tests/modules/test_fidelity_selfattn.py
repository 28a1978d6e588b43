"""Cordonnier et al.'s attention network as the authors released it (docs/fidelity.md, self-attention rows).

The reference below is a transcription of the authors' forward pass (epfml/attention-cnn ``models/transformer.py``
``BertImage`` with ``pooling_concatenate_size=2``; ``models/bert.py`` ``BertLayer``, ``GaussianSelfAttention``,
``Learned2DRelativeSelfAttention``) in their own terms — NHWC maps, inverse spreads s with the score vector
``t_h`` against the relative grid ``R = [δ, δ², δ_x δ_y]``, their relative-index tables and einsums — written
independently of modules/, fed with weights copied from our network.
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from modules.backbones import build_backbone
from modules.backbones.attention_net import AUTHORS_LAYER_NORM_EPS
from modules.blocks.self_attention import ENCODINGS, SelfAttention2d
from modules.lightning.base import parameter_groups

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/modules/conftest.py

# Paper Table 1 rounds these (12.1M, 12.3M, 29.5M); the authors' code gives exactly these numbers.
AUTHORS_PARAMETERS = {
    "quadratic": 12_086_844,
    "quadratic_generalized": 12_087_006,
    "learned": 12_278_682,
    "learned_content": 29_601_882,
}
AUTHORS_SHARED_TABLES_PARAMETERS = 29_477_882  # learned_content, one pair of tables for the 6 layers
MAX_POSITION_EMBEDDINGS = 16  # the authors' config: tables for shifts of a 16×16 map


def count(net):
    return sum(parameter.numel() for parameter in net.parameters())


# ---- the authors' forward pass ---------------------------------------------------------------------

def authors_gaussian_probabilities(attention, size):
    """GaussianSelfAttention.get_attention_probs: (W, H, heads, W, H) over a size×size map."""
    centres = attention["attention_centers"]
    spreads = attention["attention_spreads"]
    if spreads.dim() == 1:  # attention_isotropic_gaussian
        a = c = spreads**2
        b = torch.zeros_like(spreads)
    else:
        inverse_covariance = torch.einsum("hij,hkj->hik", spreads, spreads)
        a, b, c = inverse_covariance[:, 0, 0], inverse_covariance[:, 0, 1], inverse_covariance[:, 1, 1]
    mu_1, mu_2 = centres[:, 0], centres[:, 1]
    u = -1 / 2 * torch.stack([-2 * (a * mu_1 + b * mu_2), -2 * (c * mu_2 + b * mu_1), a, c, 2 * b], dim=-1)
    range_ = torch.arange(size)
    grid = torch.stack(torch.meshgrid(range_, range_, indexing="ij"), dim=-1)
    relative = grid[None, None] - grid[:, :, None, None]  # [i, j, k, l] = (k, l) - (i, j)
    R = torch.cat([relative, relative**2, (relative[..., 0] * relative[..., 1])[..., None]], dim=-1).to(u.dtype)
    scores = torch.einsum("ijkld,hd->ijhkl", R, u)
    heads = u.shape[0]
    return scores.reshape(size, size, heads, -1).softmax(dim=-1).view(size, size, heads, size, size)


def authors_learned_probabilities(attention, size, hidden_states, heads, hidden):
    """Learned2DRelativeSelfAttention.get_attention_probs, with the content scores when use_attention_data."""
    deltas = torch.arange(MAX_POSITION_EMBEDDINGS).view(1, -1) - torch.arange(MAX_POSITION_EMBEDDINGS).view(-1, 1)
    relative_indices = (deltas + MAX_POSITION_EMBEDDINGS - 1)[:size, :size].reshape(-1)
    row_scores = (attention["row_embeddings"][relative_indices] @ attention["head_keys_row"].T).view(1, size, 1, size, heads)
    col_scores = (attention["col_embeddings"][relative_indices] @ attention["head_keys_col"].T).view(size, 1, size, 1, heads)
    scores = (row_scores + col_scores).permute(0, 1, 4, 2, 3)
    batch_dim = []
    if "query_weight" in attention:
        b, w, h, _ = hidden_states.shape
        q = (hidden_states @ attention["query_weight"].T + attention["query_bias"]).view(b, w, h, heads, hidden)
        k = (hidden_states @ attention["key_weight"].T + attention["key_bias"]).view(b, w, h, heads, hidden)
        scores = scores[None] + torch.einsum("bijhd,bklhd->bijhkl", q, k) / math.sqrt(hidden)
        batch_dim = [b]
    flat = scores.reshape(*batch_dim, size, size, heads, size * size)
    return flat.softmax(dim=-1).view(*batch_dim, size, size, heads, size, size)


def bert_layer_norm(x, weight, bias, eps=1e-12):
    u = x.mean(-1, keepdim=True)
    s = (x - u).pow(2).mean(-1, keepdim=True)
    return weight * ((x - u) / torch.sqrt(s + eps)) + bias


def linear(x, weight, bias):
    return x @ weight.T + bias


def authors_forward(weights, images, *, encoding, heads, hidden):
    """BertImage.forward (eval mode): downsample_concatenate, features_upscale, BertEncoder, mean pool, classifier."""
    b, channels, height, width = images.shape
    kernel = 2
    X = images.permute(0, 2, 3, 1)  # NCHW -> NHWC
    Y = X.contiguous().view(b, height, width // kernel, channels * kernel).permute(0, 2, 1, 3).contiguous()
    Y = Y.view(b, width // kernel, height // kernel, kernel * kernel * channels).permute(0, 2, 1, 3).contiguous()
    hidden_states = linear(Y, *weights["features_upscale"])
    size = hidden_states.shape[1]
    for layer in weights["layers"]:
        attention = layer["attention"]
        if encoding.startswith("quadratic"):
            probabilities = authors_gaussian_probabilities(attention, size)
            input_values = torch.einsum("ijhkl,bkld->bijhd", probabilities, hidden_states)
        else:
            probabilities = authors_learned_probabilities(attention, size, hidden_states, heads, hidden)
            with_batch_dim = "b" if "query_weight" in attention else ""
            input_values = torch.einsum(with_batch_dim + "ijhkl,bkld->bijhd", probabilities, hidden_states)
        self_output = linear(input_values.contiguous().view(b, size, size, -1), *attention["value"])
        attention_output = bert_layer_norm(linear(self_output, *layer["output_dense"]) + hidden_states,
                                           *layer["attention_norm"])
        intermediate = F.gelu(linear(attention_output, *layer["intermediate"]))  # erf GELU, their ACT2FN["gelu"]
        hidden_states = bert_layer_norm(linear(intermediate, *layer["output"]) + attention_output, *layer["output_norm"])
    representation = hidden_states.view(b, -1, hidden_states.shape[-1]).mean(dim=1)
    return linear(representation, *weights["classifier"])


def authors_weights(net, encoding):
    """Our parameters in the authors' parametrisation and names."""
    pair = lambda module: (module.weight, module.bias)  # noqa: E731
    layers = []
    for layer in net.layers:
        ours = layer.attention
        attention = {"value": pair(ours.output)}
        if encoding == "quadratic":
            attention["attention_centers"] = ours.encoding.centres
            attention["attention_spreads"] = (2 * ours.encoding.sharpness).sqrt()  # α = s²/2
        elif encoding == "quadratic_generalized":
            attention["attention_centers"] = ours.encoding.centres
            attention["attention_spreads"] = math.sqrt(2) * ours.encoding.precision_factor  # A = √2 L
        else:
            half = ours.encoding.row_embedding.shape[1]
            # their row_* tables index the second image axis, their col_* the first one
            attention["row_embeddings"] = ours.encoding.col_embedding
            attention["col_embeddings"] = ours.encoding.row_embedding
            attention["head_keys_row"] = ours.encoding.head_vectors[:, half:]
            attention["head_keys_col"] = ours.encoding.head_vectors[:, :half]
            if encoding == "learned_content":
                attention.update(query_weight=ours.query.weight, query_bias=ours.query.bias,
                                 key_weight=ours.key.weight, key_bias=ours.key.bias)
        layers.append({
            "attention": attention,
            "output_dense": pair(ours.projection),
            "attention_norm": pair(layer.attention_norm),
            "intermediate": pair(layer.feed_forward[0]),
            "output": pair(layer.feed_forward[2]),
            "output_norm": pair(layer.output_norm),
        })
    return {"features_upscale": pair(net.embedding), "layers": layers, "classifier": pair(net.classifier)}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_attention_net_equals_the_authors_forward_pass_with_copied_weights(encoding):
    torch.manual_seed(0)
    net = build_backbone("attention_net", num_classes=10, block="selfattn", encoding=encoding, layers=2).double().eval()
    with torch.no_grad():  # every parameter away from its initial value (LayerNorm γ = 1, β = 0 included)
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)

    with torch.no_grad():
        ours = net(images)
        theirs = authors_forward(authors_weights(net, encoding), images, encoding=encoding, heads=9, hidden=400)

    assert ours.shape == theirs.shape == (2, 10)
    error = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    assert error <= 1e-5, f"{encoding}: relative difference {error:.2e}"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_attention_net_has_the_authors_parameter_counts(encoding):
    with torch.device("meta"):
        net = build_backbone("attention_net", num_classes=10, block="selfattn", encoding=encoding)
    assert count(net) == AUTHORS_PARAMETERS[encoding]


def test_shared_position_encoding_keeps_one_pair_of_tables():
    with torch.device("meta"):
        net = build_backbone("attention_net", num_classes=10, encoding="learned_content", share_position_encoding=True)
    encodings = [layer.attention.encoding for layer in net.layers]
    assert count(net) == AUTHORS_SHARED_TABLES_PARAMETERS
    assert all(e.row_embedding is encodings[0].row_embedding and e.col_embedding is encodings[0].col_embedding
               for e in encodings)
    assert len({id(e.head_vectors) for e in encodings}) == 6  # head keys stay per layer
    with pytest.raises(ValueError, match="needs encoding 'learned' or 'learned_content'"):
        build_backbone("attention_net_tiny", num_classes=2, share_position_encoding=True)


def test_attention_net_defaults_are_the_authors_options():
    """Each row's switch, at the network's defaults: projection, dropout 0.1, full q/k, 400 per table axis, ε."""
    with torch.device("meta"):
        net = build_backbone("attention_net", num_classes=10, encoding="learned_content")
    attention = net.layers[0].attention
    assert (attention.attention_dropout, net.layers[0].dropout.p) == (0.1, 0.1)
    assert attention.projection.weight.shape == (400, 400)
    assert attention.query.weight.shape == attention.key.weight.shape == (9 * 400, 400) and attention.key_dim == 400
    assert attention.encoding.row_embedding.shape == attention.encoding.col_embedding.shape == (31, 400)
    assert net.layers[0].attention_norm.eps == AUTHORS_LAYER_NORM_EPS == 1e-12
    # the block alone keeps the modern defaults the table lists
    block = SelfAttention2d(400, heads=9, encoding="learned_content")
    assert (block.projection, block.attention_dropout, block.key_dim) == (None, 0.0, 400 // 9)


def test_output_projection_adds_one_linear_map_after_w_out():
    torch.manual_seed(3)
    plain = SelfAttention2d(6, heads=4, out_channels=5).eval()
    projected = SelfAttention2d(6, heads=4, out_channels=5, output_projection=True).eval()
    assert count(projected) - count(plain) == 5 * 5 + 5
    missing, unexpected = projected.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["projection.bias", "projection.weight"] and not unexpected
    x = torch.randn(2, 6, 4, 5)
    with torch.no_grad():
        projection = projected.projection
        projection.weight.normal_(), projection.bias.normal_()
        torch.testing.assert_close(projected(x), F.linear(plain(x).movedim(1, -1), projection.weight,
                                                          projection.bias).movedim(-1, 1))


def test_attention_dropout_drops_attention_probabilities_in_training_only():
    torch.manual_seed(4)
    layer = SelfAttention2d(4, heads=3, attention_dropout=0.1)
    x = torch.randn(2, 4, 5, 5)
    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)  # the same mask, drawn by hand on the probabilities
    probabilities = F.dropout(layer.positional_scores(5, 5).softmax(dim=-1), 0.1, training=True)  # (heads, N, N)
    tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
    mixed = torch.einsum("hqk,bkc->bqhc", probabilities, tokens).reshape(2, 25, 12)  # values = the input
    torch.testing.assert_close(out, layer.output(mixed).transpose(1, 2).reshape(2, 4, 5, 5))

    layer.eval()
    no_dropout = SelfAttention2d(4, heads=3).eval()
    no_dropout.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), no_dropout(x))


def test_initialisation_follows_the_authors_code():
    torch.manual_seed(5)
    quadratic = SelfAttention2d(8, heads=400).encoding
    inverse_spread = (2 * quadratic.sharpness).sqrt()  # the authors' s = 1 + N(0, 0.01²)
    assert (inverse_spread - 1).abs().max() < 0.05 and 0.005 < (inverse_spread - 1).std() < 0.015
    assert 1.8 < quadratic.centres.std() < 2.2  # Δ ~ N(0, 2²)
    generalized = SelfAttention2d(8, heads=400, encoding="quadratic_generalized").encoding
    torch.testing.assert_close(generalized.precision.mean(0), torch.eye(2) / 2, atol=5e-3, rtol=0)
    learned = SelfAttention2d(400, heads=9, encoding="learned").encoding
    assert 0.95 < learned.row_embedding.std() < 1.05 and 0.95 < learned.col_embedding.std() < 1.05  # nn.Embedding
    assert learned.head_vectors.abs().max() <= 1 / math.sqrt(400)  # nn.Linear(400, heads) per axis


@pytest.mark.parametrize("encoding", ["quadratic", "quadratic_generalized"])
def test_head_centres_and_spreads_get_no_weight_decay(encoding):
    """train.py get_optimizer: every parameter decays (biases and LayerNorms too) except attention_spreads/centers."""
    net = build_backbone("attention_net_tiny", num_classes=3, encoding=encoding)
    decay, no_decay = parameter_groups(net, weight_decay=1e-4, decay_norm_and_bias=True)
    exempt = {id(p) for layer in net.layers for p in layer.attention.encoding.parameters()}
    assert {id(p) for p in no_decay["params"]} == exempt and len(exempt) == 2 * len(net.layers)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (1e-4, 0.0)


def test_cifar_config_trains_with_the_authors_recipe():
    """runs/quadratic/run.sh + train.py: SGD 0.1, momentum 0.9, wd 1e-4 on all but centres/spreads, batch 100,
    300 epochs, cosine after a 5 % linear warm-up."""
    from training.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "configs" / "selfattn_cifar10.yaml", [])
    optim = cfg.optim
    assert (cfg.model.backbone, cfg.model.block) == ("attention_net", {"encoding": "quadratic", "heads": 9})
    assert (optim.name, optim.lr, optim.momentum, optim.nesterov, optim.weight_decay) == ("sgd", 0.1, 0.9, False, 1e-4)
    assert optim.decay_norm_and_bias and optim.schedule == "cosine"
    assert (cfg.data.batch_size, cfg.trainer.max_epochs) == (100, 300)
    assert optim.warmup_epochs / cfg.trainer.max_epochs == pytest.approx(0.05)
