"""Fusion tests run the Triton kernels on CPU through the interpreter.

TRITON_INTERPRET is read when a kernel is decorated, i.e. when ``swarm.model_server.model.fusion.triton_kernels`` is
first imported; the fusion package imports it lazily, so setting it here (before any test module imports the
kernels) is enough. ``test_fusion_triton.py::test_kernels_are_interpreted`` fails loudly if it was too late.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
