"""The typed schema of one training run, loaded from YAML with `--set a.b=value` overrides.

The same `TrainConfig` is what `attnlab train`, the Ray Tune trainable and the REST API accept.
Everything is checked before any work starts: unknown fields, bad values (pydantic), and the
cross-field facts pydantic cannot see alone — the backbone exists, the block family exists, the
family options are ones the block takes, and the placement resolves against the backbone's stages.
Errors come out as one message with a line per problem: `model.family: 'foo' is not one of ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from datamodules import DataConfig
from datamodules.config import DATA_KINDS
from modules.families import BASELINE, FAMILIES, family
from training.init_config import InitConfig

if TYPE_CHECKING:
    from torch import nn


class ConfigError(ValueError):
    """A configuration problem, already formatted for a person: one `path: problem` per line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    family: Literal[(*FAMILIES, BASELINE)]  # a block family of modules/families.py, or none (baseline)
    backbone: str
    # Preset name (modules.placement.PRESETS) or {stage: [0-based block indices] | "all"};
    # None = the family's default preset (nonlocal nl-5, se se-all, selfattn sa-stage4).
    placement: str | dict[str, list[int] | Literal["all"]] | None = None
    # One name everywhere: SE's r, Non-local's bottleneck C -> C/r. None = the family's default.
    reduction: int | None = Field(default=None, ge=1)
    # Family-specific keyword options of the block, e.g. {squeeze: avg} for SE.
    block: dict[str, Any] = Field(default_factory=dict)
    # Channels-last memory format; "auto": where a measured conv step says it is faster (training/hardware.py).
    channels_last: bool | Literal["auto"] = False
    compile: bool = False  # torch.compile the network's forward (slow first step; useful on GPU)
    # Starting weights (file, run, MLflow model) and fine-tuning controls: training/init_config.py.
    init: InitConfig = Field(default_factory=InitConfig)

    def block_kwargs(self) -> dict[str, Any]:
        """The family options with `reduction` merged in (left out when None: the family's default)."""
        options = dict(self.block)
        if self.reduction is not None:
            options["reduction"] = self.reduction
        return options

    def build(self, *, num_classes: int, in_channels: int = 3) -> nn.Module:
        """The network this section describes: backbone with the family's blocks at the placement.

        The one place a config becomes a network: training, the config check and the search budget
        (both on the meta device) build through it, so they all see the same net."""
        from modules.backbones import build_backbone

        baseline = self.family == BASELINE
        return build_backbone(self.backbone, num_classes=num_classes, in_channels=in_channels,
                              block=None if baseline else self.family,
                              placement=None if baseline else self.placement, **self.block_kwargs())


class OptimConfig(_Section):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)  # adamw only
    weight_decay: float = Field(default=1e-4, ge=0)
    # Norm weights and biases get no weight decay (the papers' reference training code).
    decay_norm_and_bias: bool = False
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = Field(default=0.0, ge=0)  # linear warmup from lr/100; fractions allowed
    milestones: list[int] = Field(default_factory=list)  # step schedule: epochs where lr *= gamma
    gamma: float = Field(default=0.1, gt=0, le=1)


class TrainerConfig(_Section):
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"  # auto | ddp | ddp_spawn | fsdp | ...: any Lightning strategy name
    num_nodes: int = Field(default=1, ge=1)
    # "auto": bf16-mixed where this machine runs it fast (CUDA with bf16; CPUs with AMX/AVX512-BF16, confirmed
    # by a measurement), else 32-true — training/hardware.py; the shipped configs use it.
    precision: Literal["32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true", "auto"] = "32-true"
    max_epochs: int = Field(default=1, ge=1)
    max_steps: int = -1  # -1 = no step limit
    limit_train_batches: int | float | None = None  # int = batches, float = fraction
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    log_every_n_steps: int = Field(default=10, ge=1)
    # `last.ckpt` is rewritten every this many optimizer steps, so a killed run loses at most these.
    checkpoint_every_n_steps: int = Field(default=50, ge=1)
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = Field(default=1, ge=1)
    deterministic: bool = False
    enable_progress_bar: bool = True


class TrackingConfig(_Section):
    uri: str | None = None  # None = embedded sqlite:///$ATTNLAB_HOME/mlflow.db
    experiment: str = "attnlab"
    register_as: str | None = None  # registered model name; None = don't register
    alias: str | None = "candidate"  # alias given to the registered version
    log_model: bool = True
    figures: bool = True  # the family's paper figures as artifacts
    figure_batches: int = Field(default=8, ge=1)  # test batches the figures average over


class ClusterConfig(_Section):
    kind: Literal["local", "ray"] = "local"
    address: str | None = None  # Ray address; None = start or join a local cluster
    num_workers: int = Field(default=2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1, gt=0)
    storage_path: str | None = None  # Ray Train checkpoints; None = $ATTNLAB_HOME/ray_results
    # Worker failures (a killed process, a lost node) Ray Train recovers from by restarting the workers
    # from the last reported checkpoint, in the same MLflow run; one more fails the run.
    max_failures: int = Field(default=3, ge=0)


class TrainConfig(_Section):
    # Stable run name: running the same name again resumes it (checkpoints and MLflow run).
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)
    seed: int = 0
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _check_model_against_registries(self) -> "TrainConfig":
        problems = self.registry_problems(self.model)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @classmethod
    def registry_problems(cls, model: ModelConfig) -> list[str] | tuple[str, ...]:
        """Where the cross-field registry check runs (it builds the net, so it imports torch). Subclasses
        may run it elsewhere: the service asks a helper process, keeping torch out of the API process."""
        return model_problems(model)


