"""A registered model's contract: what it takes, what it answers, how it was made — stored with it.

Every model attnlab logs carries this dict as MLflow model metadata (MLmodel `metadata.attnlab`),
as `contract.json` and as a readable `model_card.md` next to the network:

    classes        class names in output order
    input          kind (image | video), channels, the network's input shape per sample
    preprocessing  the test-time pipeline (datamodules.raw_inputs.preprocessing_contract)
    model          family, backbone, placement, reduction, block options
    init           where the initial weights came from (model.init; "random" when unset)
    training       run name, run id, experiment, the full resolved training config
    metrics        the run's test metrics

Logging and reading contracts are MLflow calls, in training.tracking (`log_classifier`,
`version_contract`, `model_info`); reading fetches the MLmodel file only (no weights, no torch), so
the registry CLI and the service's API process can show it. This module holds the contract itself.
"""

from __future__ import annotations

import json
from typing import Any

CONTRACT_KEY = "attnlab"
CONTRACT_VERSION = 1
DEFAULT_TOP_K = 5  # classes per input the classifier answers unless asked (params.top_k)
FAMILY_PAPERS = {
    "nonlocal": "Wang et al., Non-local Neural Networks, CVPR 2018 (arXiv:1711.07971)",
    "se": "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018 (arXiv:1709.01507)",
    "selfattn": "Cordonnier et al., On the Relationship between Self-Attention and Convolutional Layers, "
                "ICLR 2020 (arXiv:1911.03584)",
    "none": "baseline without attention blocks",
}
# What an attnlab model's contract holds; a model logged before contracts existed lacks all of it.
CONTRACT_FIELDS = ("class names", "input kind (image or video)",
                   "preprocessing (size, mean/std, clip length, frame interval, test clips)")


class ContractMissing(LookupError):
    """The model was logged without an attnlab contract (e.g. before contracts existed)."""


class ContractUnreadable(LookupError):
    """A registered version's MLmodel file cannot be read (artifacts gone or unreachable)."""


def build_contract(cfg, datamodule, metrics: dict[str, float], run_id: str | None) -> dict[str, Any]:
    """The contract of a model trained with `cfg` on `datamodule` (after setup)."""
    from datamodules.raw_inputs import preprocessing_contract

    preprocessing = preprocessing_contract(cfg.data, int(datamodule.sample_shape[0]))
    model = cfg.model
    init = getattr(model, "init", None)  # model.init (fine-tuning); its `source` None means random weights
    if getattr(init, "source", init) is None:
        init = None
    return {
        "version": CONTRACT_VERSION,
        "task": "classification",
        "classes": list(datamodule.class_names),
        "input": {"kind": preprocessing["kind"], "channels": preprocessing["channels"],
                  "shape": list(datamodule.sample_shape)},
        "preprocessing": preprocessing,
        "model": {"family": model.family, "backbone": model.backbone, "placement": model.placement,
                  "reduction": model.reduction, "block": dict(model.block)},
        "init": _plain(init) if init is not None else "random",
        "training": {"run_name": cfg.name, "run_id": run_id, "experiment": cfg.tracking.experiment,
                     "config": cfg.model_dump(mode="json")},
        "metrics": {key: float(value) for key, value in sorted(metrics.items()) if key.startswith("test/")},
    }


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def summary(contract: dict[str, Any]) -> str:
    """One line: family on backbone, input, classes, test accuracy."""
    model, shape = contract["model"], "x".join(str(s) for s in contract["input"]["shape"])
    accuracy = contract["metrics"].get("test/acc")
    return (f"{model['family']} on {model['backbone']}: {contract['input']['kind']} {shape} -> "
            f"{len(contract['classes'])} classes" + (f", test acc {accuracy:.4f}" if accuracy is not None else ""))


def card_markdown(contract: dict[str, Any], name: str | None = None) -> str:
    """The readable model card."""
    from datamodules.raw_inputs import preprocessing_steps

    model, training, p = contract["model"], contract["training"], contract["preprocessing"]
    uri = f"models:/{name}@<alias>" if name else f"runs:/{training['run_id']}/classifier"
    classes = ", ".join(f"{i} {c}" for i, c in enumerate(contract["classes"]))
    block = ", ".join(f"{key}={value}" for key, value in model["block"].items()) or "defaults"
    metrics = "\n".join(f"| {key} | {value:.4f} |" for key, value in contract["metrics"].items()
                        if "acc_class" not in key)
    steps = "\n".join(f"{i}. {step}" for i, step in enumerate(preprocessing_steps(p), start=1))
    example = "image.png" if p["kind"] == "image" else "clip.mp4"
    default = "the family's default"
    return f"""# {name or training['run_name']}

{summary(contract)}

## Model
- family: `{model['family']}` ({FAMILY_PAPERS.get(model['family'], 'unknown family')})
- backbone: `{model['backbone']}`, placement: `{model['placement'] or default}`, reduction: `{model['reduction'] or default}`
- block options: {block}
- initial weights: {json.dumps(contract['init'])}

## Input
{p['kind']}s, {p['channels']} channels; the network sees {contract['input']['shape']} per sample.
Preprocessing (the test split's pipeline of training):

{steps}

## Output
Top-k class names with probabilities. Classes in output order: {classes}

## Training
run `{training['run_name']}` (MLflow run `{training['run_id']}`, experiment `{training['experiment']}`);
the full configuration is in this model's metadata (`metadata.attnlab.training.config`).

| test metric | value |
|---|---|
{metrics}

## Use
```bash
attnlab predict --model {uri} {example}
attnlab evaluate --model {uri}
mlflow models serve -m {uri} --env-manager local
```
```python
model = mlflow.pyfunc.load_model("{uri}")
model.predict({{"{'content' if p['kind'] == 'image' else 'path'}": [...]}}, params={{"top_k": 5}})
```
"""


# ---- reading ------------------------------------------------------------------------------------


def contract_of_metadata(metadata: dict | None) -> dict[str, Any] | None:
    """The contract inside MLflow model metadata, or None."""
    return (metadata or {}).get(CONTRACT_KEY)


def missing_contract_message(model_uri: str, input_shape: str | None = None) -> str:
    """What a model without a contract lacks, and what it still does."""
    takes = f" on preprocessed float32 tensors {input_shape}" if input_shape else " on preprocessed float tensors"
    return (f"{model_uri} has no attnlab contract (it was logged before models carried one), so its "
            f"{', '.join(CONTRACT_FIELDS)} are unknown and it cannot take raw images or videos. "
            f"It still loads with mlflow.pyfunc.load_model and predicts{takes}. Train it again with "
            "`attnlab train` under a new run name to get a model that predicts on raw inputs.")
