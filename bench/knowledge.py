"""Benchmark of the knowledge sources on the bundled real SOTAB data: speed, cache hits, memory, coverage.

For every source, over every labelled column of `data/sotab-v2-sample` (all splits; cells only: table names are
never read): resident bytes once loaded (tracemalloc and RSS delta, sources loaded in registry order, so a package
two sources share counts towards the first), a cold pass over all cells in column order with an empty cache
(distinct cells/s = cells actually computed per second, and the hit rate within that pass from repeated cells), a
second pass (hit rate, cells/s), and coverage: for each label, the share of its columns where the source fires on a
majority of the non-empty cells ("fires" = any non-generic feature >= 0.5; generic features such as "number" or
"digits_only" fire on whole classes of cells and are left out). Writes knowledge_sources.json and .md.

    OMP_NUM_THREADS=1 .venv/bin/python -m swarm.bench.knowledge [--data data/sotab-v2-sample] [--out-dir reports]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict
from pathlib import Path

from swarm.model_server.model.knowledge import SOURCES, KnowledgeCache, load_measured
from swarm.model_server.model.knowledge.base import clean
from swarm.trainer.data.sotab import load_dataset

ROOT = Path(__file__).resolve().parents[1]  # the checkout: its bundled data and reports/
MAJORITY = 0.5
INFORMS = 0.5  # a source "informs" a label when it fires on a majority of cells in at least this share of columns


def labelled_columns(root: Path) -> list[tuple[str, list[str]]]:
    out = []
    for split in load_dataset(root).values():
        for ref in split.columns:
            if ref.label is None:
                continue
            out.append((ref.label, list(split.tables[ref.table].columns[ref.column])))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "sotab-v2-sample")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports")
    args = parser.parse_args(argv)

    columns = labelled_columns(args.data)
    all_cells = [c for _, cells in columns for c in cells if clean(c)]
    labels = sorted({label for label, _ in columns})
    n_of_label = {label: sum(1 for lab, _ in columns if lab == label) for label in labels}
    print(f"{len(columns)} labelled columns, {len(all_cells)} non-empty cells, {len(set(all_cells))} distinct")

    results: dict[str, dict] = {}
    for name, source in SOURCES.items():
        t0 = time.perf_counter()
        mem = load_measured(name)
        load_s = time.perf_counter() - t0
        cache = KnowledgeCache()
        t0 = time.perf_counter()
        cache.vectors(source, all_cells)
        cold_s = time.perf_counter() - t0
        cold = cache.stats[name]
        cold_hits, computed = cold.hits, cold.misses
        t0 = time.perf_counter()
        cache.vectors(source, all_cells)
        warm_s = time.perf_counter() - t0
        second_hits = cache.stats[name].hits - cold_hits
        counted = [i for i, f in enumerate(source.features) if f not in getattr(source, "generic_features", ())]

        informed: dict[str, int] = defaultdict(int)
        for label, cells in columns:
            texts = [c for c in cells if clean(c)]
            if not texts:
                continue
            vecs = cache.vectors(source, texts)
            fires = (vecs[:, counted] >= 0.5).any(dim=1).float().mean().item()
            if fires > MAJORITY:
                informed[label] += 1
        coverage = {label: round(informed[label] / n_of_label[label], 3) for label in labels}
        results[name] = {
            "features": list(source.features),
            "provenance": list(getattr(source, "provenance", ())),
            "load_s": round(load_s, 3),
            "resident_traced_bytes": mem.traced if mem else None,
            "resident_rss_delta_bytes": mem.rss_delta if mem else None,
            "distinct_cells_computed": computed,
            "distinct_cells_per_s_cold": round(computed / cold_s, 1),
            "cold_pass_hit_rate": round(cold_hits / len(all_cells), 4),
            "second_pass_hit_rate": round(second_hits / len(all_cells), 4),
            "second_pass_cells_per_s": round(len(all_cells) / warm_s, 1),
            "coverage": coverage,
            "informs": sorted((lab for lab, share in coverage.items() if share >= INFORMS),
                              key=lambda lab: -coverage[lab]),
        }
        r = results[name]
        print(f"{name:14} load {load_s:5.2f}s  {r['distinct_cells_per_s_cold']:>9} distinct/s cold  "
              f"2nd-pass hits {r['second_pass_hit_rate']:.2f}  traced {(mem.traced if mem else 0) / 1e6:.1f} MB  "
              f"informs {len(r['informs'])} labels")

    report = {
        "data": str(args.data), "columns": len(columns), "non_empty_cells": len(all_cells),
        "distinct_cells": len(set(all_cells)), "columns_per_label": n_of_label,
        "machine": f"{platform.machine()}, {platform.python_version()}, 1 thread", "sources": results,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "knowledge_sources.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (args.out_dir / "knowledge_sources.md").write_text(markdown(report, labels), encoding="utf-8")


def markdown(report: dict, labels: list[str]) -> str:
    src = report["sources"]
    lines = [
        "# Knowledge sources on the bundled SOTAB data (`python -m swarm.bench.knowledge`)", "",
        f"{report['columns']} labelled columns (all splits of `{report['data']}`), {report['non_empty_cells']} "
        f"non-empty cells, {report['distinct_cells']} distinct; {report['machine']}. Resident bytes: what loading "
        "the source added (tracemalloc: Python allocations; RSS delta: the process), loaded in this order, so a "
        "package two sources share counts towards the first. Cold: empty cache, all cells in column order "
        "(distinct cells/s = cells computed per second; the pass's own hit rate comes from repeated cells). "
        "Second pass: the same cells again.", "",
        "| source | dim | load s | traced MB | RSS delta MB | distinct cells/s (cold) | cold-pass hit rate | "
        "2nd-pass hit rate | 2nd-pass cells/s | labels informed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in src.items():
        traced = r["resident_traced_bytes"] or 0
        rss = r["resident_rss_delta_bytes"] or 0
        lines.append(
            f"| {name} | {len(r['features'])} | {r['load_s']} | {traced / 1e6:.1f} | {rss / 1e6:.1f} | "
            f"{r['distinct_cells_per_s_cold']:,.0f} | {r['cold_pass_hit_rate']:.2f} | {r['second_pass_hit_rate']:.2f} "
            f"| {r['second_pass_cells_per_s']:,.0f} | {len(r['informs'])} |")
    lines += ["", f"## Which labels each source informs (fires on a majority of cells in >= {INFORMS:.0%} of the "
              "label's columns)", ""]
    for name, r in src.items():
        shown = ", ".join(f"{lab} {r['coverage'][lab]:.0%}" for lab in r["informs"]) or "none"
        lines.append(f"- **{name}**: {shown}")
    lines += ["", "## Coverage: share of each label's columns where the source fires on a majority of cells", "",
              "| label | columns | " + " | ".join(src) + " |", "|---|---|" + "---|" * len(src)]
    for label in labels:
        cells = [f"{src[n]['coverage'][label]:.0%}" if src[n]["coverage"][label] else "·" for n in src]
        lines.append(f"| {label} | {report['columns_per_label'][label]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
