"""Lightning's MLFlowLogger, made to ride out a tracking-server outage without losing a metric.

With Lightning's default (synchronous) logging, every `log_metrics` call blocks training while the
server is down: no steps, no checkpoints, and after MLflow's retry window the run dies. Here metric
batches go through MLflow's asynchronous queue instead, so training and checkpointing go on while
each queued batch retries with MLflow's backoff (`MLFLOW_HTTP_REQUEST_MAX_RETRIES`=7,
`MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`=2 by default: attempts 0, 0, 4, 12, 28, 60, 124 and 244 s after
the first failure, so an outage of up to ~4 minutes loses nothing; `retry_window_seconds()` computes
it from the environment).

Before each checkpoint is written (`MetricsBeforeCheckpoint`), the queue is drained for up to
`CHECKPOINT_WAIT_SECONDS`, so a checkpoint never gets ahead of its metrics: a run killed later and
resumed from it re-logs everything after it, and nothing before it was still in memory. While the
server is down that wait is skipped (training goes on) until a batch gets through again.

`finalize()` (Lightning calls it when fit and test end) waits for every queued batch and sends any
that failed once more, synchronously (a second retry window). Values still not stored are appended
to `spool` (JSON lines in the run's folder) and the run stops with `TrackingUnavailableError`
saying how many; the next attempt of the run sends the spooled values first, so none is lost.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from concurrent.futures import wait
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

# The characters MLflow allows in a metric name (Lightning's MLFlowLogger drops the rest the same way).
_UNSAFE = re.compile(r"[^a-zA-Z0-9_/. -]+")
_RESEND_CHUNK = 1000
CHECKPOINT_WAIT_SECONDS = 10.0


class TrackingUnavailableError(RuntimeError):
    """The tracking server did not take some metric values within two retry windows."""


def retry_window_seconds() -> float:
    """Seconds from a request's first failure to its last retry, with MLflow's settings (urllib3 2:
    no sleep before the first retry, then factor × 2^(n-1), capped at 120 s)."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_MAX_RETRIES

    retries, factor = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()
    return float(sum(min(120, factor * 2 ** (n - 1)) for n in range(2, retries + 1)))


class ResilientMLFlowLogger(MLFlowLogger):
    def __init__(self, *args, spool: Path, **kwargs):
        super().__init__(*args, **kwargs)  # params and tags stay synchronous: a run starts with all of them
        self.spool = spool
        self._pending: list[tuple[list, object]] = []  # (metrics, their RunOperations)
        self._spool_sent = False
        self._server_down = False  # a checkpoint wait timed out and no batch got through since

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        self._send_spooled()
        timestamp = int(time.time() * 1000)
        batch = [Metric(key=_UNSAFE.sub("", key), value=float(value), timestamp=timestamp, step=step or 0)
                 for key, value in metrics.items() if not isinstance(value, str)]
        self._pending.append((batch, self.experiment.log_batch(self.run_id, metrics=batch, synchronous=False)))
        still = [(done, operations) for done, operations in self._pending if not _succeeded(operations)]
        if len(still) < len(self._pending):
            self._server_down = False
        self._pending = still

    def wait_for_pending(self, timeout: float = CHECKPOINT_WAIT_SECONDS) -> None:
        """Block until every queued batch is stored, for up to `timeout` s (not at all during an outage)."""
        if self._server_down:
            return
        futures = [future for _, operations in self._pending
                   for future in getattr(operations, "_operation_futures", ())]
        if wait(futures, timeout=timeout).not_done:
            self._server_down = True

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if self._initialized:
            self.flush()
        super().finalize(status)

    @rank_zero_only
    def flush(self) -> None:
        """Wait for every queued batch; resend failed ones; spool and raise what still cannot be stored."""
        failed = []
        for batch, operations in self._pending:
            try:
                operations.wait()
            except Exception:  # MlflowException after the retry window: send once more below
                failed.extend(batch)
        self._pending = []
        if not failed:
            return
        try:
            self._send(failed)
        except Exception as error:
            self._write_spool(failed)
            raise TrackingUnavailableError(
                f"the tracking server did not store {len(failed)} metric values within two retry windows "
                f"({2 * retry_window_seconds():.0f} s; MLFLOW_HTTP_REQUEST_MAX_RETRIES sets it): {error}. They "
                f"are kept in {self.spool} and sent when this run is resumed (run the same config again)") from error

    def _send_spooled(self) -> None:
        if self._spool_sent:
            return
        self._spool_sent = True
        if not self.spool.exists():
            return
        from mlflow.entities import Metric

        values = [Metric(**json.loads(line)) for line in self.spool.read_text().splitlines() if line.strip()]
        self._send(values)
        self.spool.unlink()
        print(f"sent {len(values)} metric values kept from an earlier tracking outage ({self.spool})")

    def _send(self, metrics: list) -> None:
        for start in range(0, len(metrics), _RESEND_CHUNK):
            self.experiment.log_batch(self.run_id, metrics=metrics[start:start + _RESEND_CHUNK], synchronous=True)

    def _write_spool(self, metrics: list) -> None:
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spool, "a") as handle:
            for metric in metrics:
                handle.write(json.dumps({"key": metric.key, "value": metric.value, "timestamp": metric.timestamp,
                                         "step": metric.step}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _succeeded(operations) -> bool:
    """True when every future of an async log call finished without error (done and kept no failure)."""
    futures = getattr(operations, "_operation_futures", None)
    return futures is not None and all(future.done() and future.exception() is None for future in futures)


class MetricsBeforeCheckpoint(pl.Callback):
    """Drains the logger's queue while a checkpoint is being assembled, i.e. before it is written."""

    def __init__(self, logger: ResilientMLFlowLogger):
        self.logger = logger

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if trainer.is_global_zero:
            self.logger.wait_for_pending()
