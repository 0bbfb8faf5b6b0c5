"""The contract: the closed sets of choices and defaults that the CLI, the operator's CRDs and the modules share, in
one place and without importing torch (the operator imports them too): fusion modes, model dtypes, devices, PARL
defaults, and the API identity the annotation service needs to ask its SpecialistPool for specialists (the CRD group,
version, the pool's plural and its demand annotation). Tests tie each CRD enum and CLI choice to these.

Imports nothing from swarm (tests/foundation/test_layering.py): the model, the serving runtime, the commands and the
operator all import it, and the operator imports nothing else of swarm.model_server."""
from __future__ import annotations

import os
from pathlib import Path

FUSION_MODES: tuple[str, ...] = ("weighted_sum", "gated", "concat_project")
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")
# `auto`: CUDA when this process sees a GPU, else the CPU. Any torch device string (cuda:1) is accepted too.
DEVICE_AUTO = "auto"
# The most specialists a primary consults unless told otherwise (a SwarmJob's maxSpecialists default).
DEFAULT_MAX_SPECIALISTS = 4

# PARL defaults (trainer/orchestration/parl.ParlConfig), shared with `swarm train --mode parl` and SwarmJob.spec.parl.
# Prices are in units of one column labelled right: a specialist pass on a column, a critical step beyond the primary's
# own, spawning every specialist for a table (pro rata).
PARL_ITERATIONS = 300
PARL_LAMBDA = 0.2  # initial λ1 (r_parallel) and λ2 (r_finish)
PARL_ANNEAL = 0.6  # share of the iterations over which λ1, λ2 fall to 0
PARL_BETA_CALLS = 0.001
PARL_BETA_STEPS = 0.001
PARL_BETA_SPAWN = 0.002
PARL_MAX_DEEP = 2

# The custom resources' API group and version, and the SpecialistPool's plural (operator/models.py builds its CRDs
# from these; model_server/serving/demand.py patches pools through them).
GROUP = "swarm.ai"
VERSION = "v1alpha1"
POOL_PLURAL = "specialistpools"
# On a SpecialistPool: JSON {specialist: RFC3339 UTC time} of the annotation service's latest demand for each
# (written by model_server/serving/demand.py, read by operator/pool.py).
DEMAND_ANNOTATION = f"{GROUP}/demand"


CACHE_ENV = "SWARM_CACHE_DIR"  # where the swarm keeps its caches (cell vectors, torch's compile cache)


def cache_root() -> Path:
    """$SWARM_CACHE_DIR, default ~/.cache/swarm."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "swarm")
