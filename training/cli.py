"""`attnlab train | demo | registry`: the training commands of the `attnlab` CLI.

Only light imports at the top: the heavy ones (torch, lightning, mlflow) happen inside the commands,
so `attnlab --help` and the service's commands stay fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")  # packaged; configs/demo.yaml links to it
HOME_NOTE = """\
Where things go: $ATTNLAB_HOME (default ~/.attnlab) holds the embedded MLflow store
(mlflow.db + mlartifacts/) and each run's checkpoints (runs/<name>/checkpoints/last.ckpt).
tracking.uri (or MLFLOW_TRACKING_URI) sends runs to any other MLflow server instead.
Running the same run name again resumes it; a finished run is reported, not repeated."""


def add_commands(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train one run from a YAML config (resumes a run of the same name)",
        epilog=HOME_NOTE, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", required=True, help="YAML run config, e.g. configs/se_resnet_cpu.yaml")
    _add_overrides(train)
    train.set_defaults(func=run_train)

    demo = subparsers.add_parser("demo", help="train a small SE-ResNet on Fashion-MNIST on CPU and register it",
                                 epilog=HOME_NOTE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_overrides(demo)
    demo.set_defaults(func=run_demo)

    registry = subparsers.add_parser("registry", help="browse and promote models in the MLflow registry")
    registry.add_argument("--tracking-uri", default=None,
                          help="MLflow URI (default: MLFLOW_TRACKING_URI, else sqlite:///$ATTNLAB_HOME/mlflow.db)")
    actions = registry.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="registered models").set_defaults(func=registry_list)
    show = actions.add_parser("show", help="versions of one registered model")
    show.add_argument("name")
    show.set_defaults(func=registry_show)
    promote = actions.add_parser("promote", help="point an alias (e.g. production) at a version")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--alias", required=True)
    promote.set_defaults(func=registry_promote)


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, value parsed as YAML (repeatable): --set optim.lr=0.01")


def run_train(args) -> int:
    return _train(Path(args.config), args.overrides)


def run_demo(args) -> int:
    return _train(DEMO_CONFIG, args.overrides, demo=True)


def _train(path: Path, overrides: list[str], demo: bool = False) -> int:
    from training.config import ConfigError, load_config

    try:
        cfg = load_config(path, overrides)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    if demo and cfg.data.dataset == "fashion_mnist" and not _fashion_mnist_present(cfg.data.root):
        print("Fashion-MNIST not found in /usr/share/datasets/fashion-mnist: run `make demo` (installs the "
              "Debian package dataset-fashion-mnist) or --set data.root=FOLDER with the four idx files",
              file=sys.stderr)
        return 2

    from training.checkpoints import CheckpointError, CheckpointWriteError
    from training.fit import fit
    from training.mlflow_logger import TrackingUnavailableError
    from training.run_lock import RunLockedError

    started = time.monotonic()
    try:
        result = fit(cfg)
    except (CheckpointWriteError, CheckpointError, RunLockedError, TrackingUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if result.run_id is None:  # a DDP rank other than 0: rank 0 prints the summary
        return 0
    _print_summary(result, time.monotonic() - started, demo)
    return 0


def _fashion_mnist_present(root: str | None) -> bool:
    folder = Path(root or "/usr/share/datasets/fashion-mnist")
    return folder.is_dir() and any(folder.glob("t10k-images*"))


def _print_summary(result, seconds: float, demo: bool) -> None:
    from training.tracking import browse_hint

    if result.already_complete:
        print(f"\nrun {result.name!r} is already complete (nothing trained); its stored result:")
    else:
        print(f"\nrun {result.name!r} finished in {seconds / 60:.1f} min")
    rows = [(key, f"{value:.4f}") for key, value in sorted(result.metrics.items())
            if key.startswith(("test/", "val/")) and "acc_class" not in key]
    _print_table(["metric", "value"], rows)
    print(f"MLflow run:  {result.run_id}")
    if result.checkpoint:
        print(f"checkpoint:  {result.checkpoint}")
    if result.model_version:
        print(f"registered:  version {result.model_version}")
    if demo and "test/acc" in result.metrics:
        print(f"\ntest accuracy on Fashion-MNIST: {result.metrics['test/acc']:.2%}")
    print(f"browse:      {browse_hint(result.tracking_uri, result.run_id)}")


def _print_table(headers: list[str], rows: list[tuple]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers)
    for row in rows:
        table.add_row(*["" if value is None else str(value) for value in row])
    console = Console()
    if not console.is_terminal:  # piped or captured: don't squeeze run ids into 80 columns
        console = Console(width=200)
    console.print(table)


def _uri(args) -> str:
    from training.tracking import tracking_uri

    return tracking_uri(args.tracking_uri)


def registry_list(args) -> int:
    from training.tracking import list_models

    rows = list_models(_uri(args))
    if not rows:
        print(f"no registered models in {_uri(args)}")
        return 0
    _print_table(["name", "latest version", "aliases"],
                 [(row["name"], row["latest"], row["aliases"]) for row in rows])
    return 0


def registry_show(args) -> int:
    from training.tracking import NotFound, model_versions

    try:
        rows = model_versions(_uri(args), args.name)
    except NotFound as error:
        print(error, file=sys.stderr)
        return 1
    _print_table(["version", "aliases", "status", "test/acc", "run id"],
                 [(r["version"], r["aliases"], r["status"],
                   None if r["test/acc"] is None else f"{r['test/acc']:.4f}", r["run_id"]) for r in rows])
    return 0


def registry_promote(args) -> int:
    from training.tracking import NotFound, promote

    try:
        promote(_uri(args), args.name, args.version, args.alias)
    except (NotFound, ValueError) as error:
        print(f"cannot promote {args.name} version {args.version}: {error}", file=sys.stderr)
        return 1
    print(f"{args.name}: alias {args.alias!r} -> version {args.version}")
    return 0
