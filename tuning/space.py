"""Search spaces: `dotted.config.path -> domain`, parsed, checked, and turned into a Ray Tune space.

A search config is a training config (`training.config.TrainConfig`) plus a `search:` section
(`tuning.config.SearchSpec`). Its `space` maps any field of the training config, by dotted path,
to one domain:

```yaml
space:
  model.placement: {grid: [se-all, se-stage2, {res3: [0, 2]}, {stages: [res3, res4], patterns: [all, last]}]}
  model.reduction: {grid: [2, 4, 8, 16, 32]}
  model.family: {choice: [se, nonlocal]}
  optim.lr: {loguniform: [1.0e-4, 1.0e-1]}
```

Domains: `grid` (every value is tried, Ray's grid_search), `choice` (one value drawn per trial),
`uniform`/`loguniform` ([low, high]), `randint` ([low, high), integers).

Placements (the papers' ablations) are written as preset names (`nl-5`, `se-stage3`), explicit
mappings (`{res3: [1, 3]}`) or a *pattern generator* `{stages: [...], patterns: [...]}`: every
non-empty subset of `stages` switched on, each with the same block-index pattern — `all`, `odd`
(1, 3, 5, … as in NL-5), `even`, `first`, `last`. Inside Tune every placement is a short label
(`se-stage3`, `res3:1,3+res4:odd`), so tables and MLflow params stay readable;
`placement_from_label` turns a label back into what `model.placement` accepts.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

PATTERNS = ("all", "odd", "even", "first", "last")
PLACEMENT_PATH = "model.placement"
GRID_POINT_KEY = "grid_point"  # Tune key holding one budget-filtered point of the grid


class Domain(BaseModel):
    """Exactly one of the fields: how the values of one config field are searched."""

    model_config = ConfigDict(extra="forbid")

    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "Domain":
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(type(self).model_fields)}, got "
                             f"{', '.join(given) or 'none'}")
        if self.kind in ("grid", "choice") and not self.values:
            raise ValueError(f"{self.kind}: needs at least one value, got an empty list")
        if self.kind in ("uniform", "loguniform", "randint"):
            low, high = getattr(self, self.kind)
            if not low < high:
                raise ValueError(f"{self.kind}: needs low < high, got [{low}, {high}]")
            if self.kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: needs low > 0, got {low}")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)

    @property
    def values(self) -> list[Any] | None:
        """The finite values of a grid/choice domain, None for continuous ones."""
        return self.grid if self.grid is not None else self.choice

    @property
    def finite(self) -> bool:
        return self.kind in ("grid", "choice")


# ---- placements ---------------------------------------------------------------------------------


def placement_labels(values: Sequence[Any]) -> list[str]:
    """Expand the placement values of a domain (presets, mappings, generators) into unique labels."""
    labels: list[str] = []
    for value in values:
        for label in _expand_placement(value):
            if label not in labels:
                labels.append(label)
    return labels


def _expand_placement(value: Any) -> list[str]:
    if value is None or isinstance(value, str):
        return [value if value is not None else "none"]
    if isinstance(value, Mapping) and set(value) == {"stages", "patterns"}:
        stages, patterns = list(value["stages"]), list(value["patterns"])
        if not stages or not patterns:
            raise ValueError(f"placement generator {dict(value)}: stages and patterns must not be empty")
        unknown = [p for p in patterns if p not in PATTERNS]
        if unknown:
            raise ValueError(f"placement generator: unknown pattern(s) {unknown}; patterns: {', '.join(PATTERNS)}")
        labels = []
        for pattern in patterns:
            for count in range(1, len(stages) + 1):
                for subset in itertools.combinations(stages, count):
                    labels.append("+".join(f"{stage}:{pattern}" for stage in subset))
        return labels
    if isinstance(value, Mapping):
        parts = []
        for stage, indices in value.items():
            text = indices if isinstance(indices, str) else ",".join(str(int(i)) for i in indices)
            parts.append(f"{stage}:{text}")
        return ["+".join(parts)]
    raise ValueError(f"placement value {value!r}: expected a preset name, {{stage: [indices] | 'all'}} "
                     f"or {{stages: [...], patterns: [...]}}")


def placement_from_label(label: str, stage_depths: Mapping[str, int]) -> str | dict[str, Any] | None:
    """`se-stage3` -> itself (a preset); `res3:odd+res4:1,3` -> {res3: [1, 3], res4: [1, 3]}."""
    if label == "none":
        return None
    if ":" not in label:
        return label
    placement: dict[str, Any] = {}
    for part in label.split("+"):
        stage, _, text = part.partition(":")
        depth = stage_depths.get(stage)
        if depth is None:  # left for modules.placement.resolve to explain
            placement[stage] = [int(i) for i in text.split(",")] if text not in PATTERNS else text
            continue
        placement[stage] = _pattern_indices(text, depth)
    return placement


def _pattern_indices(text: str, depth: int) -> list[int] | str:
    patterns = {"all": "all", "odd": list(range(1, depth, 2)), "even": list(range(0, depth, 2)),
                "first": [0], "last": [depth - 1]}
    if text in patterns:
        return patterns[text]
    return [int(i) for i in text.split(",")]


# ---- from the YAML space to Tune ---------------------------------------------------------------


def parse_space(raw: Mapping[str, Any]) -> dict[str, Domain]:
    """Parse `{path: domain}`; placement values become labels. Errors name the path."""
    from pydantic import ValidationError

    space: dict[str, Domain] = {}
    problems = []
    for path, raw_domain in raw.items():
        if "." not in path and isinstance(raw_domain, Mapping) and not set(raw_domain) & set(Domain.model_fields):
            problems.append(f"search.space.{path}: keys are dotted config paths, e.g. "
                            f"`{path}.<field>: {{grid: [...]}}`, not nested sections")
            continue
        try:
            domain = Domain.model_validate(raw_domain)
            if path == PLACEMENT_PATH and domain.finite:
                domain = Domain(**{domain.kind: placement_labels(domain.values)})
        except ValidationError as error:
            problems.extend(f"search.space.{path}: {item['msg'].removeprefix('Value error, ')}"
                            for item in error.errors())
            continue
        except ValueError as error:
            problems.append(f"search.space.{path}: {error}")
            continue
        space[path] = domain
    if problems:
        raise ValueError("\n".join(problems))
    return space


def grid_points(space: Mapping[str, Domain]) -> list[dict[str, Any]]:
    """The cartesian product of the grid domains, as `{path: value}` points (one empty point if none)."""
    grids = {path: domain.grid for path, domain in space.items() if domain.kind == "grid"}
    return [dict(zip(grids, combination)) for combination in itertools.product(*grids.values())]


def to_tune_space(space: Mapping[str, Domain], points: list[dict[str, Any]] | None,
                  algorithm: Literal["grid", "random", "optuna"]) -> dict[str, Any]:
    """The Ray Tune param_space: grid points under GRID_POINT_KEY, every other domain sampled.

    `algorithm="grid"` keeps grid domains as one grid_search over the (budget-filtered) `points`;
    random and Optuna searches draw grid values like choices (Optuna has no grid).
    """
    from ray import tune

    param_space: dict[str, Any] = {}
    for path, domain in space.items():
        if domain.kind == "grid" and algorithm == "grid":
            continue
        if domain.finite:
            param_space[path] = tune.choice(domain.values)
        elif domain.kind == "randint":
            param_space[path] = tune.randint(*domain.randint)
        else:
            param_space[path] = getattr(tune, domain.kind)(*getattr(domain, domain.kind))
    if algorithm == "grid" and points is not None and any(d.kind == "grid" for d in space.values()):
        param_space[GRID_POINT_KEY] = tune.grid_search(points)
    return param_space


def trial_overrides(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's Tune config flattened back to `{dotted path: value}`."""
    overrides = {key: value for key, value in config.items() if key != GRID_POINT_KEY}
    overrides.update(config.get(GRID_POINT_KEY) or {})
    return overrides


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any],
                    stage_depths: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A copy of the raw training config with `{dotted path: value}` set (placement labels resolved)."""
    import copy

    from training.config import set_path

    raw = copy.deepcopy(dict(base))
    for path, value in overrides.items():
        if path == PLACEMENT_PATH and isinstance(value, str):
            value = placement_from_label(value, stage_depths or {})
        set_path(raw, path, value)
    return raw
