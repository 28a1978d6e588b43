"""Load a source state dict into a built network, accounting for every tensor (see report.py).

``load_pretrained(net, state, head=..., strict=..., selfattn_from_conv=...)``:

1. the source is renamed to attnlab's names (formats.py) and checked against the network as a whole:
   a ResNet of another depth or block type, or of another layout (timm legacy vs torchvision), is
   refused before any tensor is compared;
2. every tensor of the network gets a status: ``loaded`` (same shape), ``inflated`` (a 2D kernel
   into a 3D conv, inflation.py), ``from_conv`` (self-attention that replaced a 3×3 conv, built from
   that conv), ``reinitialised`` (the classifier head when the class count differs, see ``HEAD_POLICIES``),
   ``new`` (the tensors of inserted attention blocks), ``kept`` (BatchNorm step counters);
3. anything else — a network tensor the source lacks, a shape that differs, a source tensor nothing
   uses — is a problem: with ``strict`` a ``LoadError`` naming every one, otherwise a warning in the
   report, the network's fresh initialisation kept for those tensors.

Only then are the tensors copied, so a refused source leaves the network untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from modules.blocks import BLOCKS
from modules.blocks.self_attention import SelfAttention2d, from_conv
from modules.pretrained.formats import (FORMATS, LAYOUT_LEGACY, LAYOUT_TORCHVISION, detect_format, resnet_shape,
                                        to_attnlab_names)
from modules.pretrained.inflation import can_inflate, inflate
from modules.pretrained.report import LoadingReport

# What to do with the classifier head (`fc` of the ResNets, `classifier` of the attention net):
HEAD_POLICIES = {
    "auto": "load it when the class counts match, else re-initialise it",
    "reinit": "always re-initialise it",
    "keep": "load it; the class counts must match",
}
HEAD_MODULES = ("fc", "classifier")
MAX_LISTED = 30  # keys named per kind of problem in an error


class LoadError(ValueError):
    """The source does not fit the network; the message names every tensor concerned."""


def load_pretrained(net: nn.Module, state: Mapping[str, torch.Tensor], *, fmt: str | None = None,
                    head: str = "auto", strict: bool = True, selfattn_from_conv: bool = True) -> LoadingReport:
    """Copy `state` into `net` as described in the module docstring; returns the report."""
    if head not in HEAD_POLICIES:
        raise ValueError(f"head must be one of {', '.join(HEAD_POLICIES)}, got {head!r}")
    fmt = fmt or detect_format(state)
    source = to_attnlab_names(state, fmt)
    target = net.state_dict()
    report = LoadingReport(FORMATS[fmt][0])
    _check_architecture(net, source, target, fmt, strict, report)

    problems: list[str] = []
    attention = _attention_sources(net, source, target) if selfattn_from_conv else {}
    replaced = {} if selfattn_from_conv else _attention_sources(net, source, target)
    block_prefixes = [f"{name}." for name, module in net.named_modules()
                      if isinstance(module, tuple(BLOCKS.values()))]
    head_keys = _head_keys(net)
    consumed: set[str] = set()
    updates: dict[str, torch.Tensor] = {}

    unfit = {prefix: _from_conv_problem(net.get_submodule(prefix), source[conv_key], prefix)
             for prefix, (conv_key, _) in attention.items()}
    for prefix, (conv_key, note) in attention.items():
        consumed.add(conv_key)
        problem = unfit[prefix]
        if problem:
            problems.append(problem)
        for key in _keys_under(target, prefix):
            report.add(key, "from_conv" if not problem else "new", source[conv_key].shape, target[key].shape,
                       f"from {conv_key}" + (f"; {note}" if note else ""))
    for prefix, (conv_key, _) in replaced.items():
        consumed.add(conv_key)
        report.add(conv_key, "replaced", source[conv_key].shape, None, f"by the self-attention at {prefix}")

    for key, tensor in target.items():
        if any(key.startswith(prefix + ".") for prefix in attention):
            continue
        if key in head_keys:
            problems += _place_head(key, source, tensor, head, updates, consumed, report)
        elif key in source:
            consumed.add(key)
            found = source[key]
            if found.shape == tensor.shape:
                updates[key] = found
                report.add(key, "loaded", found.shape, tensor.shape)
            elif can_inflate(found.shape, tensor.shape):
                updates[key] = inflate(found, tensor.shape[2])
                report.add(key, "inflated", found.shape, tensor.shape, f"k_t = {tensor.shape[2]}")
            else:
                problems.append(f"shape mismatch: {key}: source {_text(found.shape)}, network {_text(tensor.shape)}")
                report.add(key, "reinitialised", found.shape, tensor.shape, "shape mismatch")
        elif any(key.startswith(prefix) for prefix in block_prefixes):
            report.add(key, "new", None, tensor.shape, "inserted block")
        elif key.endswith("num_batches_tracked"):
            report.add(key, "kept", None, tensor.shape)
        else:
            problems.append(f"missing from the source: {key}")
            report.add(key, "reinitialised", None, tensor.shape, "not in the source")
    unused = sorted(source.keys() - consumed)
    for key in unused:
        problems.append(f"not used by this network: {key}")
        report.add(key, "unused", source[key].shape, None)
    if any(".branch.gate." in key for key in unused):
        problems.append("(the source has SE blocks at the standard position: family se, placement se-all takes them)")

    _raise_or_warn(problems, strict, report)
    _copy(net, target, updates)
    for prefix, (conv_key, _) in attention.items():
        if not unfit[prefix]:
            _init_from_conv(net.get_submodule(prefix), source[conv_key])
    return report


def _check_architecture(net, source, target, fmt, strict, report) -> None:
    """Refuse a ResNet of another depth/block type; a layout difference follows `strict`."""
    source_shape, target_shape = resnet_shape(source), resnet_shape(target)
    if source_shape and target_shape and source_shape != target_shape:
        raise LoadError(f"the source is a ResNet with {source_shape.describe()}; this backbone has "
                        f"{target_shape.describe()}")
    source_layout, target_layout = FORMATS[fmt][1], network_layout(net)
    if target_shape and source_layout != target_layout:
        message = (f"the source has the {source_layout} layout and this backbone the {target_layout} layout "
                   f"(legacy: stride on the first 1×1 conv, ceil-mode stem pool, ReLU before SE in basic "
                   f"blocks — timm legacy_seresnet*, backbones resnet18_caffe / resnet50_caffe): same "
                   f"tensors, different function")
        _raise_or_warn([message], strict, report)


def network_layout(net: nn.Module) -> str:
    """LAYOUT_LEGACY for a ResNet whose stem pools with ceil_mode (the Caffe layout), else LAYOUT_TORCHVISION."""
    pool = getattr(net, "maxpool", None)
    return LAYOUT_LEGACY if isinstance(pool, nn.MaxPool2d) and pool.ceil_mode else LAYOUT_TORCHVISION


def _attention_sources(net, source, target) -> dict[str, tuple[str, str]]:
    """{self-attention module name: (source key of the conv it replaced, note)} for attention absent from the source."""
    found = {}
    for name, module in net.named_modules():
        if not isinstance(module, SelfAttention2d) or any(key in source for key in _keys_under(target, name)):
            continue
        parent, _, last = name.rpartition(".")
        strided = last == "0" and isinstance(net.get_submodule(parent), nn.Sequential)  # attention + AvgPool2d
        conv_key = f"{parent if strided else name}.weight"
        if conv_key in source and source[conv_key].dim() == 4:
            notes = ["strided conv: attention + average pool, not the conv's subsampling"] if strided else []
            radius = source[conv_key].shape[-1] // 2
            if getattr(module, "padding", radius) != radius:  # from_conv's keys include the conv's zero padding
                notes.append(f"padding {module.padding}: border pixels differ from the conv "
                             f"(model.block.padding: {radius} keeps them)")
            found[name] = (conv_key, "; ".join(notes))
    return found


def _from_conv_problem(attention: SelfAttention2d, kernel: torch.Tensor, name: str) -> str:
    expected = from_conv(_conv(kernel)).state_dict()
    actual = attention.state_dict()
    if {k: v.shape for k, v in expected.items()} == {k: v.shape for k, v in actual.items()}:
        return ""
    size = kernel.shape[-1]
    return (f"selfattn_from_conv: the self-attention at {name} cannot take the {size}×{size} conv's weights: "
            f"from_conv needs encoding 'quadratic', heads {size * size} and no value projection (reduction/"
            f"head_dim unset), got {attention.extra_repr()}")


def _init_from_conv(attention: SelfAttention2d, kernel: torch.Tensor) -> None:
    layer = from_conv(_conv(kernel))
    attention.load_state_dict(layer.state_dict())


def _conv(kernel: torch.Tensor) -> nn.Conv2d:
    out_channels, in_channels, size, _ = kernel.shape
    conv = nn.Conv2d(in_channels, out_channels, size, padding=size // 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(kernel)
    return conv


def _head_keys(net: nn.Module) -> set[str]:
    return {f"{name}.{key}" for name in HEAD_MODULES if isinstance(getattr(net, name, None), nn.Linear)
            for key in getattr(net, name).state_dict()}


def _place_head(key, source, tensor, head, updates, consumed, report) -> list[str]:
    found = source.get(key)
    if found is not None:
        consumed.add(key)
    if found is not None and found.shape == tensor.shape and head != "reinit":
        updates[key] = found
        report.add(key, "loaded", found.shape, tensor.shape, "classifier head")
        return []
    if found is None:
        note = "classifier head, not in the source"
    elif head == "reinit":
        note = "classifier head, head: reinit"
    else:
        note = f"classifier head: the source has {found.shape[0]} classes, this run {tensor.shape[0]}"
    report.add(key, "reinitialised", None if found is None else found.shape, tensor.shape, note)
    if head == "keep" and (found is None or found.shape != tensor.shape):
        return [f"head: keep needs the source's classifier: {note}"]
    return []


def _raise_or_warn(problems: list[str], strict: bool, report: LoadingReport) -> None:
    if not problems:
        return
    if strict:
        listed = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"]
                                          if len(problems) > MAX_LISTED else [])
        raise LoadError("\n".join(listed))
    report.warnings.extend(problems)


def _copy(net: nn.Module, target: dict[str, torch.Tensor], updates: dict[str, torch.Tensor]) -> None:
    merged = {key: updates[key].to(dtype=value.dtype, device=value.device) if key in updates else value
              for key, value in target.items()}
    net.load_state_dict(merged)


def _keys_under(target: Mapping[str, torch.Tensor], prefix: str) -> list[str]:
    return [key for key in target if key.startswith(prefix + ".")]


def _text(shape) -> str:
    return "×".join(map(str, shape))
