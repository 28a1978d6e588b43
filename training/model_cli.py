"""`attnlab predict | evaluate`: use registered models from the command line.

Only light imports at the top (as in training/cli.py): torch and MLflow load inside the commands.
"""

from __future__ import annotations

from pathlib import Path

MODEL_HELP = "model URI: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/classifier or a model folder"
URI_HELP = "MLflow URI (default: MLFLOW_TRACKING_URI, else sqlite:///$ATTNLAB_HOME/mlflow.db)"


def add_commands(subparsers) -> None:
    predict = subparsers.add_parser("predict", help="top-k classes of image or video files with a registered model",
                                    description="Files or folders (searched recursively) of images or videos -> "
                                                "top-k classes. Unreadable files are reported and the rest predicted; "
                                                "the exit code is 1 when any input failed.")
    predict.add_argument("--model", required=True, help=MODEL_HELP)
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image/video files or folders")
    predict.add_argument("--top-k", type=int, default=5, help="classes per input (default 5)")
    predict.add_argument("--batch-size", type=int, default=32, help="images per network call (default 32)")
    output = predict.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument("--output", type=Path, metavar="FILE.csv", help="write a CSV file instead of a table")
    predict.add_argument("--tracking-uri", default=None, help=URI_HELP)
    predict.set_defaults(func=run_predict)

    evaluate = subparsers.add_parser(
        "evaluate", help="metrics of a registered model on a data set, logged as an MLflow run",
        description="Top-1/top-5, per-class (and for video clip- and video-level) accuracy and a confusion matrix "
                    "of a model on data, logged to MLflow and linked to the model version. Without --data: the "
                    "test split of the model's own training data.")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help=MODEL_HELP)
    source.add_argument("--config", type=Path, help="YAML evaluation config (training/evaluation_config.py)")
    evaluate.add_argument("--data", help="a run or data config (YAML), a class-folder tree root/<class>/<file> "
                                         "(every file), or a folder with the model's dataset files (idx, CIFAR)")
    evaluate.add_argument("--seed", type=int, help="seed of the data's splits (default: the model's training seed)")
    evaluate.add_argument("--name", help="MLflow run name (default eval-<model>-<version>)")
    evaluate.add_argument("--experiment", help="MLflow experiment (default attnlab-evaluations)")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a field of --config, e.g. --set data.batch_size=64 (repeatable)")
    evaluate.add_argument("--tracking-uri", default=None, help=URI_HELP)
    evaluate.set_defaults(func=run_evaluate)


def run_predict(args) -> int:
    from rich.progress import Progress

    from training import predict
    from training.pyfunc_model import load_classifier
    from training.tracking import tracking_uri

    err = _stderr()
    if args.top_k < 1 or args.batch_size < 1:
        err.print("error: --top-k and --batch-size must be >= 1", highlight=False)
        return 2
    classifier = _load(load_classifier, args.model, tracking_uri(args.tracking_uri), err)
    if classifier is None:
        return 2
    found = predict.gather(args.inputs, classifier.inputs.kind)
    rows = [predict.error_row(path, FileNotFoundError("no such file or folder")) for path in found.missing]
    if not found.files and not found.missing:
        err.print(f"error: no {classifier.inputs.kind} files in {', '.join(args.inputs)}", highlight=False)
        return 1
    with Progress(console=err, transient=True, disable=len(found.files) < 2) as progress:
        task = progress.add_task("predicting", total=len(found.files))
        rows += predict.predict_files(classifier, found.files, args.top_k, args.batch_size,
                                      lambda count: progress.advance(task, count))
    if args.json:
        print(predict.to_json(rows))
    elif args.output:
        args.output.write_text(predict.to_csv(rows))
        print(f"wrote {len(rows)} rows to {args.output}")
    else:
        _print_rows(rows)
    failed = sum(row.get("error") is not None for row in rows)
    if failed:
        err.print(f"{failed} of {len(rows)} inputs failed", highlight=False)
    return 1 if failed else 0


def _stderr():
    from rich.console import Console

    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=200)  # piped: no wrapping at 80


def _load(load_classifier, model_uri: str, uri: str, err):
    """The classifier, or None after printing why it cannot be used."""
    from training.model_card import ContractMissing
    from training.tracking import NotFound

    try:
        return load_classifier(model_uri, uri)
    except (ContractMissing, NotFound) as error:
        err.print(f"error: {error}", highlight=False)
    return None


