"""The training library (the deterministic loop, checkpoints, metrics, specialist state sources, evaluation) and the
recipes built on it: specialists, the primary end to end, and adaptation to a new domain with Model Swarms."""
