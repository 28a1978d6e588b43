"""MLflow, all of it: where the store lives, runs (named, nested), logging, models, the registry.

Every MLflow call of attnlab goes through this module — training, the Tune driver and trials, the
CLI and the service (which reads it without importing torch: mlflow loads inside the functions).

Embedded default (no server needed): `sqlite:///$ATTNLAB_HOME/mlflow.db` with artifacts under
`$ATTNLAB_HOME/mlartifacts`; ATTNLAB_HOME defaults to `~/.attnlab`. Any other tracking URI (an
`http://` MLflow server, a Postgres URI) works by setting `tracking.uri` or MLFLOW_TRACKING_URI;
the model registry lives in the same store. A training run is found again by its stable name through
the tag `attnlab.run_name`; a search's trials are nested under its run with `mlflow.parentRunId`.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable
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
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag: the UI shows children under the parent
CHAMPION, CANDIDATE = "champion", "candidate"


class NotFound(LookupError):
    """No such registered model or version; the message says which."""


def default_tracking_uri() -> str:
    return f"sqlite:///{attnlab_home() / 'mlflow.db'}"


def default_artifact_root() -> str:
    return (attnlab_home() / "mlartifacts").as_uri()


def artifact_root(uri: str) -> str | None:
    """Where new experiments of a local store keep artifacts: `mlartifacts` beside its SQLite file
    (MLflow's own default, ./mlruns, would depend on the working directory). None for a server: it decides."""
    if uri == default_tracking_uri():
        return default_artifact_root()
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


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


@functools.lru_cache(maxsize=32)
def client(uri: str):
    """One MlflowClient per store (thread-safe; the registry lives in the same store)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def open_store(uri: str) -> None:
    """Create or migrate the store now (a fresh SQLite store takes seconds), not on first use."""
    client(uri).search_experiments(max_results=1)


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
    location = artifact_root(uri)
    return mlflow_client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})


def _quote(value: str) -> str:
    """A string literal for MLflow's search filter language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_run(uri: str, experiment: str, run_name: str, *, top_level: bool = False):
    """The MLflow run of a named training (latest if several), or None.

    `top_level`: skip nested runs (a search's trials), so a search name finds its parent run; runs
    created outside attnlab are then found by their MLflow run name too."""
    exp_id = experiment_id(uri, experiment, create=False)
    if exp_id is None:
        return None
    conditions = [f"tags.`{RUN_NAME_TAG}` = {_quote(run_name)}"]
    if top_level:
        conditions.append(f"attributes.run_name = {_quote(run_name)}")
    for condition in conditions:
        runs = client(uri).search_runs([exp_id], filter_string=condition, order_by=["attributes.start_time DESC"],
                                       max_results=20 if top_level else 1)
        if top_level:
            runs = [run for run in runs if PARENT_TAG not in run.data.tags]
        if runs:
            return runs[0]
    return None


def get_run(uri: str, run_id: str):
    return client(uri).get_run(run_id)


def create_run(uri: str, experiment: str, run_name: str, tags: dict[str, str], parent_run_id: str | None = None) -> str:
    """A new run (nested under `parent_run_id` when given); its id. `find_run` finds it by `run_name`
    only when `tags` carry RUN_NAME_TAG (a training's run; a search's parent run does not)."""
    if parent_run_id:
        tags = {**tags, PARENT_TAG: parent_run_id}
    return client(uri).create_run(experiment_id(uri, experiment), run_name=run_name, tags=tags).info.run_id


def child_runs(uri: str, experiment: str, parent_run_id: str) -> list:
    """The runs nested under `parent_run_id` (a search's trials)."""
    return client(uri).search_runs([experiment_id(uri, experiment)], max_results=10_000,
                                   filter_string=f"tags.`{PARENT_TAG}` = {_quote(parent_run_id)}")


def runs_under(uri: str, parent_run_id: str, status: str | None = None, limit: int = 10_000) -> list:
    """The runs nested under `parent_run_id`, oldest first, in the parent's experiment (the service
    knows a job's run, not its experiment); only those in `status` (e.g. RUNNING) if given."""
    condition = f"tags.`{PARENT_TAG}` = {_quote(parent_run_id)}"
    if status:
        condition += f" and attributes.status = {_quote(status)}"
    return client(uri).search_runs([get_run(uri, parent_run_id).info.experiment_id], filter_string=condition,
                                   max_results=limit, order_by=["attributes.start_time ASC"])


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    for key, value in params.items():
        client(uri).log_param(run_id, key, value)


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int = 0, model_id: str | None = None) -> None:
    """All `metrics` in one request, at `step`; `model_id` links them to a logged model (MLflow 3)."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client(uri).log_batch(run_id, metrics=[Metric(key, float(value), now, step, model_id=model_id)
                                           for key, value in metrics.items()])


def metric_history(uri: str, run_id: str, key: str) -> list:
    return client(uri).get_metric_history(run_id, key)


def set_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client(uri).set_tag(run_id, key, value)


def log_text(uri: str, run_id: str, text: str, path: str) -> None:
    client(uri).log_text(run_id, text, path)


def log_artifacts(uri: str, run_id: str, paths: Iterable[str | Path], folder: str) -> None:
    for path in paths:
        client(uri).log_artifact(run_id, str(path), folder)


def log_figures(uri: str, run_id: str, figures: dict[str, Any], folder: str = "figures") -> list[str]:
    """Log matplotlib figures as `<folder>/<file name>` and close them; returns the file names."""
    import matplotlib.pyplot as plt

    for file_name, figure in figures.items():
        client(uri).log_figure(run_id, figure, f"{folder}/{file_name}")
        plt.close(figure)
    return list(figures)


def end_run(uri: str, run_id: str, status: str = "FINISHED", tags: dict[str, str] | None = None) -> None:
    """Tag and close a run (FINISHED, KILLED or FAILED)."""
    set_tags(uri, run_id, tags or {})
    client(uri).set_terminated(run_id, status)


def reopen_run(uri: str, run_id: str) -> None:
    """Mark a resumed run RUNNING again."""
    client(uri).update_run(run_id, status="RUNNING")


def make_logger(uri: str, experiment: str, run_name: str, run_id: str | None):
    """Lightning's MLFlowLogger bound to the named run (continuing `run_id` when resuming), logging
    metrics asynchronously so a tracking-server outage does not stop training (training/mlflow_logger.py).

    The logger writes from global rank 0 only, so DDP and Ray workers produce one run.
    """
    from training.mlflow_logger import ResilientMLFlowLogger

    location = artifact_root(uri)
    return ResilientMLFlowLogger(
        experiment_name=experiment, run_name=run_name, tracking_uri=uri, run_id=run_id,
        tags={RUN_NAME_TAG: run_name}, log_model=False, artifact_location=location,
        spool=run_dir(run_name) / "unsent-metrics.jsonl",
    )


@contextmanager
def isolated_tracking_state():
    """Undo, on exit, what MLflow's fluent API and Lightning's MLFlowLogger leave in this process.

    mlflow.set_tracking_uri (called by MLFlowLogger too) also exports MLFLOW_TRACKING_URI (mlflow 3.x).
    Left behind, it would send every later run of a long-lived process (a search driver, a test
    session) to this store, since tracking_uri() honours that variable.
    """
    import mlflow

    exported, previous = os.environ.get("MLFLOW_TRACKING_URI"), _fluent_uri()
    try:
        yield
    finally:
        # None also drops the exported variable. Fallback when the set URI is unknown: the exported
        # variable alone, which yields the same effective URI (set_tracking_uri always exports it).
        mlflow.set_tracking_uri(None if previous is _UNKNOWN else previous)
        if exported is not None:
            os.environ["MLFLOW_TRACKING_URI"] = exported


_UNKNOWN = object()


def _fluent_uri() -> Any:
    """The URI given to `mlflow.set_tracking_uri` in this process (None: never set), or _UNKNOWN.

    No public getter tells a set URI from one read from the environment, so this reads MLflow's private
    `mlflow.tracking._tracking_service.utils._tracking_uri`; tests/training/test_private_apis.py fails
    when an MLflow upgrade moves it, and `isolated_tracking_state` falls back to the environment."""
    from mlflow.tracking._tracking_service import utils

    return getattr(utils, "_tracking_uri", _UNKNOWN)


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
    version = register_model(uri, info.model_uri, register_as)
    if alias:
        client(uri).set_registered_model_alias(register_as, alias, version)
    return version


def register_model(uri: str, model_uri: str, name: str) -> str:
    """Register a logged model (`runs:/<id>/model`) under `name`; the new version."""
    import mlflow

    with _fluent_tracking_uri(uri):
        return str(mlflow.register_model(model_uri, name).version)


def set_alias(uri: str, name: str, alias: str, version: str) -> None:
    """Point `alias` at an existing version. NotFound for an unknown model or version; ValueError
    when MLflow refuses the alias name."""
    from mlflow.exceptions import MlflowException

    versions = [row["version"] for row in registered_model(uri, name)["versions"]]
    if str(version) not in versions:
        raise NotFound(f"model {name!r} has no version {str(version)!r} (versions: {', '.join(versions) or 'none'})")
    try:
        client(uri).set_registered_model_alias(name, alias, str(version))
    except MlflowException as error:
        raise ValueError(f"alias {alias!r}: {error.message}") from error


def alias_by_champion_rule(uri: str, name: str, version: str, metric: str, mode: str, value: float) -> str:
    """Alias `version` `champion` when it beats the current champion on `metric` (strictly, or there is
    none yet), else `candidate`; returns the alias given."""
    alias = CHAMPION if _beats_champion(uri, name, metric, mode, value) else CANDIDATE
    client(uri).set_registered_model_alias(name, alias, version)
    return alias


def _beats_champion(uri: str, name: str, metric: str, mode: str, value: float) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        champion = client(uri).get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no such alias (or model) yet
        return True
    their = get_run(uri, champion.run_id).data.metrics.get(metric) if champion.run_id else None
    if their is None:
        return False  # cannot show that we beat it on this metric
    return value > their if mode == "max" else value < their


# ---- reading the registry and runs back (CLI `attnlab registry`, the service's routes) --------------


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """Metrics as JSON can carry them: NaN and infinities become None."""
    return {name: value if math.isfinite(value) else None for name, value in metrics.items()}


def run_summary(uri: str, run_id: str) -> dict[str, Any]:
    """Status, finite metrics, the latest step logged (training progress) and times of a run, and the
    newest model version registered from it (for a search's parent run: what the search registered)."""
    run = get_run(uri, run_id)
    steps = [metric.step for metric in run.data.to_proto().metrics]
    summary = {"run_id": run_id, "status": run.info.status, "metrics": _finite(run.data.metrics),
               "step": max(steps, default=None), "start_time": run.info.start_time, "end_time": run.info.end_time,
               "registered_model": None, "model_version": None}
    versions = client(uri).search_model_versions(f"run_id = {_quote(run_id)}")
    if versions:
        newest = max(versions, key=lambda v: int(v.version))
        summary.update(registered_model=newest.name, model_version=str(newest.version))
    elif REGISTERED_MODEL_TAG in run.data.tags:  # a search: the version's run is its best trial's
        summary.update(registered_model=run.data.tags[REGISTERED_MODEL_TAG],
                       model_version=run.data.tags.get(REGISTERED_TAG, "").partition("@")[0] or None)
    return summary


def registered_models(uri: str, prefix: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Registered models (name starting with `prefix`): name, description, aliases {alias: version},
    latest_versions, updated (ms since the epoch)."""
    filter_string = f"name LIKE {_quote(prefix.replace('%', '') + '%')}" if prefix else None
    return [{"name": model.name, "description": model.description or None,
             "aliases": {alias: str(version) for alias, version in (model.aliases or {}).items()},
             "latest_versions": [str(v.version) for v in (model.latest_versions or [])],
             "updated": model.last_updated_timestamp}
            for model in client(uri).search_registered_models(filter_string=filter_string, max_results=limit)]


def registered_model(uri: str, name: str, contracts: bool = False) -> dict[str, Any]:
    """One registered model with its versions, newest first, each with its aliases and its run's metrics
    (and with `contracts`, its contract: None when it has none or its MLmodel file cannot be read)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client(uri).get_registered_model(name)
    except MlflowException as error:
        raise NotFound(f"no registered model named {name!r}") from error
    aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():  # search results leave ModelVersion.aliases empty
        by_version.setdefault(version, []).append(alias)
    versions = []
    for version in client(uri).search_model_versions(f"name = {_quote(name)}"):
        metrics: dict[str, float | None] = {}
        if version.run_id:
            try:
                metrics = _finite(get_run(uri, version.run_id).data.metrics)
            except MlflowException:  # the run was deleted
                metrics = {}
        versions.append({"version": str(version.version), "run_id": version.run_id, "status": str(version.status),
                         "aliases": sorted(by_version.get(str(version.version), [])),
                         "created": version.creation_timestamp, "metrics": metrics})
        if contracts:
            versions[-1]["contract"] = _contract_or_none(uri, name, str(version.version))
    versions.sort(key=lambda row: int(row["version"]), reverse=True)
    return {"name": model.name, "description": model.description or None, "aliases": aliases,
            "latest_versions": [row["version"] for row in versions[:1]], "versions": versions}


def list_models(uri: str) -> list[dict[str, Any]]:
    """`attnlab registry list` rows: name, latest version, aliases as `alias=vN`."""
    return [{"name": model["name"], "latest": max(map(int, model["latest_versions"]), default=None),
             "aliases": ", ".join(f"{a}=v{v}" for a, v in sorted(model["aliases"].items())),
             "updated": model["updated"]}
            for model in registered_models(uri, limit=1000)]


def model_versions(uri: str, name: str) -> list[dict[str, Any]]:
    """`attnlab registry show NAME` rows, oldest version first; `contract` is the version's contract, None
    when it has none, or the ContractUnreadable error when its MLmodel file cannot be read."""
    from training.model_card import ContractUnreadable

    rows = []
    for row in reversed(registered_model(uri, name)["versions"]):
        try:
            contract = version_contract(uri, name, row["version"])
        except ContractUnreadable as error:
            contract = error
        rows.append({"version": int(row["version"]), "aliases": ", ".join(row["aliases"]), "run_id": row["run_id"],
                     "status": row["status"], "test/acc": row["metrics"].get("test/acc"), "contract": contract})
    return rows


def promote(uri: str, name: str, version: str, alias: str) -> None:
    """`attnlab registry promote`: point `alias` at `version`."""
    set_alias(uri, name, alias, version)


# ---- starting weights (model.init: training/init_weights.py, training/init_tracking.py) -----------------


def find_named_run_anywhere(uri: str, run_name: str):
    """The latest run of the named training in any experiment of the store, or None."""
    experiments = [experiment.experiment_id for experiment in client(uri).search_experiments()]
    if not experiments:
        return None
    runs = client(uri).search_runs(experiments, filter_string=f"tags.`{RUN_NAME_TAG}` = {_quote(run_name)}",
                                   order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def run_or_none(uri: str, run_id: str):
    """The run with this id, or None when the store has none."""
    from mlflow.exceptions import MlflowException

    try:
        return get_run(uri, run_id)
    except MlflowException:
        return None


def download_artifact(uri: str, run_id: str, path: str, destination: str | Path) -> Path | None:
    """A run's artifact copied under `destination`; None when the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    try:
        return Path(client(uri).download_artifacts(run_id, path, str(destination)))
    except (MlflowException, OSError):
        return None


def resolve_model_version(uri: str, name: str, *, alias: str | None = None,
                          version: str | None = None) -> tuple[str, str | None]:
    """(version, run id) of registered model `name` at `alias` or `version`; NotFound saying what exists."""
    from mlflow.exceptions import MlflowException

    try:
        model = registered_model(uri, name)
    except NotFound:
        names = ", ".join(sorted(row["name"] for row in registered_models(uri, limit=1000))) or "none"
        raise NotFound(f"no registered model named {name!r} in {uri} (registered models: {names})") from None
    try:
        found = client(uri).get_model_version_by_alias(name, alias) if alias else client(uri).get_model_version(name, version)
    except MlflowException:
        versions = ", ".join(sorted((row["version"] for row in model["versions"]), key=int)) or "none"
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(model["aliases"].items())) or "none"
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise NotFound(f"registered model {name!r} has no {what} (versions: {versions}; aliases: {aliases})") from None
    return str(found.version), found.run_id


def load_pytorch_model(uri: str, model_uri: str):
    """The network logged at `model_uri` (models:/NAME/VERSION, runs:/ID/PATH) in `uri`'s store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        with _fluent_tracking_uri(uri):
            return mlflow.pytorch.load_model(model_uri)
    except MlflowException as error:
        raise NotFound(f"cannot load a PyTorch model from {model_uri} in {uri}: {error.message}") from None


def describe_model_version(uri: str, name: str, version: str, tags: dict[str, str], description: str) -> None:
    """Tags on a registered version, and a sentence added to its description (e.g. the model it was
    fine-tuned from, after the classifier's one-line summary)."""
    for key, value in tags.items():
        client(uri).set_model_version_tag(name, version, key, value)
    current = client(uri).get_model_version(name, version).description or ""
    client(uri).update_model_version(name, version, description=f"{current} {description}".strip())


# ---- the raw-input classifier (training/pyfunc_model.py): logging, contracts, loading, evaluations ---------

CLASSIFIER_NAME = "classifier"  # what gets registered; the run's "model" stays the bare network
CLASSIFIER_ENTRY = Path(__file__).with_name("pyfunc_entry.py")  # MLflow's models-from-code file
CLASSIFIER_VERSION_TAGS = ("family", "backbone", "input_kind")


def classifier_signature():
    """Columns `content` (binary; base64 over HTTP, which MLflow's server decodes) or `path` (string),
    param `top_k`, one top-k row out per input."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    from training.model_card import DEFAULT_TOP_K

    return ModelSignature(
        inputs=Schema([ColSpec("binary", "content", required=False), ColSpec("string", "path", required=False)]),
        outputs=Schema([ColSpec("string", "input"), ColSpec("string", "label"), ColSpec("double", "probability"),
                        ColSpec(Array("string"), "classes"), ColSpec(Array("double"), "probabilities")]),
        params=ParamSchema([ParamSpec("top_k", "long", DEFAULT_TOP_K)]))


def log_classifier(uri: str, run_id: str, net, example, contract: dict[str, Any], register_as: str | None,
                   alias: str | None) -> str | None:
    """Log the bare network (`model`, on preprocessed tensors) and the raw-input classifier (`classifier`:
    that network, the contract as model metadata, `contract.json` and `model_card.md`) into `run_id`;
    register the classifier under `register_as` (alias, family/backbone/input tags and a one-line
    description on the version). Returns the registered version, if any."""
    import json
    import tempfile

    import mlflow
    import torch
    from mlflow.artifacts import download_artifacts

    from training.model_card import CONTRACT_KEY, card_markdown, summary

    if len(example) < 2:  # torch.export would fix the batch size to 1, and multi-clip videos need more
        example = torch.cat([example, example])
    log_pytorch_model(uri, run_id, net, example, register_as=None, alias=None)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]
    with tempfile.TemporaryDirectory(prefix="attnlab-classifier-") as folder, _fluent_tracking_uri(uri):
        folder = Path(folder)
        network = download_artifacts(artifact_uri=logged_model_uri(uri, run_id, "model"),
                                     dst_path=str(folder / "network"), tracking_uri=uri)
        (folder / "contract.json").write_text(json.dumps(contract, indent=2))
        (folder / "model_card.md").write_text(card_markdown(contract, register_as))
        artifacts = {"network": network, "contract": str(folder / "contract.json"),
                     "model_card": str(folder / "model_card.md")}
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            info = mlflow.pyfunc.log_model(name=CLASSIFIER_NAME, python_model=str(CLASSIFIER_ENTRY),
                                           artifacts=artifacts, signature=classifier_signature(),
                                           metadata={CONTRACT_KEY: contract}, pip_requirements=requirements)
    if not register_as:
        return None
    version = register_model(uri, info.model_uri, register_as)
    facts = {"family": contract["model"]["family"], "backbone": contract["model"]["backbone"],
             "input_kind": contract["input"]["kind"]}
    for key in CLASSIFIER_VERSION_TAGS:
        set_version_tag(uri, register_as, version, f"attnlab.{key}", str(facts[key]))
    client(uri).update_model_version(register_as, version, description=summary(contract))
    if alias:
        client(uri).set_registered_model_alias(register_as, alias, version)
    return version


def logged_model_uri(uri: str, run_id: str, name: str) -> str:
    """models:/<model id> of the run's newest logged model of that name (a resumed run or a search's best
    trial may hold several)."""
    found = client(uri).search_logged_models(
        experiment_ids=[get_run(uri, run_id).info.experiment_id],
        filter_string=f"source_run_id = {_quote(run_id)} AND name = {_quote(name)}",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}], max_results=1)
    if not found:
        raise NotFound(f"run {run_id} has no logged model named {name!r}")
    return f"models:/{found[0].model_id}"


def set_version_tag(uri: str, name: str, version: str, key: str, value: str) -> None:
    client(uri).set_model_version_tag(name, str(version), key, value)


def model_info(uri: str, model_uri: str):
    """MLflow's ModelInfo of any model URI (flavors, signature, metadata) from its MLmodel file alone;
    NotFound when there is no such model."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with _fluent_tracking_uri(uri):
        try:
            return mlflow.models.get_model_info(model_uri)
        except (MlflowException, OSError) as error:
            raise NotFound(f"{model_uri}: {getattr(error, 'message', error)}") from error


def load_pyfunc(uri: str, model_uri: str):
    """mlflow.pyfunc.load_model of a model URI in store `uri`; NotFound when it cannot be found."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with _fluent_tracking_uri(uri):
        try:
            return mlflow.pyfunc.load_model(model_uri)
        except (MlflowException, OSError) as error:
            raise NotFound(f"cannot load {model_uri}: {getattr(error, 'message', error)}") from error


def resolve_version(uri: str, name: str, version: str | None = None, alias: str | None = None):
    """The ModelVersion of NAME/VERSION or NAME@ALIAS; NotFound naming what is missing."""
    from mlflow.exceptions import MlflowException

    try:
        if version is not None:
            return client(uri).get_model_version(name, str(version))
        return client(uri).get_model_version_by_alias(name, alias)
    except MlflowException as error:
        raise NotFound(f"models:/{name}{f'/{version}' if version is not None else f'@{alias}'}: "
                       f"{error.message}") from error


def model_id_of(version) -> str | None:
    """The logged model (MLflow 3) behind a registered version: its model_id, else its models:/m-... source."""
    source = version.source or ""
    return version.model_id or (source.removeprefix("models:/") if source.startswith("models:/m-") else None)


def link_model_input(uri: str, run_id: str, model_id: str) -> None:
    """Record a logged model as an input of the run (an evaluation of it)."""
    from mlflow.entities import LoggedModelInput

    client(uri).log_inputs(run_id, models=[LoggedModelInput(model_id)])


def version_file(uri: str, name: str, version: str, relative: str) -> str:
    """Text of one file of a registered version's model folder. NotFound for an unknown version;
    ContractUnreadable when the file cannot be read (artifacts gone, store unreachable)."""
    from mlflow.artifacts import download_artifacts

    from training.model_card import ContractUnreadable

    resolve_version(uri, name, version)  # NotFound for an unknown model or version
    location = client(uri).get_model_version_download_uri(name, str(version))
    try:
        path = download_artifacts(artifact_uri=f"{location.rstrip('/')}/{relative}", tracking_uri=uri)
        return Path(path).read_text()
    except Exception as error:  # any artifact store's failure: files gone, server unreachable
        raise ContractUnreadable(f"model {name!r} version {version}: cannot read {relative} at {location} "
                                 f"({type(error).__name__}: {str(error)[:200]})") from error


def version_contract(uri: str, name: str, version: str) -> dict[str, Any] | None:
    """The contract in a registered version's MLmodel metadata; None when it has none."""
    import yaml

    from training.model_card import ContractUnreadable, contract_of_metadata

    text = version_file(uri, name, version, "MLmodel")
    try:
        return contract_of_metadata((yaml.safe_load(text) or {}).get("metadata"))
    except yaml.YAMLError as error:
        raise ContractUnreadable(f"model {name!r} version {version}: its MLmodel file is not YAML ({error})") from None


def _contract_or_none(uri: str, name: str, version: str) -> dict[str, Any] | None:
    from training.model_card import ContractUnreadable

    try:
        return version_contract(uri, name, version)
    except ContractUnreadable:
        return None


def version_card(uri: str, name: str, version: str) -> str | None:
    """The stored model card (Markdown) of a registered version; None for a version without one."""
    from training.model_card import ContractUnreadable

    try:
        return version_file(uri, name, version, "artifacts/model_card.md")
    except ContractUnreadable:
        if _contract_or_none(uri, name, version) is None:
            return None
        raise