def model_problems(model: ModelConfig) -> list[str]:
    """Cross-field checks against the block/backbone registries: `path: problem` lines."""
    from modules.backbones import BACKBONES, stage_depths
    from modules.placement import resolve

    problems = []
    if model.backbone not in BACKBONES:
        problems.append(f"model.backbone: {model.backbone!r} is not one of {', '.join(sorted(BACKBONES))}")
    if model.family != BASELINE and model.family not in FAMILIES:
        problems.append(f"model.family: {model.family!r} is not one of {', '.join(sorted(FAMILIES))}, {BASELINE}")
    if problems:
        return problems
    if model.family == BASELINE:
        if model.block or model.placement is not None:
            problems.append("model.block/model.placement: family 'none' (baseline) takes no blocks")
        return problems

    allowed = family(model.family).options()
    unknown = sorted(set(model.block) - set(allowed))
    if unknown:
        problems.append(f"model.block: unknown option(s) {', '.join(unknown)} for family "
                        f"{model.family!r}; allowed: {', '.join(allowed)}")
    if model.placement is not None:
        try:
            resolve(model.placement, stage_depths(model.backbone))
        except ValueError as error:
            problems.append(f"model.placement: {error}")
    if not problems:
        problems.extend(_build_problems(model))
    return problems


def _build_problems(model: ModelConfig) -> list[str]:
    """Build the network on the meta device (no memory, no init time): the block and backbone
    reject bad option values and incompatible combinations (e.g. selfattn on a 3D backbone)."""
    import torch

    try:
        with torch.device("meta"):
            model.build(num_classes=10)
    except (ValueError, TypeError) as error:
        where = "model.block" if any(key in str(error) for key in model.block) else "model"
        return [f"{where}: {error}"]
    return []


# ---- loading ------------------------------------------------------------------------------------


def read_raw_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """The YAML mapping in `path` with `a.b=value` overrides applied (values YAML-parsed), not yet validated."""
    path = Path(path)
    try:
        with open(path) as handle:  # a stream with a name: YAML errors say `in "<path>", line N`
            raw = yaml.safe_load(handle) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for override in overrides or []:
        apply_override(raw, override)
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> TrainConfig:
    """Read YAML (or start from `base`), apply `a.b=value` overrides (values YAML-parsed), validate."""
    if path is not None:
        raw = read_raw_config(path, overrides)
    else:
        raw = dict(base or {})
        for override in overrides or []:
            apply_override(raw, override)
    return validate_config(raw, source=str(path) if path else None)


def apply_override(raw: dict, override: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (`1e-3`, `[1, 2]`, `null`)."""
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected KEY.PATH=VALUE, e.g. optim.lr=0.01")
    try:
        set_path(raw, key.strip(), yaml.safe_load(value) if value.strip() else None)
    except ConfigError as error:
        raise ConfigError(f"--set {override!r}: {error}") from None


def set_path(raw: dict, path: str, value: Any) -> None:
    """Set the dotted `path` (`optim.lr`) in a raw config dict, creating missing sections: the one
    way `--set` overrides and search-space values reach a config."""
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{part!r} is not a section")
        node = child
    node[leaf] = value


def validate_config(raw: dict, source: str | None = None) -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_errors(error, source)) from None


def format_errors(error: ValidationError, source: str | None = None) -> str:
    """Pydantic errors as `path: problem` lines naming the allowed values or fields."""
    lines = []
    for item in error.errors():
        path = _display_path(item["loc"])
        if item["type"] == "union_tag_invalid":  # the location stops at the union: add the tag field
            path += "." + str(item.get("ctx", {}).get("discriminator", "kind")).strip("'").removesuffix("()")
        lines.append(f"{path}: {_describe(item)}" if path else _describe(item))
    header = f"invalid config{f' {source}' if source else ''}:"
    return "\n".join([header] + [f"  {line}" for line in lines])


def _display_path(loc: tuple) -> str:
    # Discriminated unions add the tag ("image") to the location; a reader thinks in YAML keys.
    parts = [str(part) for part in loc if part not in DATA_KINDS or part == loc[-1]]
    return ".".join(parts)


def _describe(item: dict) -> str:
    kind, ctx, value = item["type"], item.get("ctx", {}), item.get("input")
    if kind == "literal_error":
        expected = ctx.get("expected", "").replace(" or ", ", ").replace("'", "")
        return f"{value!r} is not one of {expected}"
    if kind == "extra_forbidden":
        allowed = _allowed_fields(item["loc"][:-1])
        return "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":  # the location stops at the union: name the tag field too
        return f"{ctx.get('tag')!r} is not one of {ctx.get('expected_tags', '').replace(chr(39), '')}"
    if kind == "value_error":
        return str(ctx.get("error", item["msg"]))
    return f"{item['msg']} (got {value!r})" if not isinstance(value, dict) else item["msg"]


def _allowed_fields(loc: tuple) -> list[str]:
    """Field names of the section at `loc`, walking the schema (and discriminated data kinds)."""
    model: type[BaseModel] | None = TrainConfig
    for part in loc:
        if model in DATA_KINDS.values() or part in DATA_KINDS:
            model = DATA_KINDS.get(part, model)
            continue
        field = model.model_fields.get(part) if model else None
        annotation = field.annotation if field else None
        if part == "data":
            model = None  # resolved by the discriminator tag that follows
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields) if model else []


def to_yaml(cfg: TrainConfig) -> str:
    """The resolved config (defaults filled in), as logged with every run."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def flatten(cfg: TrainConfig) -> dict[str, Any]:
    """`section.field` -> value, for MLflow params (and search spaces)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node

    walk("", cfg.model_dump(mode="json"))
    return flat
