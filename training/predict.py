"""`attnlab predict`: top-k classes of image or video files with a registered model.

Inputs are files or folders (searched recursively for the model's kind of file: images or
videos). Each file is read and preprocessed on its own, so an unreadable one becomes an error row
and the others are still predicted; images then go through the network in batches, videos one at a
time (a video is already a batch of its test clips).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLUMNS = ("input", "label", "probability", "classes", "probabilities", "error")


@dataclass
class Inputs:
    files: list[Path]
    missing: list[str]  # given paths that are neither a file nor a folder


def gather(paths: list[str], kind: str) -> Inputs:
    """Files as given, folders expanded (recursively, sorted) to their image or video files."""
    from datamodules.config import IMAGE_SUFFIXES
    from datamodules.split_inputs import VIDEO_SUFFIXES

    suffixes = IMAGE_SUFFIXES if kind == "image" else VIDEO_SUFFIXES
    files, missing = [], []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        elif path.is_file():
            files.append(path)
        else:
            missing.append(given)
    return Inputs(files, missing)


def predict_files(classifier, files: list[Path], top_k: int, batch_size: int = 32, progress=None) -> list[dict]:
    """One row per file (in order): the top-k classes, or the error that stopped that file."""
    from datamodules.raw_inputs import ContractError

    rows: dict[int, dict] = {}
    if classifier.inputs.kind == "image":
        for start in range(0, len(files), batch_size):
            good, tensors = [], []
            for index in range(start, min(start + batch_size, len(files))):
                try:
                    tensors.append(classifier.inputs.tensor(files[index], index))
                    good.append(index)
                except ContractError as error:
                    rows[index] = error_row(files[index], error)
            if tensors:
                import torch

                probabilities = classifier.tensor_probabilities(torch.stack(tensors))
                for index, row in zip(good, classifier.rows(probabilities, top_k, [str(files[i]) for i in good])):
                    rows[index] = row
            _advance(progress, min(start + batch_size, len(files)) - start)
    else:
        for index, path in enumerate(files):
            try:
                rows[index] = classifier.classify([str(path)], top_k)[0]
            except ContractError as error:
                rows[index] = error_row(path, error)
            _advance(progress, 1)
    return [rows[index] for index in range(len(files))]


def error_row(path: Path | str, error: Exception) -> dict[str, Any]:
    message = str(error)
    prefix = f"{path}: "
    return {"input": str(path), "label": None, "probability": None, "classes": [], "probabilities": [],
            "error": message[len(prefix):] if message.startswith(prefix) else message}


def _advance(progress, count: int) -> None:
    if progress is not None:
        progress(count)


def to_json(rows: list[dict]) -> str:
    return json.dumps([{column: row.get(column) for column in COLUMNS} for row in rows], indent=2)


def to_csv(rows: list[dict]) -> str:
    """One line per input; the top-k lists joined with ';'."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row["input"], row.get("label") or "",
                         "" if row.get("probability") is None else f"{row['probability']:.6f}",
                         ";".join(row.get("classes") or []),
                         ";".join(f"{p:.6f}" for p in row.get("probabilities") or []), row.get("error") or ""])
    return out.getvalue()
