"""The closed sets of choices that the CLI, the operator's CRDs and the modules share, in one place and without
importing torch (the operator imports them too): fusion modes, model dtypes, devices. Tests tie each CRD enum and
CLI choice to these."""
from __future__ import annotations

FUSION_MODES: tuple[str, ...] = ("weighted_sum", "gated", "concat_project")
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")
# `auto`: CUDA when this process sees a GPU, else the CPU. Any torch device string (cuda:1) is accepted too.
DEVICE_AUTO = "auto"
# The most specialists a primary consults unless told otherwise (a SwarmJob's maxSpecialists default).
DEFAULT_MAX_SPECIALISTS = 4
