"""Fixtures shared by the block and backbone tests."""

import pytest
import torch


@pytest.fixture
def single_thread():
    """One intra-op thread for tests of tiny maps/nets: on a busy 2-core machine a second thread only adds
    contention (each step up to ~20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
