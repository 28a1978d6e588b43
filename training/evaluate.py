"""`attnlab evaluate`: a registered model's metrics on a data set, as an MLflow run linked to the model.

The model scores the data through its own contract — the raw samples (image pixels, image files,
video files and segments) go through the preprocessing the model carries, exactly as `predict`
and `mlflow models serve` do — so the figures are what users of the model will get. On the model's
own test split (the default: its training data config and seed) top-1 equals the training run's
`test/acc`: same samples, same pipeline, same multi-clip averaging, same torchmetrics accuracy.

Logged: `eval/acc`, `eval/acc_top5` (5+ classes), `eval/acc_class/<class>`, for video also
`eval/clip_acc` (each clip on its own; `eval/acc` is video-level), `eval/loss`, `eval/samples`; a
confusion-matrix figure and every prediction as CSV. The run names the model (tags, and the logged
model as the run's input, MLflow 3's link); the model version gets an `attnlab.evaluation` tag. The
MLflow calls are training.tracking's.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from training import tracking
from training.evaluation_config import REGISTRY_URI, EvaluationConfig, FolderData

MODEL_TAG = "attnlab.evaluation.model"
EVALUATION_TAG = "attnlab.evaluation"  # on the model version: the latest evaluation run and its accuracy


@dataclass
class EvaluationResult:
    run_id: str
    metrics: dict[str, float]
    samples: int
    tracking_uri: str
    model_version: str | None = None
    artifacts: list[str] = field(default_factory=list)


def evaluate(cfg: EvaluationConfig) -> EvaluationResult:
    from training.pyfunc_model import load_classifier

    uri = tracking.tracking_uri(cfg.tracking.uri)
    classifier = load_classifier(cfg.model, uri)
    dataset, names = evaluation_dataset(cfg, classifier)
    probabilities, clips, labels = score(classifier, dataset, cfg)
    metrics = compute_metrics(probabilities, clips, labels, classifier.classes)
    return log_evaluation(cfg, uri, classifier, metrics, probabilities, labels, names)


def evaluation_dataset(cfg: EvaluationConfig, classifier) -> tuple[Any, list[str]]:
    """A Dataset of (preprocessed input, model class index) over the evaluation data, and sample names."""
    from datamodules import build_datamodule
    from datamodules.raw_inputs import ContractError
    from datamodules.split_inputs import folder_samples, split_samples

    contract, inputs = classifier.contract, classifier.inputs
    if isinstance(cfg.data, FolderData):
        samples, labels = folder_samples(cfg.data.root, inputs.kind, classifier.classes)
    else:
        trained = contract["training"]["config"]
        data = cfg.data if cfg.data is not None else _training_data(trained)
        if data.kind != inputs.kind:
            raise ContractError(f"data.kind is {data.kind!r}, but the model takes {inputs.takes}")
        datamodule = build_datamodule(data, seed=cfg.seed if cfg.seed is not None else trained["seed"])
        datamodule.prepare_data()
        datamodule.setup("test")
        samples, labels = split_samples(datamodule, "test")
        labels = _model_labels(labels, list(datamodule.class_names), classifier.classes)
    names = [_sample_name(sample, index) for index, sample in enumerate(samples)]
    if inputs.kind == "video":
        from datamodules.scan import VideoRecord

        if samples and isinstance(samples[0], VideoRecord):
            records = [replace(record, label=label) for record, label in zip(samples, labels)]
            return inputs.dataset([], records=records), names
        return inputs.dataset(samples, labels), names
    return RawImageDataset(samples, labels, inputs), names


def _training_data(trained: dict[str, Any]):
    from pydantic import TypeAdapter

    from datamodules import DataConfig

    return TypeAdapter(DataConfig).validate_python(trained["data"])


def _model_labels(labels: list[int], data_classes: list[str], model_classes: list[str]) -> list[int]:
    """Data label indices -> the model's class indices, by class name."""
    missing = sorted({data_classes[label] for label in labels} - set(model_classes))
    if missing:
        raise ValueError(f"the data has classes the model does not know: {missing[:10]}; model classes: "
                         f"{', '.join(model_classes[:20])}")
    return [model_classes.index(data_classes[label]) for label in labels]


def _sample_name(sample: Any, index: int) -> str:
    return str(getattr(sample, "path", sample)) if not hasattr(sample, "shape") else f"sample {index}"


class RawImageDataset:
    """(float (C, H, W), label) of raw images through the model's preprocessing."""

    def __init__(self, samples: list, labels: list[int], inputs):
        self.samples, self.labels, self.inputs = samples, labels, inputs

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.inputs.tensor(self.samples[index], index), self.labels[index]


