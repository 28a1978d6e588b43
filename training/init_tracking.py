"""MLflow records of a run's starting weights: tags naming the source, the loading report, model lineage.

- run tags `attnlab.init.*` (training/init_weights.py `InitSource`): the source as given, its kind,
  the file's path and SHA-256, or the model URI with the version an alias pointed to, the MLflow run
  and attnlab run name that produced the weights, and the layout they were read as;
- artifacts `init/loading_report.txt` (also printed) and `init/loading_report.json`: every tensor;
- a registered version fine-tuned from a registered model gets the version tag
  `attnlab.finetuned_from` = `models:/NAME/VERSION` and a description saying so, so the MLflow
  registry links the two versions.
The MLflow calls themselves are training/tracking.py's.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from training import tracking

if TYPE_CHECKING:
    from modules.pretrained import LoadingReport

REPORT_TEXT = "init/loading_report.txt"
REPORT_JSON = "init/loading_report.json"
FINETUNED_FROM_TAG = "attnlab.finetuned_from"
FINETUNED_FROM_RUN_TAG = "attnlab.finetuned_from_run"
TAG_PREFIX = "attnlab.init."
SOURCE_TAG = TAG_PREFIX + "source"


def record(uri: str, run_id: str, report: LoadingReport | None, existing_tags: dict[str, str]) -> None:
    """Print the report and log it with the source tags (tags only on the run's first start: a resumed
    run keeps naming the weights it started from, even if an alias has moved since)."""
    if report is None:
        return
    print(report.format())
    if SOURCE_TAG not in existing_tags:
        tracking.set_tags(uri, run_id, {TAG_PREFIX + key: value for key, value in report.source.items()})
    tracking.log_text(uri, run_id, report.format(), REPORT_TEXT)
    tracking.log_text(uri, run_id, json.dumps(report.to_dict(), indent=1), REPORT_JSON)


def link_version(uri: str, model_name: str | None, version: str | None, report: LoadingReport | None) -> None:
    """Tag a newly registered version with the registered model (or run) its weights started from."""
    if report is None or not model_name or version is None:
        return
    source = report.source
    origin = source.get("model_uri") if source.get("model_name") else None
    tags = {FINETUNED_FROM_TAG: origin} if origin else {}
    if source.get("run_id"):
        tags[FINETUNED_FROM_RUN_TAG] = source["run_id"]
    described = origin or source.get("model_uri") or source.get("path") or source.get("source")
    tracking.describe_model_version(uri, model_name, version, tags, f"Fine-tuned from {described}.")
