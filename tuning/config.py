"""The search config: a training config plus a `search:` section, checked before any trial starts.

```yaml
name: se-ablation                 # the training config, as for `attnlab train` ...
data: {...}
model: {family: se, backbone: resnet18_small, placement: se-all, reduction: 16}
search:                           # ... plus this section
  algorithm: grid                 # grid | random | optuna (TPE)
  metric: val/acc
  mode: max
  space: {model.placement: {grid: [se-stage2, se-stage3]}, model.reduction: {grid: [4, 16]}}
  scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}
  resources: {cpu: 1, gpu: 0}     # per trial; gpu may be fractional; workers > 1 = Ray Train trial
  max_concurrent_trials: 2
  budget: {max_params: 2000000, max_gflops: 0.5, max_nonlocal_activation_mb: 256}
```

Budget pruning: grid points over budget are dropped from the grid before the search starts (and listed in the
report); configurations drawn by a sampler (choice/continuous domains of `model.*`) are checked by
the trial itself, which reports them infeasible (`infeasible=1`, worst metric) without training.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modules.families import BASELINE, FAMILIES
from training.config import ConfigError, TrainConfig, format_errors
from tuning import budget as budget_module
from tuning.space import PLACEMENT_PATH, Domain, apply_overrides, grid_points, parse_space

# Combinations of finite model/data values checked one by one before the search (more: bounds only).
MAX_CHECKED_COMBINATIONS = 2000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SchedulerSpec(_Section):
    kind: Literal["asha", "fifo"] = "asha"  # fifo = every trial runs to the end
    grace_period: int = Field(1, ge=1)  # reports a trial makes before ASHA may stop it
    reduction_factor: float = Field(2, gt=1)
    max_t: int | None = Field(None, ge=1)  # most reports of one trial; None = trainer.max_epochs


class ResourcesSpec(_Section):
    cpu: float = Field(1, gt=0)  # per trial (per worker when workers > 1); also torch's thread count
    gpu: float = Field(0, ge=0)  # fractions let several trials share one GPU
    workers: int = Field(1, ge=1)  # > 1: the trial runs its fit through Ray Train with this many workers


class BudgetSpec(_Section):
    max_params: int | None = Field(None, gt=0)
    max_gflops: float | None = Field(None, gt=0)  # forward pass of one sample
    max_nonlocal_activation_mb: float | None = Field(None, gt=0)  # largest NL affinity of one batch
    input_shape: list[int] | None = None  # (C, H, W) or (C, T, H, W); default: from the data config


class SearchSpec(_Section):
    # Storage folder ($ATTNLAB_HOME/searches/<name>) and MLflow parent run; default: the config's name.
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    space: dict[str, Any]  # dotted config path -> domain (tuning/space.py)
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    metric: str = "val/acc"
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(1, ge=1)  # grid: repeats of the grid; random/optuna: trials
    seed: int | None = None  # sampler seed; None = the config's seed
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(1, ge=0)  # retries of a failed trial
    report_every_n_steps: int | None = Field(None, ge=1)  # None: report after every validation
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    register_as: str | None = None  # registered model of the best trial; None: tracking.register_as or name
    rows: str = PLACEMENT_PATH  # ablation table layout: rows x columns -> metric
    columns: str = "model.reduction"


class SearchConfig(TrainConfig):
    search: SearchSpec

    @property
    def search_name(self) -> str:
        return self.search.name or self.name

    def base_raw(self) -> dict[str, Any]:
        """The training part as a plain dict (what each trial's config starts from)."""
        return self.model_dump(mode="json", exclude={"search"})


class SearchPlan(BaseModel):
    """The checked space: parsed domains, the budget-filtered grid, and what was pruned and why."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    space: dict[str, Domain]
    points: list[dict[str, Any]]
    pruned: list[dict[str, Any]] = Field(default_factory=list)  # {point..., "reason": ...}


def load_search_config(path: str | Path, overrides: list[str] | None = None) -> SearchConfig:
    from training.config import read_raw_config

    raw = read_raw_config(path, overrides)
    return validate_search_config(raw, source=str(path))


def validate_search_config(raw: dict[str, Any], source: str | None = None) -> SearchConfig:
    if "search" not in raw:
        raise ConfigError(f"invalid search config{f' {source}' if source else ''}:\n  search: required "
                          "section is missing (space, algorithm, metric, ...)")
    try:
        return SearchConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_errors(error, source).replace("invalid config", "invalid search config")) from None


def plan_search(cfg: SearchConfig) -> SearchPlan:
    """Parse and check the space against the training schema and the networks; prune the grid.

    Raises ConfigError with one `search.space.<path>: problem` line per problem.
    """
    try:
        space = parse_space(cfg.search.space)
    except ValueError as error:
        raise ConfigError(f"invalid search space:\n  {str(error).replace(chr(10), chr(10) + '  ')}") from None
    problems = [problem for path in space for problem in _path_problems(cfg, path)]
    if not space:
        problems.append("search.space: empty; give at least one `dotted.path: {grid|choice|...: ...}`")
    if problems:
        _raise(problems)
    base = cfg.base_raw()
    for path, domain in space.items():
        values = domain.values if domain.finite else list(getattr(domain, domain.kind))
        for value in values:
            problems.extend(f"search.space.{path}: value {value!r}: {line}"
                            for line in _trial_problems(base, {path: value}))
    if problems:
        _raise(problems)
    problems = _combination_problems(cfg, space)
    if problems:
        _raise(problems)
    points, pruned = [], []
    for point in grid_points(space):
        reason = point_over_budget(cfg, point, space)
        (pruned.append({**point, "reason": reason}) if reason else points.append(point))
    if not points:
        _raise([f"search.budget: every grid point is over budget, e.g. {pruned[0]}"])
    return SearchPlan(space=space, points=points, pruned=pruned)


def point_over_budget(cfg: SearchConfig, overrides: dict[str, Any],
                      space: dict[str, Domain] | None = None) -> str | None:
    """Why a configuration breaks the budget, or None. Points whose network is still sampled -> None."""
    budget = cfg.search.budget
    if all(getattr(budget, f) is None for f in ("max_params", "max_gflops", "max_nonlocal_activation_mb")):
        return None
    if space is not None and any(path.startswith(("model.", "data.")) and path not in overrides
                                 for path in space):
        return None  # the trial checks itself once its sampled values are known
    trial = trial_config(cfg.base_raw(), overrides)
    return budget_module.over_budget(cost_of(trial, budget), budget)


def cost_of(trial: TrainConfig, budget: BudgetSpec) -> budget_module.Cost:
    shape = budget_module.sample_shape(trial.data, budget.input_shape)
    return budget_module.estimate(trial.model, shape, batch_size=trial.data.batch_size)


def trial_config(base: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of one trial: base + overrides (placement labels resolved for its backbone)."""
    others = {k: v for k, v in overrides.items() if k != PLACEMENT_PATH}
    raw = apply_overrides(base, others)
    if PLACEMENT_PATH in overrides:
        from modules.backbones import stage_depths

        depths = stage_depths(raw["model"]["backbone"])
        raw = apply_overrides(raw, {PLACEMENT_PATH: overrides[PLACEMENT_PATH]}, depths)
    if raw["model"]["family"] == BASELINE:  # the baseline shares the search's space but has no blocks
        raw["model"]["placement"], raw["model"]["block"] = None, {}
    return TrainConfig.model_validate(raw)


def _trial_problems(base: dict[str, Any], overrides: dict[str, Any]) -> list[str]:
    try:
        trial_config(base, overrides)
    except ValidationError as error:
        return [line.strip() for line in format_errors(error).splitlines()[1:]]
    except ValueError as error:
        return [str(error)]
    return []


def _path_problems(cfg: SearchConfig, path: str) -> list[str]:
    """A dotted path must name a field of the training config (any key below a dict field)."""
    if path in ("name", "search") or path.startswith("search."):
        return [f"search.space.{path}: not searchable (trials are named by the search)"]
    model: Any = type(cfg)
    walked = []
    for part in path.split("."):
        fields = {name: f for name, f in model.model_fields.items() if name != "search"}
        if part not in fields:
            where = ".".join(walked) or "the top level"
            return [f"search.space.{path}: unknown config field {part!r}; fields of {where}: "
                    f"{', '.join(fields)}"]
        walked.append(part)
        annotation = fields[part].annotation
        if part == "data" and len(walked) == 1:
            model = type(cfg.data)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif getattr(annotation, "__origin__", None) is dict or annotation is dict:
            return []  # free-form section (model.block): its keys are checked per value
        else:
            model = None
            break
    if model is not None and len(walked) == len(path.split(".")):
        return [f"search.space.{path}: is a whole section; search one of its fields "
                f"({', '.join(model.model_fields)})"]
    if len(walked) < len(path.split(".")):
        return [f"search.space.{path}: {'.'.join(walked)} is a value, not a section"]
    return []


def _combination_problems(cfg: SearchConfig, space: dict[str, Domain]) -> list[str]:
    """Every finite combination of network-shaping values builds, and `reduction` divides its channels."""
    shaping = {p: d.values for p, d in space.items() if p.startswith("model.") and d.finite}
    combinations = list(itertools.islice(itertools.product(*shaping.values()), MAX_CHECKED_COMBINATIONS))
    base = cfg.base_raw()
    problems: list[str] = []
    for combination in combinations:
        overrides = dict(zip(shaping, combination))
        lines = _trial_problems(base, overrides)
        if lines:
            problems.extend(f"search.space: {_describe(overrides)}: {line}" for line in lines)
            continue
        trial = trial_config(base, overrides)
        family = FAMILIES.get(trial.model.family)  # None: the baseline
        if family is None or not family.reduction_divides_channels or trial.model.reduction is None:
            continue
        channels = _block_channels(trial, cfg.search.budget)
        bad = sorted({c for c in channels if c % trial.model.reduction})
        if bad:
            problems.append(f"search.space.model.reduction: {trial.model.reduction} does not divide the "
                            f"{'/'.join(map(str, bad))} channels of the {trial.model.family} blocks at "
                            f"{_describe(overrides)} (backbone {trial.model.backbone}); block channels "
                            f"there: {sorted(set(channels))}")
    return list(dict.fromkeys(problems))


def _block_channels(trial: TrainConfig, budget: BudgetSpec) -> tuple[int, ...]:
    without_reduction = trial.model.model_copy(update={"reduction": None})
    shape = budget_module.sample_shape(trial.data, budget.input_shape)
    return budget_module.estimate(without_reduction, shape).block_channels


def _describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{path}={value}" for path, value in overrides.items()) or "the base config"


def _raise(problems: list[str]) -> None:
    raise ConfigError("invalid search space:\n" + "\n".join(f"  {line}" for line in problems))