def score(classifier, dataset, cfg: EvaluationConfig):
    """(probabilities (N, classes), clip probabilities (N, K, classes) or None, labels (N,))."""
    import torch
    from torch.utils.data import DataLoader

    from modules.probabilities import clip_probabilities

    data = cfg.data
    batch_size = data.batch_size if data is not None else _training_data(
        classifier.contract["training"]["config"]).batch_size
    workers = data.num_workers if data is not None else 0
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    probabilities, clips, labels = [], [], []
    with torch.inference_mode():
        for x, y in loader:
            if x.dim() == classifier.input_dims + 1:  # (B, K, ...): the test step's multi-clip rule
                per_clip = clip_probabilities(classifier.network, x)
                clips.append(per_clip)
                probabilities.append(per_clip.mean(1))
            else:
                probabilities.append(classifier.tensor_probabilities(x))
            labels.append(y)
    if not labels:
        raise ValueError("the evaluation data holds no samples")
    return torch.cat(probabilities), (torch.cat(clips) if clips else None), torch.cat(labels)


def compute_metrics(probabilities, clips, labels, classes: list[str]) -> dict[str, float]:
    """The training's test metrics (torchmetrics, micro top-1/top-5, per class), and clip-level accuracy."""
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy

    from modules.lightning.base import metric_safe

    count = len(classes)
    metrics = {"eval/acc": float(multiclass_accuracy(probabilities, labels, count, top_k=1, average="micro")),
               "eval/loss": float(torch.nn.functional.nll_loss(probabilities.clamp_min(1e-12).log(), labels)),
               "eval/samples": float(len(labels))}
    if count >= 5:
        metrics["eval/acc_top5"] = float(multiclass_accuracy(probabilities, labels, count, top_k=5, average="micro"))
    per_class = multiclass_accuracy(probabilities, labels, count, average=None)
    for name, value in zip(classes, per_class.tolist()):
        metrics[f"eval/acc_class/{metric_safe(name)}"] = value
    if clips is not None:
        flat_labels = labels.repeat_interleave(clips.shape[1])  # every clip carries its video's label
        metrics["eval/clip_acc"] = float(multiclass_accuracy(clips.flatten(0, 1), flat_labels, count, top_k=1,
                                                             average="micro"))
    return metrics


def log_evaluation(cfg: EvaluationConfig, uri: str, classifier, metrics: dict[str, float], probabilities, labels,
                   names: list[str]) -> EvaluationResult:
    """One MLflow run: params, metrics linked to the logged model, confusion matrix, predictions."""
    import matplotlib

    matplotlib.use("Agg")
    from torchmetrics.classification import MulticlassConfusionMatrix

    found = REGISTRY_URI.match(cfg.model)
    version = tracking.resolve_version(uri, found["name"], found["version"], found["alias"]) if found else None
    model_id = tracking.model_id_of(version) if version is not None else None
    contract = classifier.contract
    tags = {tracking.RUN_NAME_TAG: cfg.run_name, MODEL_TAG: cfg.model,
            f"{MODEL_TAG}.run_id": contract["training"]["run_id"] or ""}
    if version is not None:
        tags.update({f"{MODEL_TAG}.name": version.name, f"{MODEL_TAG}.version": str(version.version)})
    run_id = tracking.create_run(uri, cfg.tracking.experiment, cfg.run_name, tags)
    data = cfg.data.model_dump(mode="json") if cfg.data is not None else {}
    tracking.log_params(uri, run_id, {"model": cfg.model, "data.kind": data.get("kind", contract["input"]["kind"]),
                                      "data.root": str(data.get("root", "the model's training data")),
                                      "data.dataset": str(data.get("dataset")), "seed": str(cfg.seed)})
    tracking.log_metrics(uri, run_id, metrics, model_id=model_id)
    if model_id:
        tracking.link_model_input(uri, run_id, model_id)
    tracking.log_text(uri, run_id, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
                      "evaluation/config.yaml")
    matrix = MulticlassConfusionMatrix(len(classifier.classes))
    matrix.update(probabilities, labels)
    figure, axis = matrix.plot(labels=classifier.classes)
    axis.set_title(f"{cfg.model}: acc {metrics['eval/acc']:.4f} on {int(metrics['eval/samples'])} samples")
    side = 0.5 * len(classifier.classes)
    figure.set_size_inches(max(5, side + 3), max(4, side + 2))
    tracking.log_figures(uri, run_id, {"confusion_matrix.png": figure}, "evaluation")
    tracking.log_text(uri, run_id, _predictions_csv(names, probabilities, labels, classifier.classes),
                      "evaluation/predictions.csv")
    if version is not None:
        tracking.set_version_tag(uri, version.name, str(version.version), EVALUATION_TAG,
                                 f"run {run_id}: acc {metrics['eval/acc']:.4f} on {int(metrics['eval/samples'])}")
    tracking.end_run(uri, run_id, "FINISHED")
    return EvaluationResult(run_id=run_id, metrics=metrics, samples=int(metrics["eval/samples"]), tracking_uri=uri,
                            model_version=str(version.version) if version is not None else None,
                            artifacts=["evaluation/confusion_matrix.png", "evaluation/predictions.csv"])


def _predictions_csv(names: list[str], probabilities, labels, classes: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["sample", "label", "predicted", "probability", "correct"])
    values, indices = probabilities.max(-1)
    for name, label, index, value in zip(names, labels.tolist(), indices.tolist(), values.tolist()):
        writer.writerow([name, classes[label], classes[index], f"{value:.6f}", int(label == index)])
    return out.getvalue()
