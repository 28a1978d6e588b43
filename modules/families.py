"""The block families, each declared once: everything the layers above need to know about one family.

A ``Family`` says which block class builds it, where the block goes in a residual block, in which
dimensions it works, what ``reduction`` means for it, which placement preset it uses by default,
which LightningModule trains it (and draws its paper's figures) and its budget rule. Nothing else
names a family; these read the table:

- ``modules.blocks.BLOCKS`` / ``make_block`` (block classes), ``modules.placement.DEFAULT_PRESETS``;
- ``modules.backbones`` (``attach``, ``attach_option``, ``dims``), ``modules.lightning.MODULES``;
- ``training.config`` (the allowed ``model.family`` values and ``model.block`` options);
- ``tuning.budget`` (``affinity_mb``) and the search space check (``reduction_divides_channels``).

Classes are named by import path (``"package.module:Name"``) and loaded on first use, so reading the
table — config validation in the API process does — imports no torch. Adding a family is a block
file under ``modules/blocks/`` plus one ``Family(...)`` entry below (docs/extending.md).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pkgutil import resolve_name
from typing import Any

BASELINE = "none"  # model.family of a plain backbone: no blocks, the shared LightningModule
SHARED_MODULE = "modules.lightning.base:AttentionClassifier"
# Residual-block slots (modules/backbones/residual.py) plus "spatial_convs": replace the 3×3 convs.
ATTACH_POINTS = ("pre", "branch", "identity", "post", "spatial_convs")


def load(path: str) -> Any:
    """``"package.module:Name"`` -> the object, importing the module on first use."""
    return resolve_name(path)


def accepted_keywords(block_class: type) -> list[str] | None:
    """Keyword options of a block class after ``channels``, or None when it takes ``**kwargs``."""
    parameters = list(inspect.signature(block_class).parameters.values())[1:]  # skip `channels`
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return [parameter.name for parameter in parameters]


@dataclass(frozen=True)
class Family:
    name: str  # model.family, the key of BLOCKS and MODULES
    label: str  # how error messages call it
    block: str  # "module:Class": Block(channels, *, dim, reduction, **options), output shaped like the input
    default_preset: str  # modules.placement.PRESETS name used when no placement is given
    reduction: str  # what `reduction` means for this block (docs and the search report)
    # Where the block goes in each placed residual block: one of ATTACH_POINTS.
    attach: str = "post"
    # A block option the backbone consumes to choose the slot instead (SE's integration designs):
    # option value -> slot, the first value being the default.
    attach_option: str | None = None
    attach_choices: Mapping[str, str] = field(default_factory=dict)
    dims: tuple[int, ...] = (2, 3)  # 2 = images (B, C, H, W), 3 = video (B, C, T, H, W)
    # True when the block holds channels // reduction wide layers, so a search must pick r dividing C.
    reduction_divides_channels: bool = True
    module: str | None = None  # "module:Class" of its LightningModule; None = the shared one
    # Budget rule: MiB of attention affinity one block holds for a batch, (block, input shape, batch) -> MiB;
    # bounded by a search's budget.max_nonlocal_activation_mb. None = the block holds no N×N affinity.
    affinity_mb: Callable[[Any, tuple[int, ...], int], float] | None = None

    def __post_init__(self) -> None:
        slots = set(self.attach_choices.values()) | {self.attach}
        if not slots <= set(ATTACH_POINTS):
            raise ValueError(f"family {self.name!r}: attach points {sorted(slots)} must be among {ATTACH_POINTS}")

    def block_class(self) -> type:
        return load(self.block)

    def options(self) -> list[str]:
        """The ``model.block`` options: the block's keywords besides dim/reduction, plus the attach option."""
        keywords = accepted_keywords(self.block_class()) or []
        names = [name for name in keywords if name not in ("dim", "reduction")]
        return sorted(names + ([self.attach_option] if self.attach_option else []))

    def slot(self, block_kw: dict[str, Any]) -> str:
        """Where the block goes, taking the attach option out of ``block_kw`` (the block does not accept it)."""
        if self.attach_option is None:
            return self.attach
        choice = block_kw.pop(self.attach_option, next(iter(self.attach_choices)))
        if choice not in self.attach_choices:
            raise ValueError(f"unknown {self.label} {self.attach_option} {choice!r}; "
                             f"valid: {', '.join(self.attach_choices)}")
        return self.attach_choices[choice]


def nonlocal_affinity_mb(block: Any, input_shape: tuple[int, ...], batch_size: int) -> float:
    """B · N · N' float32 scalars of one Non-local block's affinity, in MiB.

    N = T·H·W of the block's input, N' the key positions (N/4 with ``sub_sample``), both split by
    ``temporal_group``. It grows as (T·H·W)², which rules out a block early in a video network; an
    upper bound, since the chunked and fused kernels never hold it whole.
    """
    spatial = input_shape[2:]
    positions = math.prod(spatial)
    keys = positions // 4 if getattr(block, "sub_sample", False) else positions
    group = getattr(block, "temporal_group", None)
    if group and len(spatial) == 3 and spatial[0] > group:
        groups = spatial[0] // group  # attention stays within a group of frames
        positions, keys = positions // groups, keys // groups
        return batch_size * groups * positions * keys * 4 / 2**20
    return batch_size * positions * keys * 4 / 2**20


FAMILIES: dict[str, Family] = {family.name: family for family in (
    # Wang et al., arXiv:1711.07971 §4: a block after a residual block; 5 blocks in res3/res4 (Table 2c).
    Family(name="nonlocal", label="Non-local", block="modules.blocks.non_local:NonLocalBlock",
           default_preset="nl-5", reduction="bottleneck width: θ/φ/g map C -> C/r channels (paper r = 2)",
           attach="post", module="modules.lightning.nonlocal_module:NonLocalModule",
           affinity_mb=nonlocal_affinity_mb),
    # Hu et al., arXiv:1709.01507 §6.5 Table 14: four integration designs; every block (SE-ResNet-50).
    Family(name="se", label="SE", block="modules.blocks.squeeze_excite:SqueezeExcite",
           default_preset="se-all", reduction="excitation bottleneck: FC C -> C/r -> C (paper r = 16)",
           attach_option="integration",
           attach_choices={"standard": "branch", "pre": "pre", "post": "post", "identity": "identity"},
           module="modules.lightning.se_module:SqueezeExciteModule"),
    # Cordonnier et al., arXiv:1911.03584 §4: attention in place of the 3×3 convolutions, 2D only.
    Family(name="selfattn", label="self-attention", block="modules.blocks.self_attention:SelfAttention2d",
           default_preset="sa-stage4", reduction="value size per head: head_dim = C // r (default C)",
           attach="spatial_convs", dims=(2,), reduction_divides_channels=False,
           module="modules.lightning.selfattn_module:SelfAttentionModule"),
)}


def family(name: str) -> Family:
    """The family ``name``; ValueError naming the valid kinds otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown block kind {name!r}; valid kinds: {sorted(FAMILIES)}")
    return FAMILIES[name]
