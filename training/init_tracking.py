"""MLflow records of a run's starting weights: tags naming the source, the loading report, model lineage.

- run tags `attnlab.init.*` (training/init_weights.py `InitSource`): the source as given, its kind,
  the file's path and SHA-256, or the model URI with the version an alias pointed to, the MLflow run
  and attnlab run name that produced the weights, and the layout they were read as;
- artifacts `init/loading_report.txt` (also printed) and `init/loading_report.json`: every tensor;
- a registered version fine-tuned from a registered model gets the version tag
  `attnlab.finetuned_from` = `models:/NAME/VERSION` and a description saying so, so the MLflow
  registry links the two versions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modules.pretrained import LoadingReport

REPORT_TEXT = "init/loading_report.txt"
REPORT_JSON = "init/loading_report.json"
FINETUNED_FROM_TAG = "attnlab.finetuned_from"
FINETUNED_FROM_RUN_TAG = "attnlab.finetuned_from_run"
SOURCE_TAG = "attnlab.init.source"


def record(client, run_id: str, report: LoadingReport | None, existing_tags: dict[str, str]) -> None:
    """Print the report and log it with the source tags (tags only on the run's first start: a resumed
    run keeps naming the weights it started from, even if an alias has moved since)."""
    if report is None:
        return
    from training.init_weights import TAG_PREFIX

    print(report.format())
    if SOURCE_TAG not in existing_tags:
        for key, value in report.source.items():
            client.set_tag(run_id, TAG_PREFIX + key, value)
    client.log_text(run_id, report.format(), REPORT_TEXT)
    client.log_dict(run_id, report.to_dict(), REPORT_JSON)


def link_version(client, model_name: str | None, version: str | None, report: LoadingReport | None) -> None:
    """Tag a newly registered version with the registered model (or run) its weights started from."""
    if report is None or not model_name or version is None:
        return
    source = report.source
    origin = source.get("model_uri") if source.get("model_name") else None
    if origin:
        client.set_model_version_tag(model_name, version, FINETUNED_FROM_TAG, origin)
    if source.get("run_id"):
        client.set_model_version_tag(model_name, version, FINETUNED_FROM_RUN_TAG, source["run_id"])
    described = origin or source.get("model_uri") or source.get("path") or source.get("source")
    client.update_model_version(model_name, version, description=f"Fine-tuned from {described}.")
