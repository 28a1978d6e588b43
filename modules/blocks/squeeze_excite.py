"""Squeeze-and-Excitation — Hu, Shen, Sun, *Squeeze-and-Excitation Networks*, CVPR 2018, arXiv:1709.01507.

    s = σ(W_2 δ(W_1 z)),  z = squeeze(x),  out = s ⊙ x          (§3.1 squeeze, §3.2 excitation, eqs. 2-4)
"""

from torch import nn

from modules.layers import CONV

# Where the SE block sits in a residual unit (§6.5, Fig. 5, Table 14). The residual blocks of
# modules/backbones implement them; the names live here so that both sides spell them alike.
SE_INTEGRATIONS = ("standard", "pre", "post", "identity")

_CONV = {dim: CONV[dim] for dim in (2, 3)}  # SE pools over (H, W) or (T, H, W)
# Squeeze operator ablation (§6.2, Table 11): global average (the paper's choice) or global max pooling.
_SQUEEZES = {
    "avg": {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d},
    "max": {2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d},
}
# Excitation operator ablation (§6.3, Table 12): sigmoid (the paper's choice), tanh, ReLU.
_EXCITATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


def _choose(name, value, choices):
    if value not in choices:
        raise ValueError(f"SqueezeExcite: {name} must be one of {list(choices)}, got {value!r}")
    return choices[value]


class SqueezeExcite(nn.Module):
    """Channel recalibration for (B, C, H, W) or (B, C, T, H, W); the output has the input's shape.

    Args:
        channels: C of the input.
        dim: 2 (images) or 3 (video; the squeeze pools over T, H and W).
        reduction: r of §3.2 / §6.1 (Table 10); hidden width max(1, channels // r). Default 16.
        squeeze: ``avg`` | ``max`` global pooling (§6.2).
        excitation: final gate ``sigmoid`` | ``tanh`` | ``relu`` (§6.3).

    ``self.gate`` maps the squeezed (B, C, 1, 1[, 1]) descriptor to the per-channel scale s of the same
    shape, so a forward hook on it records the excitations (the paper's Fig. 6 / Fig. 7 analysis).
    The two FC layers are 1×1 convs with bias, as in the paper's parameter count (§4: SE-ResNet-50 with
    r = 16 has ~2.5 M extra parameters) and timm's ``SEModule``. Deviation: the hidden width is clamped
    to at least 1 so that the narrow CPU backbones can use the default r = 16.
    """

    def __init__(self, channels, *, dim=2, reduction=16, squeeze="avg", excitation="sigmoid"):
        super().__init__()
        conv = _choose("dim", dim, _CONV)
        pool = _choose("squeeze", squeeze, _SQUEEZES)[dim]
        activation = _choose("excitation", excitation, _EXCITATIONS)
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"SqueezeExcite: channels must be a positive int, got {channels!r}")
        if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
            raise ValueError(f"SqueezeExcite: reduction must be a positive int, got {reduction!r}")
        hidden = max(1, channels // reduction)
        self.channels, self.dim, self.reduction = channels, dim, reduction
        self.squeeze = pool(1)  # (B, C, *S) -> (B, C, 1, 1[, 1])
        self.gate = nn.Sequential(
            conv(channels, hidden, 1),  # W_1: (B, C, 1, ...) -> (B, C/r, 1, ...)
            nn.ReLU(inplace=True),
            conv(hidden, channels, 1),  # W_2: (B, C/r, 1, ...) -> (B, C, 1, ...)
            activation(),
        )

    def forward(self, x):
        if x.dim() != self.dim + 2 or x.shape[1] != self.channels:
            raise ValueError(f"SqueezeExcite(channels={self.channels}, dim={self.dim}) expects input of "
                             f"{self.dim + 2} axes (B, {self.channels}, ...), got shape {tuple(x.shape)}")
        return x * self.gate(self.squeeze(x))  # (B, C, *S) ⊙ (B, C, 1, 1[, 1]) -> (B, C, *S)
