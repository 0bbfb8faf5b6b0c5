"""Writing a synthetic split: `write_synthetic` (behind `swarm synth` and synthetic pre-training) generates
tables and writes them as a SOTAB split directory whose ground truth file is `GT_NAME`."""
from __future__ import annotations

from pathlib import Path

from swarm.trainer.data.sotab import write_split

from .assembly import generate

GT_NAME = "sotab_v2_cta_synthetic_set.csv"


def write_synthetic(out_dir: Path, n_tables: int, seed: int) -> Path:
    """Generate and write a SOTAB split directory (tables/ + ground truth); returns the directory."""
    out_dir = Path(out_dir)
    tables, refs = generate(n_tables, seed)
    write_split(out_dir, tables, refs, GT_NAME)
    return out_dir
