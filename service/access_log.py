"""uvicorn's access log, written in batches by a thread that wakes on a timer — never once per request.

History. Writing each line on the event loop took ~0.4 ms on a slow disk or pipe, so the lines went to
a QueueListener thread. That thread woke for every line: a futex wake-up from the loop, then a GIL
hand-over each way. Under 20 concurrent clients the two threads convoyed on the GIL — the writer
waits out the 5 ms switch interval, forces a switch, the loop waits to get the GIL back — about ten
futex calls per request (strace), each a wake-up of a thread on the other CPU. On a VM that is an
inter-processor interrupt, whose cost depends on the hypervisor and CPU (KVM exits on every IPI where
the CPU has no IPI virtualisation): the same benchmark had a 3× longer p99 on an Intel Xeon than on
an AMD EPYC (benchmarks/bench_service.py, README).

Now the loop formats the line and appends it to a deque (no wake-up, no lock held across threads);
the writer thread wakes every ``interval`` seconds and writes what accumulated in one call per stream.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

FLUSH_SECONDS = 0.2


class BatchedAccessLog(logging.Handler):
    """Takes over a logger's handlers: lines are formatted here, written by them in batches."""

    def __init__(self, logger: logging.Logger, interval: float = FLUSH_SECONDS):
        super().__init__()
        self.logger, self.interval = logger, interval
        self.writers = list(logger.handlers)
        if self.writers:
            self.setFormatter(self.writers[0].formatter)
        self._formatters = [writer.formatter for writer in self.writers]
        self.lines: deque[str] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attnlab-access-log", daemon=True)

    def start(self) -> BatchedAccessLog:
        for writer in self.writers:  # they receive finished lines
            writer.setFormatter(logging.Formatter("%(message)s"))
        self.logger.handlers = [self]
        self._thread.start()
        return self

    def stop(self) -> None:
        """Write what is left and give the logger its handlers back."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
        self.logger.handlers = self.writers
        for writer, formatter in zip(self.writers, self._formatters):
            writer.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # logging's contract: a bad record is reported, never raised into the request
            self.handleError(record)

    def flush(self) -> None:
        batch = []
        while self.lines:
            batch.append(self.lines.popleft())
        if not batch:
            return
        for writer in self.writers:
            if isinstance(writer, logging.StreamHandler):  # one write per batch
                with writer.lock:
                    writer.stream.write("\n".join(batch) + writer.terminator)
                    writer.flush()
            else:
                for line in batch:
                    writer.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO,
                                                         "levelname": "INFO", "name": self.logger.name}))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
