"""Checkpoints that are whole or absent, and a resume point that steps over damaged ones.

Lightning's own writer serialises into memory, then lets fsspec write a temp file under $TMPDIR and
move it into place. When $TMPDIR is another filesystem the move copies over `last.ckpt` in place, so
a full disk or a crash mid-copy destroys the only resume point; and nothing checks a checkpoint's
bytes afterwards (torch.load accepts a bit-flipped tensor silently). Here instead:

- `VerifiedCheckpointIO` (a Lightning CheckpointIO plugin) writes `.<name>.tmp-<pid>` in the
  checkpoint's own folder and fsyncs it, writes `<name>.sha256` (JSON: SHA-256, size, global step),
  then renames both into place. A file it replaces from an earlier step is kept one generation as
  `<name>.prev` (with its `.sha256`): one older resume point if the newest is damaged later. Every byte-consuming write
  happens before any rename, so a failed write (full disk, quota, EIO, file-size limit) removes its
  partial temp file, leaves every existing checkpoint untouched and raises `CheckpointWriteError`
  naming the file, the OS error and the checkpoint that is still intact.
- `resume_point(folder)` returns the newest valid checkpoint by global step: a file with a sidecar
  must match its SHA-256; one without (older runs, other writers) must load. Each damaged file it
  steps over is named in a `ResumeWarning`. If checkpoints exist but none is valid it raises
  `CheckpointError` rather than silently training from step 0 into the same MLflow run.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

SIDECAR_SUFFIX = ".sha256"
PREVIOUS_SUFFIX = ".prev"
CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """No usable checkpoint to resume from, although checkpoint files exist."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the message names what is still intact."""

    def __init__(self, message: str, errno_value: int | None = None):
        super().__init__(message)
        self.errno = errno_value


class ResumeWarning(UserWarning):
    """A damaged checkpoint was skipped on resume."""


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def previous(path: Path) -> Path:
    return path.with_name(path.name + PREVIOUS_SUFFIX)


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Atomic, fsynced, checksummed checkpoint files on a local (or mounted shared) filesystem."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        import torch

        if storage_options is not None:
            raise TypeError("VerifiedCheckpointIO takes no storage_options")
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        record = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                  "global_step": checkpoint.get("global_step"), "epoch": checkpoint.get("epoch")}
        temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temp_sidecar = sidecar(temp)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_synced(temp, data)
            _write_synced(temp_sidecar, json.dumps(record).encode())
            if path.exists() and _recorded_step(path) != record["global_step"]:
                os.replace(path, previous(path))
                _replace_or_drop(sidecar(path), sidecar(previous(path)))
            os.replace(temp_sidecar, sidecar(path))
            os.replace(temp, path)
            _sync_folder(path.parent)
        except OSError as error:
            temp.unlink(missing_ok=True)
            temp_sidecar.unlink(missing_ok=True)
            raise CheckpointWriteError(write_failure_message(path, error), error.errno) from error

    def remove_checkpoint(self, path) -> None:
        path = Path(path)
        for stale in (path, sidecar(path), previous(path), sidecar(previous(path))):
            stale.unlink(missing_ok=True)


def write_failure_message(path: Path, error: OSError) -> str:
    code = errno.errorcode.get(error.errno or 0, "")
    message = f"could not write checkpoint {path}: {error.strerror or error}" + (f" ({code})" if code else "")
    intact = newest_recorded(path.parent)
    if intact is None:
        return message + f"; no earlier checkpoint exists in {path.parent}"
    where, step = intact
    return (f"{message}. The previous checkpoint {where} (step {step}) is intact: free space (or fix the "
            "cause) and run the same config again to resume from it")


def newest_recorded(folder: Path) -> tuple[Path, int] | None:
    """(checkpoint, step) with the highest step recorded in a sidecar, without reading checkpoints."""
    best = None
    for path in _candidates(folder):
        record = _read_sidecar(path)
        if record is not None and isinstance(record.get("global_step"), int):
            if best is None or record["global_step"] > best[1]:
                best = (path, record["global_step"])
    return best


def resume_point(folder: Path) -> str | None:
    """The newest valid checkpoint in `folder` (None when it holds none); damaged ones are warned about."""
    checked = []
    for path in _candidates(folder):
        step, problem = inspect_checkpoint(path)
        checked.append((step if step is not None else -1, path.stat().st_mtime, path, problem))
    checked.sort(key=lambda item: (item[0], item[1]), reverse=True)
    damaged = []
    for _step, _mtime, path, problem in checked:
        if problem is None:
            for bad, why in damaged:
                warnings.warn(f"checkpoint {bad} is damaged ({why}); resuming from {path} instead",
                              ResumeWarning, stacklevel=2)
            return str(path)
        damaged.append((path, problem))
    if damaged:
        listing = "; ".join(f"{path} ({why})" for path, why in damaged)
        raise CheckpointError(f"every checkpoint in {folder} is damaged: {listing}. Nothing was trained. To start "
                              "this run from step 0 (its MLflow run gets a second history), move them away")
    return None


def _candidates(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [path for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")
            and (path.suffix == ".ckpt" or path.name.endswith(".ckpt" + PREVIOUS_SUFFIX))]


def inspect_checkpoint(path: Path) -> tuple[int | None, str | None]:
    """(global step, None) for a valid checkpoint; (step if known, what is wrong) otherwise."""
    record = _read_sidecar(path)
    if record is not None:
        size = path.stat().st_size
        if size != record.get("bytes"):
            return record.get("global_step"), f"{size} bytes, {record.get('bytes')} were written: truncated"
        if _digest(path) != record.get("sha256"):
            return record.get("global_step"), "SHA-256 differs from the one written: bytes changed on disk"
        return record.get("global_step"), None
    try:
        import torch

        loaded = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        return int(loaded["global_step"]), None
    except Exception as error:  # any unreadable file: a zip error, a missing key, a pickle error
        return None, f"cannot be loaded: {str(error).splitlines()[0][:160]}"


def _recorded_step(path: Path) -> int | None:
    """The step the sidecar records (two saves at one step, e.g. epoch end, keep the older previous)."""
    record = _read_sidecar(path)
    return record.get("global_step") if record else None


def _read_sidecar(path: Path) -> dict | None:
    try:
        record = json.loads(sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_synced(path: Path, data) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_or_drop(source: Path, target: Path) -> None:
    if source.exists():
        os.replace(source, target)
    else:
        target.unlink(missing_ok=True)  # a stale record must not vouch for other bytes


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
