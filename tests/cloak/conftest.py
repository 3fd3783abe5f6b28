"""Cloak tests run torch on one thread: on a shared 2-core machine that is several times faster
than two threads waiting on each other; the previous setting is restored afterwards."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
