"""A run's starting weights: `model.init.source` resolved to tensors, then loaded into the built network.

Sources (nothing is downloaded; README "Fine-tuning" says where the files come from):

- a file: `torch.save(model.state_dict())` of torchvision / timm, a timm training checkpoint, an
  attnlab run's `.ckpt`, or `.safetensors` (Hugging Face's timm weights). Read with
  `torch.load(weights_only=True)`: a file cannot run code. Recorded by path and SHA-256.
- an attnlab run name (`run:NAME`, or a bare NAME without '/' or a weights suffix): the checkpoint its MLflow
  run recorded when it finished (the copy logged to its artifacts when the local file is gone or damaged,
  e.g. on another machine), else the newest whole checkpoint in `$ATTNLAB_HOME/runs/NAME/checkpoints`.
  Local files are checked against their SHA-256 sidecar (training/checkpoints.py): a damaged one is
  named in a warning and skipped, never loaded.
- an MLflow model: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/RUN_ID/model`, from the run's
  tracking store; recorded as `models:/NAME/VERSION` (an alias is resolved to its version once, at start).

`resolve(cfg)` happens before the data are read, so a bad source fails first, with a message naming
the source and what was expected; `load(net, resolved, cfg)` fills the network (modules/pretrained)
and returns the LoadingReport; `configure(module, report, cfg)` applies the fine-tuning controls.
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training import tracking
from training.init_config import MODEL_URI, RUN_PREFIX, RUN_URI, SOURCE_FORMS, is_file_source

if TYPE_CHECKING:
    import torch

    from modules.pretrained import LoadingReport
    from training.config import TrainConfig

FILE_EXPECTED = ("expected a state dict saved with torch.save(model.state_dict()), a timm checkpoint, an attnlab "
                 ".ckpt or a .safetensors file")


class InitError(ValueError):
    """The starting weights cannot be used; the message names the source and what was expected."""


@dataclass
class InitSource:
    """Where the weights came from, as recorded with the run (tags `attnlab.init.*`) and its model."""

    source: str  # as given in the config
    kind: str  # file | run | model
    path: str | None = None
    sha256: str | None = None
    model_uri: str | None = None  # models:/NAME/VERSION (an alias resolved) or runs:/RUN_ID/PATH
    model_name: str | None = None
    model_version: str | None = None
    run_id: str | None = None  # the MLflow run that produced the weights
    run_name: str | None = None  # its attnlab run name
    format: str | None = None  # filled once loaded: torchvision/timm/attnlab layout

    def as_dict(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self).items() if value is not None}


@dataclass
class Resolved:
    state: dict[str, torch.Tensor]
    info: InitSource


def resolve(cfg: TrainConfig) -> Resolved | None:
    """The source's tensors and description; None without `model.init.source`; InitError if unusable."""
    source = cfg.model.init.source
    if source is None:
        return None
    uri = tracking.tracking_uri(cfg.tracking.uri)
    if MODEL_URI.match(source) or RUN_URI.match(source):
        return _from_mlflow_model(source, uri)
    if is_file_source(source):
        try:
            path = Path(source).expanduser()
        except RuntimeError:  # "~someone/..." for an unknown user
            raise InitError(f"model.init.source {source!r}: cannot expand '~'; give an absolute path") from None
        return _from_file(source, path)
    return _from_run(source, source.removeprefix(RUN_PREFIX), uri)


def load(net, resolved: Resolved | None, cfg: TrainConfig) -> LoadingReport | None:
    """Fill `net` from `resolved` as `model.init` says; the report, or None when there is no source."""
    if resolved is None:
        return None
    from modules.pretrained import LoadError, load_pretrained

    init = cfg.model.init
    try:
        report = load_pretrained(net, resolved.state, head=init.head, strict=init.strict,
                                 selfattn_from_conv=init.selfattn_from_conv)
    except LoadError as error:
        raise InitError(f"model.init.source {init.source!r} does not fit model.backbone {cfg.model.backbone!r} "
                        f"(family {cfg.model.family!r}):\n{error}\n(model.init.strict: false loads the rest, "
                        f"keeps a fresh initialisation for these and lists them in the loading report)") from None
    resolved.info.format = report.source_format
    report.source = resolved.info.as_dict()
    if report.warnings:
        warnings.warn(f"model.init.source {init.source!r}, strict: false: {len(report.warnings)} problem(s) "
                      f"passed: " + "; ".join(report.warnings), stacklevel=2)
    return report


def configure(module, report: LoadingReport | None, cfg: TrainConfig) -> None:
    """Freeze / frozen BN / lr multipliers on the LightningModule over `report`'s network."""
    module.init_report = report
    if report is None:
        return
    from modules.pretrained import fine_tuning

    init = cfg.model.init
    try:
        controls = fine_tuning(module.net, report, freeze=init.freeze, frozen_bn=init.frozen_bn,
                               new_lr_multiplier=init.new_lr_multiplier)
    except ValueError as error:
        raise InitError(f"model.init.freeze: {error}") from None
    module.lr_multipliers = controls.lr_multipliers
    module.frozen_norms = controls.frozen_norms


