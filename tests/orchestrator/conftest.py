"""Orchestrator tests run tiny tensors: one torch thread each (on busy CPUs, thread hand-offs cost far more than the
arithmetic), the previous thread count restored afterwards, and a fixed seed."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_seeded() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
