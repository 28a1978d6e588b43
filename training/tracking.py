"""MLflow: where the embedded store lives, the run of a named training, model logging and registry.

Embedded default (no server needed): `sqlite:///$ATTNLAB_HOME/mlflow.db` with artifacts under
`$ATTNLAB_HOME/mlartifacts`; ATTNLAB_HOME defaults to `~/.attnlab`. Any other tracking URI (an
`http://` MLflow server, a Postgres URI) works by setting `tracking.uri` or MLFLOW_TRACKING_URI.
A training run is found again by its stable name through the tag `attnlab.run_name`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datamodules.home import attnlab_home  # noqa: F401  (re-exported: training's callers use tracking.attnlab_home)

RUN_NAME_TAG = "attnlab.run_name"
COMPLETE_TAG = "attnlab.complete"  # "true" once fit, test, figures and model logging are done
CHECKPOINT_TAG = "attnlab.checkpoint"
VERSION_TAG = "attnlab.model_version"
# MLflow 3's UI opens an experiment without this tag on its GenAI "Traces" page; with it, on the runs.
EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
UI_URL_ENV = "ATTNLAB_MLFLOW_UI_URL"  # the MLflow UI on this store, if one is running (see browse_hint)
# On a search's parent run: what the search registered ("<version>@<alias>" of its best trial's model,
# and the model's name), since the version's own run is the trial's, not the parent's.
REGISTERED_TAG = "attnlab.registered_version"
REGISTERED_MODEL_TAG = "attnlab.registered_model"


def default_tracking_uri() -> str:
    return f"sqlite:///{attnlab_home() / 'mlflow.db'}"


def default_artifact_root() -> str:
    return (attnlab_home() / "mlartifacts").as_uri()


def tracking_uri(configured: str | None = None) -> str:
    """The configured URI, else MLFLOW_TRACKING_URI, else the embedded store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def run_dir(name: str) -> Path:
    """Local folder of a named run: checkpoints/ (last.ckpt, best-*.ckpt)."""
    return attnlab_home() / "runs" / name


def ui_command(uri: str) -> str:
    """The command that browses this store in the MLflow web UI."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    command = f"mlflow ui --backend-store-uri {uri}"
    if uri == default_tracking_uri():
        command += f" --default-artifact-root {default_artifact_root()}"
    return command


def browse_hint(uri: str, run_id: str | None) -> str:
    """Where to look at a run: the MLflow UI already serving this store (ATTNLAB_MLFLOW_UI_URL, set by
    `attnlab serve` for its jobs), else the command that starts one."""
    ui = os.environ.get(UI_URL_ENV, "").rstrip("/")
    if ui:
        return f"{ui}/#/runs/{run_id}" if run_id else ui
    return ui_command(uri)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str, create: bool = True) -> str | None:
    """Id of the named experiment; created (artifacts under $ATTNLAB_HOME when embedded) if asked."""
    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if create and experiment.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an older attnlab or by hand
            mlflow_client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        return experiment.experiment_id
    if not create:
        return None
    location = default_artifact_root() if uri == default_tracking_uri() else None
    return mlflow_client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})


def find_run(uri: str, experiment: str, run_name: str):
    """The MLflow run of a named training (latest if several), or None."""
    exp_id = experiment_id(uri, experiment, create=False)
    if exp_id is None:
        return None
    runs = client(uri).search_runs(
        [exp_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0] if runs else None


def make_logger(uri: str, experiment: str, run_name: str, run_id: str | None):
    """Lightning's MLFlowLogger bound to the named run (continuing `run_id` when resuming).

    The logger writes from global rank 0 only, so DDP and Ray workers produce one run.
    """
    from lightning.pytorch.loggers import MLFlowLogger

    location = default_artifact_root() if uri == default_tracking_uri() else None
    return MLFlowLogger(
        experiment_name=experiment, run_name=run_name, tracking_uri=uri, run_id=run_id,
        tags={RUN_NAME_TAG: run_name}, log_model=False, artifact_location=location,
    )


@contextmanager
def isolated_tracking_state():
    """Undo, on exit, what MLflow's fluent API and Lightning's MLFlowLogger leave in this process.

    mlflow.set_tracking_uri (called by MLFlowLogger too) also exports MLFLOW_TRACKING_URI (mlflow 3.x).
    Left behind, it would send every later run of a long-lived process (a search driver, a test
    session) to this store, since tracking_uri() honours that variable.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils

    exported, previous = os.environ.get("MLFLOW_TRACKING_URI"), utils._tracking_uri
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None also drops the exported variable
        if exported is not None:
            os.environ["MLFLOW_TRACKING_URI"] = exported