def describe_init(report: LoadingReport | None) -> dict[str, Any]:
    """Where a network's starting weights came from, for a model card: {} for random initialisation."""
    if report is None:
        return {}
    return {**report.source, "tensors": report.summary()}


# ---- sources ----------------------------------------------------------------------------------


def _from_file(source: str, path: Path) -> Resolved:
    if not path.is_file():
        raise InitError(f"model.init.source {source!r}: no such file; expected one of: " + "; ".join(SOURCE_FORMS))
    state = _read_weights(source, path)
    return Resolved(state, InitSource(source, "file", path=str(path.resolve()), sha256=_sha256(path)))


def _read_weights(source: str, path: Path) -> dict[str, torch.Tensor]:
    import torch

    from modules.pretrained import NotAStateDict, unwrap

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and safetensors errors have no common base class
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InitError(f"model.init.source {source!r}: not a PyTorch checkpoint or safetensors file "
                        f"({reason[:200]}); {FILE_EXPECTED}") from None
    try:
        return unwrap(loaded)
    except NotAStateDict as error:
        raise InitError(f"model.init.source {source!r}: the file {error}; {FILE_EXPECTED}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _from_run(source: str, name: str, uri: str) -> Resolved:
    """The checkpoint of the attnlab run `name`: the one its MLflow run recorded, else its newest whole one."""
    run = tracking.find_named_run_anywhere(uri, name)
    recorded = run.data.tags.get(tracking.CHECKPOINT_TAG) if run is not None else None
    checkpoints = tracking.run_dir(name) / "checkpoints"
    path = _whole(Path(recorded)) if recorded else None
    if path is None and recorded:  # another machine, or the local file gone or damaged: the copy the run logged
        path = tracking.download_artifact(uri, run.info.run_id, f"checkpoints/{Path(recorded).name}",
                                          tempfile.mkdtemp(prefix="attnlab-init-"))
    damaged = ""
    if path is None:  # a run still training (or stopped): its newest whole checkpoint
        from training.checkpoints import CheckpointError, resume_point

        try:
            newest = resume_point(checkpoints)  # warns about each damaged file it steps over
        except CheckpointError as error:
            newest, damaged = None, f" ({error.args[0].partition('. Nothing')[0]})"
        path = Path(newest) if newest else None
    if path is None:
        known = "" if run is None else f" (MLflow run {run.info.run_id} has no checkpoint yet)"
        raise InitError(f"model.init.source {source!r}: not a file, and no attnlab run named {name!r} with a "
                        f"checkpoint in {checkpoints} or in the MLflow store {uri}{known}{damaged}; expected one "
                        "of: " + "; ".join(SOURCE_FORMS))
    state = _read_weights(source, path)
    return Resolved(state, InitSource(source, "run", path=str(path), sha256=_sha256(path),
                                      run_id=run.info.run_id if run else None, run_name=name))


def _whole(path: Path) -> Path | None:
    """`path` when it exists and matches its checksum; a damaged file is named in a warning, not loaded."""
    from training.checkpoints import ResumeWarning, inspect_checkpoint, sidecar

    if not path.is_file():
        return None
    if not sidecar(path).is_file():  # written before checksums: `_read_weights` still refuses a broken file
        return path
    _step, problem = inspect_checkpoint(path)
    if problem is None:
        return path
    warnings.warn(f"checkpoint {path} is damaged ({problem}); not loading it", ResumeWarning, stacklevel=3)
    return None


def _from_mlflow_model(source: str, uri: str) -> Resolved:
    from training.model_card import ContractMissing
    from training.pyfunc_model import load_network

    info = _model_version(source, uri)
    try:  # a registered classifier (its bare network) or a plain mlflow.pytorch model
        model = load_network(info.model_uri, uri)
    except (tracking.NotFound, ContractMissing) as error:
        raise InitError(f"model.init.source {source!r}: {error}") from None
    if not hasattr(model, "state_dict"):
        raise InitError(f"model.init.source {source!r}: {info.model_uri} is not a PyTorch network")
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    return Resolved(state, info)


def _model_version(source: str, uri: str) -> InitSource:
    """The registered version (or run) behind `source`; InitError naming what exists when it is unknown."""
    run_uri = RUN_URI.match(source)
    if run_uri:
        run = tracking.run_or_none(uri, run_uri["run_id"])
        if run is None:
            raise InitError(f"model.init.source {source!r}: no MLflow run {run_uri['run_id']} in {uri}")
        return InitSource(source, "model", model_uri=source, run_id=run.info.run_id,
                          run_name=run.data.tags.get(tracking.RUN_NAME_TAG))
    match = MODEL_URI.match(source)
    name = match["name"]
    try:
        version, run_id = tracking.resolve_model_version(uri, name, alias=match["alias"], version=match["version"])
    except tracking.NotFound as error:
        raise InitError(f"model.init.source {source!r}: {error}") from None
    run = tracking.run_or_none(uri, run_id) if run_id else None
    return InitSource(source, "model", model_uri=f"models:/{name}/{version}", model_name=name, model_version=version,
                      run_id=run_id, run_name=run.data.tags.get(tracking.RUN_NAME_TAG) if run else None)

