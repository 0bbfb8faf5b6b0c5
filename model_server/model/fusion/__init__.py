"""Fusion of specialist recurrent states into the primary's initial states (torch reference + Triton kernels).

Public API: :class:`StateFusion` (the learnt module), :func:`fuse` (functional dispatch between
backends) and the torch reference functions. The Triton kernels live in
``swarm.model_server.model.fusion.triton_kernels`` and are imported lazily, so ``TRITON_INTERPRET`` can still be set
after importing this package.
"""

from .module import StateFusion
from .ops import fuse
from .reference import concat_project, gated, weighted_sum
from .validation import BACKENDS, MODES

__all__ = ["BACKENDS", "MODES", "StateFusion", "concat_project", "fuse", "gated", "weighted_sum"]
