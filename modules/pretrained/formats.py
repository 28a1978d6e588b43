"""Which network a state dict comes from, and its keys renamed to attnlab's ResNet names.

attnlab's ResNets (modules/backbones) keep torchvision's names except the stages, which carry the
papers' names ``res2``..``res5``. The layouts recognised, by their keys:

``resnet``          torchvision ``resnet*`` and timm ``resnet*`` (the same names): ``conv1``, ``bn1``,
                    ``layer1..4.N.{conv,bn}{1,2,3}``, ``downsample.{0,1}``, ``fc``.
``timm_seresnet``   timm ``seresnet*`` (timm/models/resnet.py, ``attn_layer='se'``): the above plus
                    ``layerI.N.se.fc1`` / ``se.fc2`` (timm.layers.SEModule, 1×1 convs with bias) after
                    the last BN of the residual branch — attnlab's SE ``standard`` integration.
``timm_legacy``     timm ``legacy_seresnet*`` (timm/models/senet.py, the SE authors' Caffe models as
                    ported by Cadene): ``layer0.conv1`` / ``layer0.bn1``, ``layerI.N.se_module.fc1/fc2``,
                    ``last_linear``. Same tensors, different layout: the stride sits on the first 1×1
                    conv of a bottleneck, the stem pools with ``ceil_mode``, and the basic block has a
                    ReLU before the SE block — attnlab's ``resnet18_caffe`` / ``resnet50_caffe``.
``attnlab``         an attnlab network (a run's checkpoint, a logged model): keys used as they are.

Containers are unwrapped first: a Lightning checkpoint (``state_dict`` with the ``net.`` prefix of
the LightningModule), timm's training checkpoints (``state_dict`` / ``model``), and the ``module.``
prefix that DistributedDataParallel adds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

LAYOUT_TORCHVISION = "torchvision"  # stride on the 3×3 conv (ResNet v1.5), stem max-pool with padding 1
LAYOUT_LEGACY = "legacy"  # SE authors' Caffe layout as timm's senet.py has it

# format -> (human description, layout of the network the tensors come from)
FORMATS: dict[str, tuple[str, str]] = {
    "resnet": ("torchvision/timm ResNet state dict", LAYOUT_TORCHVISION),
    "timm_seresnet": ("timm SE-ResNet (seresnet*) state dict", LAYOUT_TORCHVISION),
    "timm_legacy": ("timm legacy SE-ResNet (legacy_seresnet*) state dict", LAYOUT_LEGACY),
    "attnlab": ("attnlab network state dict", LAYOUT_TORCHVISION),
}

# (pattern, replacement) applied in order to every key of a format.
_RENAMES: dict[str, list[tuple[str, str]]] = {
    "resnet": [(r"^layer([1-4])\.", "res{stage}.")],
    "timm_seresnet": [(r"^layer([1-4])\.", "res{stage}."), (r"\.se\.fc1\.", ".branch.gate.0."),
                      (r"\.se\.fc2\.", ".branch.gate.2.")],
    "timm_legacy": [(r"^layer0\.(conv1|bn1)\.", r"\1."), (r"^layer([1-4])\.", "res{stage}."),
                    (r"\.se_module\.fc1\.", ".branch.gate.0."), (r"\.se_module\.fc2\.", ".branch.gate.2."),
                    (r"^last_linear\.", "fc.")],
    "attnlab": [],
}
_CONTAINER_KEYS = ("state_dict", "model")  # Lightning / timm train.py, other trainers
_LIGHTNING_PREFIX = "net."  # modules/lightning/base.py keeps the network as `self.net`


class NotAStateDict(ValueError):
    """The loaded object holds no tensors by name."""


def unwrap(loaded: object) -> dict[str, torch.Tensor]:
    """The flat {name: tensor} inside whatever `torch.load` returned; NotAStateDict otherwise."""
    state = loaded
    if isinstance(state, Mapping):
        for key in _CONTAINER_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise NotAStateDict(f"holds a {type(loaded).__name__}, not a state dict of named tensors")
    not_tensors = [str(key) for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise NotAStateDict(f"has entries that are not tensors: {', '.join(not_tensors[:5])}")
    state = {str(key): value for key, value in state.items()}
    if all(key.startswith(_LIGHTNING_PREFIX) for key in state if "." in key) and any(
            key.startswith(_LIGHTNING_PREFIX) for key in state):
        state = {key[len(_LIGHTNING_PREFIX):]: value for key, value in state.items()
                 if key.startswith(_LIGHTNING_PREFIX)}
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def detect_format(state: Mapping[str, torch.Tensor]) -> str:
    """A key of FORMATS, from the names in `state`."""
    if "layer0.conv1.weight" in state:
        return "timm_legacy"
    if any(key.startswith("layer1.") for key in state):
        return "timm_seresnet" if any(".se.fc1." in key for key in state) else "resnet"
    return "attnlab"


def to_attnlab_names(state: Mapping[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """`state` with its keys renamed from `fmt` to attnlab's names."""
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _RENAMES[fmt]:
            key = re.sub(pattern, _stage_replacement(replacement), key)
        renamed[key] = value
    return renamed


def _stage_replacement(replacement: str):
    if "{stage}" not in replacement:
        return replacement
    return lambda match: replacement.format(stage=int(match.group(1)) + 1)  # layer1 -> res2


@dataclass(frozen=True)
class ResNetShape:
    """Block type and stage depths of a ResNet, e.g. ("bottleneck", (3, 4, 6, 3)) = ResNet-50."""

    block: str
    depths: tuple[int, ...]

    def describe(self) -> str:
        name = _KNOWN_RESNETS.get((self.block, self.depths))
        blocks = "BasicBlocks" if self.block == "basic" else "Bottlenecks"
        depths = ", ".join(map(str, self.depths))
        return f"{blocks}, res2..res5 depths {depths}" + (f" ({name})" if name else "")


_KNOWN_RESNETS = {("basic", (2, 2, 2, 2)): "ResNet-18", ("basic", (3, 4, 6, 3)): "ResNet-34",
                  ("bottleneck", (3, 4, 6, 3)): "ResNet-50", ("bottleneck", (3, 4, 23, 3)): "ResNet-101",
                  ("bottleneck", (3, 8, 36, 3)): "ResNet-152"}


def resnet_shape(keys) -> ResNetShape | None:
    """The ResNet shape spelled by attnlab-named keys (res2.0.conv1.weight, ...); None if not a ResNet."""
    blocks: dict[int, set[int]] = {}
    bottleneck = False
    for key in keys:
        match = re.match(r"^res([2-5])\.(\d+)\.(\w+)", key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
            bottleneck = bottleneck or match.group(3) == "conv3"
    if sorted(blocks) != [2, 3, 4, 5]:
        return None
    depths = tuple(max(blocks[stage]) + 1 for stage in (2, 3, 4, 5))
    return ResNetShape("bottleneck" if bottleneck else "basic", depths)
