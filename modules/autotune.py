"""Choices made by measurement on the machine at hand, kept in memory and on disk.

cuDNN's benchmark mode (``torch.backends.cudnn.benchmark``) for our own choices: the first time a choice
is needed for a key (which attention kernel for this shape, dtype and device; whether bf16 pays on this
CPU), every candidate is run and timed, the fastest wins, the choice is logged and kept — in memory for
this process and in ``$ATTNLAB_HOME/cache/measured-choices.sqlite`` for the next processes: DDP ranks,
Tune trials and later runs on the same machine measure nothing. A fixed default tuned on one machine is
wrong on another (oneDNN beats MKL's AVX2 path on AMD, MKL and AMX win on Intel); a measurement is not.

The stored key names the machine (CPU model, torch version, intra-op threads, accelerator name), so a
home shared between different machines never hands one machine's choice to another. Ranks starting
together take a file lock around "look up, else measure and store": one measures, the others wait and
read its choice (they also agree, which matters when a choice changes numerics). A cache that cannot be
opened or written only costs time. Delete the file to measure again (e.g. after a BIOS or driver change).
"""

from __future__ import annotations

import fcntl
import json
import logging
import platform
import sqlite3
import time
from collections.abc import Callable, Mapping
from contextlib import closing, contextmanager
from functools import cache
from pathlib import Path

import torch

from datamodules.home import attnlab_home

log = logging.getLogger("attnlab.autotune")

_SCHEMA = """CREATE TABLE IF NOT EXISTS choices (
    topic TEXT NOT NULL, key TEXT NOT NULL, machine TEXT NOT NULL, choice TEXT NOT NULL,
    seconds TEXT NOT NULL, measured_at REAL NOT NULL, PRIMARY KEY (topic, key, machine))"""
_memory: dict[tuple[str, str, str], str] = {}


def cache_path() -> Path:
    return attnlab_home() / "cache" / "measured-choices.sqlite"


@cache
def cpu_model() -> str:
    """The CPU's marketing name (``lscpu``'s "Model name"), for cache keys and benchmark tables."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device, threads: bool = True) -> str:
    """What a measured choice depends on besides its key: the hardware, torch, and (``threads``) how many
    intra-op threads it may use."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} | torch {torch.__version__}"
    name = f"{cpu_model()} | torch {torch.__version__}"
    return f"{name} | {torch.get_num_threads()} threads" if threads else name


def time_candidates(candidates: Mapping[str, Callable[[], object]], device: torch.device,
                    repeats: int = 3) -> dict[str, float]:
    """Best wall-clock seconds of each candidate after one warm-up run, candidates interleaved.

    Interleaving spreads load from other processes over all candidates alike; the minimum is kept
    because load only ever slows a run down (timeit's rule).
    """
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for run in candidates.values():
        run()
    synchronize()
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def choose(topic: str, key: Mapping, candidates: Mapping[str, Callable[[], object]], device: torch.device,
           *, repeats: int = 3, decide: Callable[[dict[str, float]], str] | None = None,
           threads_matter: bool = True) -> str:
    """The name of the candidate chosen for (topic, key) on this machine: cached, else measured now.

    ``decide`` turns the timings into a choice (default: the fastest); it lets a caller demand a
    margin before leaving a safe default. ``key`` must be JSON-serialisable. ``threads_matter=False``
    shares the choice between thread counts: a choice every DDP rank must agree on is made before
    Lightning gives each rank its share of the cores.
    """
    entry = (topic, json.dumps(key, sort_keys=True), machine(device, threads_matter))
    if entry in _memory:
        return _memory[entry]
    with _exclusive(cache_path().with_suffix(".lock")):
        choice = _read(entry)
        if choice is None or choice not in candidates:
            seconds = time_candidates(candidates, device, repeats)
            choice = (decide or (lambda timings: min(timings, key=timings.get)))(seconds)
            _write(entry, choice, seconds)
            timings = ", ".join(f"{name} {value * 1e3:.1f} ms" for name, value in seconds.items())
            log.info("%s %s on %s: measured %s -> %s", topic, entry[1], entry[2], timings, choice)
    _memory[entry] = choice
    return choice


def choices() -> dict[tuple[str, str], str]:
    """{(topic, key as JSON): choice} made or read from disk by this process, e.g. for a benchmark's table."""
    return {(topic, key): choice for (topic, key, _), choice in _memory.items()}


def forget() -> None:
    """Drop this process's in-memory choices (the disk cache stays): tests and benchmarks re-read it."""
    _memory.clear()


@contextmanager
def _exclusive(path: Path):
    """An advisory lock across processes on this machine; without one (read-only home) nothing is locked."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _connect() -> sqlite3.Connection:
    connection = sqlite3.connect(cache_path(), timeout=60)
    connection.execute(_SCHEMA)
    return connection


def _read(entry: tuple[str, str, str]) -> str | None:
    try:
        with closing(_connect()) as connection:
            row = connection.execute("SELECT choice FROM choices WHERE topic = ? AND key = ? AND machine = ?",
                                     entry).fetchone()
    except sqlite3.Error as error:
        log.warning("measured-choice cache %s unreadable (%s); measuring", cache_path(), error)
        return None
    return row[0] if row else None


def _write(entry: tuple[str, str, str], choice: str, seconds: dict[str, float]) -> None:
    try:
        with closing(_connect()) as connection, connection:  # closed, and committed on success
            connection.execute("INSERT OR REPLACE INTO choices VALUES (?, ?, ?, ?, ?, ?)",
                               (*entry, choice, json.dumps(seconds), time.time()))
    except sqlite3.Error as error:
        log.warning("measured-choice cache %s not written (%s); the next process measures again",
                    cache_path(), error)