def _print_rows(rows: list[dict]) -> None:
    from training.cli import _print_table

    table = []
    for row in rows:
        if row.get("error") is not None:
            table.append((row["input"], "-", "-", f"error: {row['error']}"))
            continue
        others = ", ".join(f"{name} {p:.3f}" for name, p in zip(row["classes"][1:], row["probabilities"][1:]))
        table.append((row["input"], row["label"], f"{row['probability']:.4f}", others))
    _print_table(["input", "class", "probability", "next classes"], table)


def run_evaluate(args) -> int:
    from pydantic import ValidationError

    from datamodules.raw_inputs import ContractError
    from training.config import ConfigError
    from training.evaluate import evaluate
    from training.model_card import ContractMissing

    err = _stderr()
    try:
        cfg = evaluation_config(args)
    except ValidationError as error:
        tags = ("image", "video", "folder")  # the data union's discriminator values, not YAML keys
        lines = [f"  {'.'.join(str(part) for part in item['loc'] if part not in tags)}: "
                 f"{item['msg'].removeprefix('Value error, ')}" for item in error.errors()]
        err.print("\n".join([f"invalid evaluation config{f' {args.config}' if args.config else ''}:", *lines]),
                  highlight=False)
        return 2
    except (ConfigError, ValueError, OSError) as error:
        err.print(f"error: {error}", highlight=False)
        return 2
    from training.tracking import NotFound

    try:
        result = evaluate(cfg)
    except (ContractMissing, ContractError, ValueError) as error:
        err.print(f"error: {error}", highlight=False)
        return 2
    except NotFound as error:
        err.print(f"error: {error}", highlight=False)
        return 1
    _print_evaluation(cfg, result)
    return 0


def evaluation_config(args):
    """The EvaluationConfig of --config (with --set) or of --model/--data/--seed/--name."""
    import yaml

    from training.config import apply_override, read_raw_config
    from training.evaluation_config import EvaluationConfig

    if args.config is not None:
        raw = read_raw_config(args.config, args.overrides)
    else:
        raw = {"model": args.model}
        for override in args.overrides:
            apply_override(raw, override)
    for key, value in (("seed", args.seed), ("name", args.name)):
        if value is not None:
            raw[key] = value
    if args.experiment or args.tracking_uri:
        raw.setdefault("tracking", {}).update({k: v for k, v in (("experiment", args.experiment),
                                                                 ("uri", args.tracking_uri)) if v})
    if args.data is not None:
        raw.update(_data_section(args.data, raw, yaml))
    return EvaluationConfig.model_validate(raw)


def _data_section(data: str, raw: dict, yaml) -> dict:
    """--data as config fields: a YAML run/data config, a class-folder tree, or a folder of dataset files."""
    path = Path(data)
    if path.is_file():
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"--data {data}: expected a YAML mapping (a run config or a data config)")
        if "data" in loaded:  # a run config: its data and seed (the split it was tested on)
            return {"data": loaded["data"], **({"seed": loaded["seed"]} if "seed" in loaded and "seed" not in raw
                                                else {})}
        return {"data": loaded}
    if not path.is_dir():
        raise ValueError(f"--data {data}: no such file or folder")
    if any(child.is_dir() and not child.name.startswith(".") for child in path.iterdir()):
        return {"data": {"kind": "folder", "root": str(path)}}
    from training.model_card import contract_of_metadata
    from training.tracking import model_info, tracking_uri

    contract = contract_of_metadata(model_info(tracking_uri((raw.get("tracking") or {}).get("uri")),
                                               raw["model"]).metadata)
    if contract is None:
        raise ValueError(f"--data {data}: a folder of dataset files needs the model's data config, and "
                         f"{raw['model']} has no attnlab contract")
    return {"data": {**contract["training"]["config"]["data"], "root": str(path)}}


def _print_evaluation(cfg, result) -> None:
    from training.cli import _print_table
    from training.tracking import ui_command

    print(f"evaluated {cfg.model} on {result.samples} samples")
    _print_table(["metric", "value"], [(key, f"{value:.4f}") for key, value in sorted(result.metrics.items())
                                       if "acc_class" not in key])
    per_class = [(key.removeprefix("eval/acc_class/"), f"{value:.4f}") for key, value in result.metrics.items()
                 if "acc_class" in key]
    if per_class:
        _print_table(["class", "accuracy"], per_class)
    print(f"MLflow run:  {result.run_id} ({', '.join(result.artifacts)})")
    print(f"browse:      {ui_command(result.tracking_uri)}")

