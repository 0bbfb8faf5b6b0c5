"""CUDA tests: compiled Triton fusion kernels, flash-linear-attention's recurrence and the models on a GPU.

Every test here is marked `cuda`; tests/conftest.py skips them where torch sees no GPU, and bench/gpu_check.sh runs
them on one (`pytest -m cuda tests/cuda`, in a process of its own: tests/fusion's conftest sets TRITON_INTERPRET=1,
which would make the kernels interpreted). Nothing here imports `swarm.model_server.model.fusion.triton_kernels` at
module level, so that collecting this folder on a CPU machine never decorates the kernels before tests/fusion can ask
for the interpreter.

fla autotunes each kernel over up to 48 configs per shape and dtype; unless SWARM_FLA_AUTOTUNE=full, the tests cut
that to a few configs per kernel (`delta_rule.lean_fla_autotune`): correctness does not depend on the config.
"""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def kernels():
    """The fusion kernels module, which must be compiled (not interpreted) here."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.fail("TRITON_INTERPRET=1 is set: tests/cuda checks the compiled kernels; run it in its own pytest "
                    "process without TRITON_INTERPRET (tests/fusion's conftest sets it)")
    from swarm.model_server.model.fusion import triton_kernels as tk

    assert not tk.INTERPRETED, "Triton fusion kernels were decorated under TRITON_INTERPRET=1"
    return tk


@pytest.fixture(scope="session")
def fla_ready() -> None:
    """flash-linear-attention importable (else skipped, or failed when SWARM_REQUIRE_FLA=1 as in gpu_check.sh);
    autotuning cut down unless SWARM_FLA_AUTOTUNE=full."""
    from swarm.model_server.model import delta_rule

    if not delta_rule.fla_available():
        message = "flash-linear-attention (fla-core, `fla.ops.gated_delta_rule`) is not importable"
        if os.environ.get("SWARM_REQUIRE_FLA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    if os.environ.get("SWARM_FLA_AUTOTUNE", "lean") != "full":
        delta_rule.lean_fla_autotune()


@pytest.fixture
def fla_backward_ready(fla_ready) -> None:
    """fla's backward runs on this GPU and Triton (not on Hopper with Triton 3.4-3.7.0: fla refuses, issue #640)."""
    from swarm.model_server.model import delta_rule

    if not delta_rule.fla_backward_ok():
        import triton

        pytest.skip(f"fla refuses its backward on this GPU with Triton {triton.__version__} (fla #640); "
                    "training uses the chunked path here")
