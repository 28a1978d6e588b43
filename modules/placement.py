"""Placement: which residual blocks of a backbone get an attention block — data, not code.

A placement is ``{stage: [0-based residual-block indices]}`` or ``{stage: "all"}``, with stages named
as in the papers (``res2``..``res5``), or the name of one of the ``PRESETS``:

``nl-1``, ``nl-5``, ``nl-10``   Non-local paper (Wang et al., arXiv:1711.07971) Table 2c: 1 block before
                                the last residual block of res4; 5 blocks (every other block of res3
                                and res4: 2 + 3); 10 blocks (every residual block of res3 and res4).
                                The indices are ResNet-50's (res3 has 4 blocks, res4 6).
``se-all``, ``se-stage2|3|4``   SE paper (Hu et al., arXiv:1709.01507) Table 13: every block of every
                                stage, or of one stage only (stage 2|3|4 = res2|res3|res4).
``sa-stage2|3|4|5``, ``sa-all`` self-attention replaces the 3×3 convs of one stage / all stages
                                (Cordonnier et al., arXiv:1911.03584 use attention in place of convolution).

``resolve(placement, stage_depths)`` turns any of these into ``{stage: sorted indices}`` for a concrete
backbone and raises ``ValueError`` saying what exists when the placement does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modules.families import FAMILIES

ALL = "all"

PRESETS: dict[str, dict[str, list[int] | str]] = {
    "nl-1": {"res4": [4]},
    "nl-5": {"res3": [1, 3], "res4": [1, 3, 5]},
    "nl-10": {"res3": [0, 1, 2, 3], "res4": [0, 1, 2, 3, 4, 5]},
    "se-all": {"res2": ALL, "res3": ALL, "res4": ALL, "res5": ALL},
    "se-stage2": {"res2": ALL},
    "se-stage3": {"res3": ALL},
    "se-stage4": {"res4": ALL},
    "sa-stage2": {"res2": ALL},
    "sa-stage3": {"res3": ALL},
    "sa-stage4": {"res4": ALL},
    "sa-stage5": {"res5": ALL},
    "sa-all": {"res2": ALL, "res3": ALL, "res4": ALL, "res5": ALL},
}

# Used when a block kind is given without a placement: the configuration each paper reports as its
# main model (NL: 5 blocks, Table 2c / §5.1; SE: every block, "SE-ResNet-50"; self-attention: the
# res4 3×3 convs, the cheapest stage that still sees a sizeable feature map). Declared per family.
DEFAULT_PRESETS = {name: family.default_preset for name, family in FAMILIES.items()}


def default_preset(block: str) -> str:
    """The preset used for ``block`` when no placement is given."""
    if block not in DEFAULT_PRESETS:
        raise ValueError(f"no default placement for block {block!r}; known: {', '.join(DEFAULT_PRESETS)}")
    return DEFAULT_PRESETS[block]


def describe_stages(stage_depths: Mapping[str, int]) -> str:
    """``res2 (blocks 0-2), res3 (blocks 0-3), …`` for error messages."""
    return ", ".join(f"{stage} (blocks 0-{depth - 1})" if depth else f"{stage} (no blocks)"
                     for stage, depth in stage_depths.items())


def resolve(placement: str | Mapping[str, Any] | None, stage_depths: Mapping[str, int]) -> dict[str, list[int]]:
    """Resolve a preset name or mapping against a backbone's ``{stage: number of residual blocks}``.

    Returns ``{stage: sorted 0-based indices}`` in the backbone's stage order, without empty stages.
    ``None`` resolves to ``{}`` (no blocks).
    """
    if placement is None:
        return {}
    source = "placement"
    if isinstance(placement, str):
        if placement not in PRESETS:
            raise ValueError(f"unknown placement preset {placement!r}; presets: {', '.join(PRESETS)}")
        source = f"placement preset {placement!r}"
        placement = PRESETS[placement]
    if not isinstance(placement, Mapping):
        raise ValueError(f"placement must be a preset name or a mapping {{stage: [indices] | 'all'}}, "
                         f"got {type(placement).__name__}; presets: {', '.join(PRESETS)}")
    stages = describe_stages(stage_depths)
    resolved: dict[str, list[int]] = {}
    for stage, indices in placement.items():
        if stage not in stage_depths:
            raise ValueError(f"{source}: unknown stage {stage!r}; this backbone has {stages}")
        resolved[stage] = _stage_indices(source, stage, indices, stage_depths[stage], stages)
    return {stage: resolved[stage] for stage in stage_depths if resolved.get(stage)}


def _stage_indices(source: str, stage: str, indices: Any, depth: int, stages: str) -> list[int]:
    if indices == ALL:
        return list(range(depth))
    if isinstance(indices, str) or not isinstance(indices, Sequence):
        raise ValueError(f"{source}: {stage} must be a list of block indices or 'all', got {indices!r}")
    for index in indices:
        # bool is an int subclass; True as an index is a config mistake, not block 1
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"{source}: {stage} index {index!r} is not an integer; this backbone has {stages}")
        if not 0 <= index < depth:
            raise ValueError(f"{source}: {stage} index {index} is out of range (valid 0-{depth - 1}); "
                             f"this backbone has {stages}")
    duplicates = sorted({index for index in indices if list(indices).count(index) > 1})
    if duplicates:
        raise ValueError(f"{source}: {stage} lists block(s) {duplicates} more than once; this backbone has {stages}")
    return sorted(indices)


def fitting_presets(stage_depths: Mapping[str, int], prefix: str = "") -> list[str]:
    """The preset names (optionally only those starting with ``prefix``) that resolve on this backbone."""
    names = []
    for name in PRESETS:
        if not name.startswith(prefix):
            continue
        try:
            resolve(name, stage_depths)
        except ValueError:
            continue
        names.append(name)
    return names
