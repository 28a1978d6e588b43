"""The typed schema of one evaluation: which registered model, on which data, logged where.

What `attnlab evaluate --config FILE` reads and `POST /evaluations` takes (light: no torch, so the
service validates it in its API process). `attnlab evaluate --model URI --data ...` builds one.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from datamodules import ImageDataConfig, VideoDataConfig

# models:/NAME/VERSION or models:/NAME@ALIAS (registry), runs:/RUN_ID/PATH, or a local model folder.
REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[0-9]+)|@(?P<alias>[A-Za-z_][A-Za-z0-9_-]*))$")


class FolderData(BaseModel):
    """Every file of a class-folder tree root/<class>/<file>, labelled by its folder (a model class)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["folder"] = "folder"
    root: str = Field(description="root/<class>/<image or video file>; class folders are class names of the model")
    batch_size: int = Field(32, gt=0, description="images (or videos) per network call")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes for decoding")


EvaluationData = Annotated[ImageDataConfig | VideoDataConfig | FolderData, Field(discriminator="kind")]


class EvaluationTracking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str | None = None  # None = MLFLOW_TRACKING_URI, else the embedded store
    experiment: str = "attnlab-evaluations"


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=1000, description="models:/NAME@ALIAS, models:/NAME/VERSION, "
                       "runs:/RUN_ID/classifier or a model folder")
    # None = the test split of the model's own training data (its data config and seed, from its contract).
    data: EvaluationData | None = None
    seed: int | None = Field(None, description="seed of the data's splits; None = the model's training seed")
    # MLflow run name of the evaluation; None = eval-<model name>-<version or alias>.
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)
    tracking: EvaluationTracking = Field(default_factory=EvaluationTracking)

    @model_validator(mode="after")
    def _known_model_uri(self) -> EvaluationConfig:
        if self.model.startswith("models:/") and not REGISTRY_URI.match(self.model):
            raise ValueError(f"model: {self.model!r} is not models:/NAME/VERSION or models:/NAME@ALIAS")
        return self

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        found = REGISTRY_URI.match(self.model)
        tail = (f"{found['name']}-{found['version'] or found['alias']}" if found
                else self.model.rstrip("/").split("/")[-2 if self.model.startswith("runs:/") else -1])
        return "eval-" + re.sub(r"[^A-Za-z0-9._-]", "-", tail)[:120]