@contextmanager
def _fluent_tracking_uri(uri: str):
    """Point MLflow's fluent API at `uri` for one block only."""
    import mlflow

    with isolated_tracking_state():
        mlflow.set_tracking_uri(uri)
        yield


def log_pytorch_model(uri: str, run_id: str, net, example, register_as: str | None,
                      alias: str | None) -> str | None:
    """Log `net` (eval mode, CPU) with signature and a batch-2 example; register it if asked.

    mlflow 3.17 saves with torch.export (pt2) and marks the signature's -1 batch dimension as
    `Dim.AUTO`: with an example batch of 2 the batch size stays dynamic, so the saved model
    predicts on any batch size (a batch of 1 would specialise it to 1). Networks that torch.export
    cannot trace fall back to the pickle format. Returns the registered version, if any.
    """
    import mlflow
    import torch
    from mlflow.models import infer_signature

    net = net.eval().cpu()
    example = example[:2].float().cpu().contiguous()
    with torch.no_grad():
        output = net(example)
    signature = infer_signature(example.numpy(), output.numpy())
    # Explicit requirements: mlflow's inference re-loads the model in a subprocess (~40 s on 2 cores).
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]
    arguments = dict(name="model", signature=signature, input_example=example.numpy(),
                     pip_requirements=requirements)
    # nested: a caller (e.g. a tuning driver) may have its own run active in this process.
    with _fluent_tracking_uri(uri), mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        try:
            info = mlflow.pytorch.log_model(net, **arguments)
        except Exception as error:  # torch.export refuses some graphs: keep a loadable model
            print(f"torch.export failed ({type(error).__name__}: {error}); logging the model pickled")
            info = mlflow.pytorch.log_model(net, serialization_format="pickle", **arguments)
    if not register_as:
        return None
    with _fluent_tracking_uri(uri):
        version = mlflow.register_model(info.model_uri, register_as).version
    if alias:
        client(uri).set_registered_model_alias(register_as, alias, version)
    return str(version)


# ---- registry (attnlab registry list|show|promote) ---------------------------------------------


def list_models(uri: str) -> list[dict[str, Any]]:
    rows = []
    for model in client(uri).search_registered_models():
        latest = max((int(v.version) for v in model.latest_versions), default=None)
        rows.append({"name": model.name, "latest": latest,
                     "aliases": ", ".join(f"{a}=v{v}" for a, v in sorted(model.aliases.items())),
                     "updated": model.last_updated_timestamp})
    return rows


def model_versions(uri: str, name: str) -> list[dict[str, Any]]:
    mlflow_client = client(uri)
    model = mlflow_client.get_registered_model(name)  # raises a clear error if the name is unknown
    aliases: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():  # search results leave ModelVersion.aliases empty
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for version in mlflow_client.search_model_versions(f"name = '{name}'"):
        metrics = mlflow_client.get_run(version.run_id).data.metrics if version.run_id else {}
        rows.append({"version": int(version.version), "aliases": ", ".join(sorted(aliases.get(str(version.version), []))),
                     "run_id": version.run_id, "status": version.status,
                     "test/acc": metrics.get("test/acc")})
    return sorted(rows, key=lambda row: row["version"])


def promote(uri: str, name: str, version: str, alias: str) -> None:
    mlflow_client = client(uri)
    mlflow_client.get_model_version(name, str(version))  # raises a clear error if it doesn't exist
    mlflow_client.set_registered_model_alias(name, alias, str(version))
