"""Log a trained network as a usable model: the plain tensor model plus the raw-input classifier.

Into the run go two MLflow models:
- `model`: the bare network on preprocessed float tensors (mlflow.pytorch, torch.export), as before;
- `classifier`: the raw-input pyfunc (training/pyfunc_model.py) holding that network, its contract
  (training/model_card.py) as model metadata and `contract.json`, and `model_card.md`.
The classifier is what gets registered, so `models:/NAME@ALIAS` predicts on images and videos and
`mlflow models serve` takes them over HTTP. Its version carries the family, backbone and input kind
as tags and a one-line summary as its description, so the MLflow UI shows them too.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from training import tracking

CLASSIFIER_NAME = "classifier"
TENSOR_MODEL_NAME = "model"
ENTRY = Path(__file__).with_name("pyfunc_entry.py")
VERSION_TAGS = ("family", "backbone", "input_kind")


def signature():
    """Columns `content` (binary; base64 over HTTP) or `path` (string), param `top_k`, top-k rows out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    from training.pyfunc_model import DEFAULT_TOP_K

    return ModelSignature(
        inputs=Schema([ColSpec("binary", "content", required=False), ColSpec("string", "path", required=False)]),
        outputs=Schema([ColSpec("string", "input"), ColSpec("string", "label"), ColSpec("double", "probability"),
                        ColSpec(Array("string"), "classes"), ColSpec(Array("double"), "probabilities")]),
        params=ParamSchema([ParamSpec("top_k", "long", DEFAULT_TOP_K)]),
    )


def log_classifier(uri: str, run_id: str, net, example, contract: dict[str, Any], register_as: str | None,
                   alias: str | None) -> str | None:
    """Log the tensor model and the raw-input classifier into `run_id`; register the classifier if asked.

    `example`: a preprocessed batch for the tensor model's signature. Returns the registered version.
    """
    import mlflow
    import torch
    from mlflow.artifacts import download_artifacts

    from training.model_card import CONTRACT_KEY, card_markdown

    if len(example) < 2:  # torch.export would fix the batch size to 1, and multi-clip videos need more
        example = torch.cat([example, example])
    tracking.log_pytorch_model(uri, run_id, net, example, register_as=None, alias=None)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]
    with tempfile.TemporaryDirectory(prefix="attnlab-classifier-") as folder, tracking.isolated_tracking_state():
        mlflow.set_tracking_uri(uri)
        folder = Path(folder)
        network = download_artifacts(artifact_uri=latest_logged_model(uri, run_id, TENSOR_MODEL_NAME),
                                     dst_path=str(folder / "network"), tracking_uri=uri)
        (folder / "contract.json").write_text(json.dumps(contract, indent=2))
        (folder / "model_card.md").write_text(card_markdown(contract, register_as))
        artifacts = {"network": network, "contract": str(folder / "contract.json"),
                     "model_card": str(folder / "model_card.md")}
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            info = mlflow.pyfunc.log_model(name=CLASSIFIER_NAME, python_model=str(ENTRY), artifacts=artifacts,
                                           signature=signature(), metadata={CONTRACT_KEY: contract},
                                           pip_requirements=requirements)
    if not register_as:
        return None
    return register(uri, info.model_uri, register_as, alias, contract)


def latest_logged_model(uri: str, run_id: str, name: str) -> str:
    """models:/<model id> of the run's newest logged model of that name (a resumed run or a search's
    best trial may hold several)."""
    client = tracking.client(uri)
    experiment = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(
        experiment_ids=[experiment], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}], max_results=1)
    if not found:
        raise LookupError(f"run {run_id} has no logged model named {name!r}")
    return f"models:/{found[0].model_id}"


def register(uri: str, model_uri: str, name: str, alias: str | None, contract: dict[str, Any]) -> str:
    """Register `model_uri` under `name` (alias, tags and a summary description on the version)."""
    import mlflow

    from training.model_card import summary

    with tracking.isolated_tracking_state():
        mlflow.set_tracking_uri(uri)
        version = str(mlflow.register_model(model_uri, name).version)
    client = tracking.client(uri)
    facts = {"family": contract["model"]["family"], "backbone": contract["model"]["backbone"],
             "input_kind": contract["input"]["kind"]}
    for key in VERSION_TAGS:
        client.set_model_version_tag(name, version, f"attnlab.{key}", str(facts[key]))
    client.update_model_version(name, version, description=summary(contract))
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version
