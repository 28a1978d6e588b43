"""`model.init`: where a run's starting weights come from, and how it fine-tunes them.

```yaml
model:
  init:
    source: models:/demo-se-resnet18@candidate   # or a file, runs:/<id>/model, models:/NAME/3, a run name
    head: auto             # auto | reinit | keep: the classifier when the class counts differ
    strict: true           # unknown / missing / mismatched tensors are errors (false: warnings)
    selfattn_from_conv: true   # self-attention replacing a 3×3 conv starts as that conv (Theorem 1)
    freeze: null           # null | stem | res2 | res3 | res4 | res5: pretrained weights up to there stop training
    frozen_bn: false       # pretrained BatchNorm keeps the source's statistics and γ/β
    new_lr_multiplier: 1.0 # lr of new parameters (inserted blocks, head) = optim.lr × this
```

Every field is a dotted path a search space can vary (`model.init.new_lr_multiplier: {grid: [1, 10]}`).
No source (the default) = random initialisation; the fine-tuning fields then must keep their defaults.
Nothing is downloaded: sources are files and MLflow/run references (README "Fine-tuning").
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
RUN_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-fA-F]{8,64})/(?P<path>[^\s]+)$")
FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors", ".tar")  # a bare name with these is a file
RUN_PREFIX = "run:"  # run:<name> names an attnlab run explicitly (a bare name works when no such file exists)
SOURCE_FORMS = ("a file (torchvision/timm state dict, timm checkpoint, attnlab .ckpt, .safetensors)",
                "models:/NAME@ALIAS", "models:/NAME/VERSION", "runs:/RUN_ID/model", "an attnlab run name")
CONTROLS = ("head", "strict", "selfattn_from_conv", "freeze", "frozen_bn", "new_lr_multiplier")


class InitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(None, description="Starting weights: " + "; ".join(SOURCE_FORMS))
    head: Literal["auto", "reinit", "keep"] = Field(
        "auto", description="Classifier head: auto = load when the class counts match, else re-initialise; "
        "reinit = always re-initialise; keep = load, the class counts must match")
    strict: bool = Field(True, description="Unknown, missing or mismatched tensors stop the run (false: "
                         "warn, list them in the loading report, keep their fresh initialisation)")
    selfattn_from_conv: bool = Field(True, description="Self-attention that replaces a pretrained 3×3 conv "
                                     "starts as that conv (from_conv, Cordonnier et al. Theorem 1)")
    freeze: Literal["stem", "res2", "res3", "res4", "res5"] | None = Field(
        None, description="Pretrained parameters of the stem and the stages up to this one stop training; "
        "their BatchNorm statistics stay the source's")
    frozen_bn: bool = Field(False, description="Every pretrained BatchNorm keeps the source's statistics "
                            "and γ/β (eval mode while training)")
    new_lr_multiplier: float = Field(1.0, gt=0, description="Learning rate of new parameters (inserted "
                                     "blocks, re-initialised head) relative to optim.lr")

    @field_validator("source")
    @classmethod
    def _spelled_like_a_source(cls, source: str | None) -> str | None:
        problem = source_syntax_problem(source) if source is not None else ""
        if problem:
            raise ValueError(problem)
        return source

    @model_validator(mode="after")
    def _controls_need_a_source(self) -> InitConfig:
        if self.source is None:
            changed = [name for name in CONTROLS if getattr(self, name) != type(self).model_fields[name].default]
            if changed:
                raise ValueError(f"{changed[0]} needs model.init.source (starting weights to fine-tune); "
                                 f"without a source the network starts from random weights")
        return self


def is_file_source(source: str) -> bool:
    """A path (has a '/' or a weights suffix), not a model URI or run name: `./resnet50`, `w/r50.pth`, `r50.pth`."""
    if source.startswith(("models:", "runs:", RUN_PREFIX)):
        return False
    return "/" in source or source.startswith("~") or source.lower().endswith(FILE_SUFFIXES)


def source_syntax_problem(source: str) -> str:
    """Why `source` cannot be a source by its spelling alone ('' when it can)."""
    if not source.strip() or "\x00" in source:
        return f"{source!r} is empty; expected one of: " + "; ".join(SOURCE_FORMS)
    if source.startswith("models:") and not MODEL_URI.match(source):
        return f"{source!r} is not a model URI; expected models:/NAME@ALIAS or models:/NAME/VERSION"
    if source.startswith("runs:") and not RUN_URI.match(source):
        return f"{source!r} is not a run URI; expected runs:/RUN_ID/PATH, e.g. runs:/<32 hex digits>/model"
    if source.startswith(RUN_PREFIX) and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", source[len(RUN_PREFIX):]):
        return f"{source!r}: a run name after {RUN_PREFIX!r} uses letters, digits, '.', '_', '-'"
    return ""
