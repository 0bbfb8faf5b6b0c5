"""Benchmark of the specialists against the primary: pass time on the same batch, knowledge-cache hit rate, and
resident bytes with the knowledge sources.

For each trained specialist directory (default: those `make accuracy` trained, runs/accuracy/specialists/*; where
there are none, freshly initialised ones of every domain in model_server/domains.yaml, with their knowledge sources:
times, hit rates and bytes do not depend on the weights), on the
real SOTAB validation columns (serialized as the primary reads them, with their neighbours; table names are never
read), one process, `--threads` torch threads:
- primary pass: a primary alone of the specialists' config (no fusion) on a batch of `--batch` columns, the median
  of `--repeats` passes;
- specialist pass: its recurrence over the same batch (cell vectors and knowledge rows looked up as in serving),
  cold (first pass after its knowledge caches were emptied) and warm (median of `--repeats`); the goal is ≤ 0.3×
  the primary's;
- knowledge-cache hit rate: every validation column once, in order, batch by batch, from empty caches: the share
  of cell rows found in the cache (each distinct cell is computed from the sources once);
- resident bytes: `swarm memory --specialist DIR --dtype float32` in a fresh process (weights, one batch of
  activations and the knowledge sources' data: what a SpecialistPool's residentBytes budgets).
Cell vectors are pre-encoded before timing (both models read the same store). Writes bench_specialists.{json,md}.

    OMP_NUM_THREADS=1 .venv/bin/python -m swarm.bench.specialists [--specialists-dir runs/accuracy/specialists]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from swarm.bench.fusion import cpu_median_ms
from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.knowledge import DEFAULT_CACHE
from swarm.model_server.model.knowledge.rows import knowledge_rows
from swarm.model_server.model.manifest import SpecialistManifest
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import DomainModel, Specialist, domains, save_dir
from swarm.model_server.model.tables import load_labels
from swarm.trainer import reports
from swarm.trainer.data.columns import build_examples
from swarm.trainer.training.primary import labelled_splits

ROOT = Path(__file__).resolve().parents[1]  # the checkout: its data, runs and reports/
GOAL = 0.3  # a specialist's pass at most this share of the primary's on the same batch


def _empty_knowledge_caches() -> None:
    """Forget every knowledge row and source vector computed so far in this process."""
    knowledge_rows.cache_clear()
    DEFAULT_CACHE.clear()


def _resident(directory: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "swarm.trainer.commands.cli", "memory", "--specialist", str(directory),
                          "--dtype", "float32"], capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "sotab-v2-sample")
    parser.add_argument("--specialists-dir", type=Path, default=ROOT / "runs" / "accuracy" / "specialists")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports")
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of --repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else args.repeats

    dirs = sorted(p for p in args.specialists_dir.glob("*") if SpecialistManifest.is_in(p))
    trained = bool(dirs)
    if not trained:
        print(f"no trained specialists under {args.specialists_dir}: benchmarking untrained ones of every domain")
        scratch = Path(tempfile.mkdtemp(prefix="bench-specialists-"))
        for domain in domains().values():
            save_dir(scratch / domain.name, domain.name,
                     DomainModel(get_config("tiny"), domain.labels, domain.knowledge))
        dirs = [scratch / name for name in domains()]
    specialists = [Specialist.load(d) for d in dirs]
    cfg = specialists[0].config
    labels = load_labels()
    _, validation = labelled_splits(args.data)
    texts = [e.text for e in build_examples([validation], labels)]
    encoder = ColumnEncoder(cfg.max_len)
    ids, mask = encoder(texts)  # every cell vector encoded (or read from the cache) before anything is timed
    batch_ids, batch_mask = ids[:args.batch], mask[:args.batch]

    torch.manual_seed(0)
    primary = PrimaryModel(cfg, labels).eval()
    with torch.inference_mode():
        primary_s = cpu_median_ms(lambda: primary(batch_ids, batch_mask), repeats) / 1e3

    rows: list[dict[str, Any]] = []
    for directory, spec in zip(dirs, specialists, strict=True):
        backbone = spec.model.backbone
        with torch.inference_mode():
            # Hit rate over all validation columns from empty caches, batch by batch as a server would see them.
            _empty_knowledge_caches()
            table = knowledge_rows(backbone.knowledge) if backbone.knowledge else None
            for start in range(0, len(texts), args.batch):
                backbone(ids[start:start + args.batch], mask[start:start + args.batch])
            hit_rate = 1 - table.computed / table.looked_up if table and table.looked_up else None
            _empty_knowledge_caches()
            started = time.perf_counter()
            backbone(batch_ids, batch_mask)
            cold_s = time.perf_counter() - started
            warm_s = cpu_median_ms(partial(backbone, batch_ids, batch_mask), repeats) / 1e3
        memory = _resident(directory)
        rows.append({"name": spec.name, "knowledge_sources": list(backbone.knowledge), "config": spec.config.name,
                     "pass_seconds_warm": warm_s, "pass_seconds_cold": cold_s,
                     "ratio_to_primary": warm_s / primary_s, "meets_goal": warm_s / primary_s <= GOAL,
                     "knowledge_cache_hit_rate": hit_rate,
                     "resident_bytes": {k: memory[k] for k in ("weights", "activations", "knowledge", "total")}})
        print(f"{spec.name:15s} warm {warm_s * 1e3:7.1f} ms ({warm_s / primary_s:.2f}x primary), cold "
              f"{cold_s * 1e3:7.1f} ms, hit rate {hit_rate if hit_rate is None else round(hit_rate, 3)}, "
              f"resident {memory['total'] / 2**20:.0f} MiB")

    result = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), "
                         f"{platform.processor() or platform.system()}",
              "batch_columns": len(batch_ids), "tokens_per_column": int(batch_ids.shape[1]), "repeats": repeats,
              "specialists_trained": trained, "specialists_dir": str(args.specialists_dir) if trained else None,
              "validation_columns": len(texts), "primary_pass_seconds": primary_s, "goal_ratio": GOAL,
              "specialists": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    which = f"trained specialists from {args.specialists_dir}" if trained else "untrained specialists"
    reports.write_json(args.out_dir / "bench_specialists.json", result)
    table_rows = [[r["name"], ", ".join(r["knowledge_sources"]) or "-", f"{r['pass_seconds_warm'] * 1e3:.1f}",
                   f"{r['pass_seconds_cold'] * 1e3:.1f}", f"{r['ratio_to_primary']:.2f}",
                   "-" if r["knowledge_cache_hit_rate"] is None else f"{r['knowledge_cache_hit_rate']:.3f}",
                   f"{r['resident_bytes']['knowledge'] / 2**20:.1f}", f"{r['resident_bytes']['total'] / 2**20:.1f}"]
                  for r in rows]
    (args.out_dir / "bench_specialists.md").write_text(
        "# Specialists against the primary (swarm.bench.specialists)\n\n"
        f"{result['machine']}; {which}; a batch of {result['batch_columns']} real validation columns "
        f"({result['tokens_per_column']} tokens each, padded); primary alone: {primary_s * 1e3:.1f} ms per pass "
        f"(median of {repeats}). Goal: a specialist's pass ≤ {GOAL}× the primary's.\n\n"
        + reports.markdown_table(["specialist", "knowledge sources", "pass ms (warm)", "pass ms (cold knowledge)",
                                  "× primary", "knowledge-cache hit rate", "knowledge MiB", "resident MiB"],
                                 table_rows), encoding="utf-8")


if __name__ == "__main__":
    main()
