"""The access log is written in batches by a timer thread, so a request never wakes another thread."""

import io
import logging
import time

from service.access_log import BatchedAccessLog


class CountingStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, text):
        self.writes += 1
        return super().write(text)


def test_lines_are_written_in_one_batch_in_order_and_handlers_restored():
    logger = logging.getLogger("test.access")
    logger.propagate, logger.level = False, logging.INFO
    stream = CountingStream()
    writer = logging.StreamHandler(stream)
    writer.setFormatter(logging.Formatter("access %(message)s"))
    logger.handlers = [writer]
    batched = BatchedAccessLog(logger, interval=60.0).start()
    for index in range(100):
        logger.info("line %d", index)
    assert stream.getvalue() == ""  # nothing written, nothing woken, per request
    batched.stop()
    assert stream.getvalue().splitlines() == [f"access line {index}" for index in range(100)]
    assert stream.writes == 1
    assert logger.handlers == [writer] and writer.formatter._fmt == "access %(message)s"


def test_the_timer_thread_flushes_while_running():
    logger = logging.getLogger("test.access.timer")
    logger.propagate, logger.level = False, logging.INFO
    stream = io.StringIO()
    logger.handlers = [logging.StreamHandler(stream)]
    batched = BatchedAccessLog(logger, interval=0.05).start()
    try:
        logger.info("soon")
        for _ in range(200):
            if stream.getvalue():
                break
            time.sleep(0.05)
        assert stream.getvalue() == "soon\n"
    finally:
        batched.stop()
