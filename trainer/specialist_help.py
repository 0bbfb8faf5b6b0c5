"""Where each specialist's help lands: the held-out columns it fixes and breaks when it alone is fused (against the
primary alone), and how many of its fixes are columns of its own domain, beside that domain's share of all columns.

The orchestrator can only route by domain (wide search) or follow a specialist's beliefs (deep search) with profit
if a specialist mostly fixes columns of its domain; a specialist whose fixes land outside its domain as often as
chance says helps as one more ensemble member, which no router can tell apart from any other.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch

from swarm.model_server.specialist import domain_of
from swarm.trainer import reports
from swarm.trainer.fusion_experiment import spread
from swarm.trainer.orchestrator_env import Outcomes


def specialist_help(out: Outcomes) -> list[dict]:
    """Per specialist: columns fixed and broken by fusing it alone, fixes whose gold label is in its domain, and the
    share of all columns whose gold label is in its domain."""
    rows = len(out.labels)
    alone = out.correct(torch.zeros((rows, out.n), dtype=torch.bool))
    result = []
    for i, name in enumerate(out.specialists):
        used = torch.zeros((rows, out.n), dtype=torch.bool)
        used[:, i] = True
        single = out.correct(used)
        fixed = (single > alone).nonzero().squeeze(-1).tolist()
        domain = set(domain_of(name).labels)
        in_domain = [out.labels_text[int(label)] in domain for label in out.labels.tolist()]
        result.append({
            "name": name,
            "fixes": len(fixed),
            "breaks": int((single < alone).sum()),
            "own_domain_fixes": sum(in_domain[j] for j in fixed),
            "domain_share_of_columns": sum(in_domain) / rows if rows else 0.0,
        })
    return result


def summarise_help(per_seed: Sequence[list[dict]]) -> list[dict]:
    """Mean and spread over seeds of each specialist's counts; `own_domain_share_of_fixes` pools the seeds' fixes."""
    summary = []
    for rows in zip(*per_seed, strict=True):
        fixes = sum(r["fixes"] for r in rows)
        row = {"name": rows[0]["name"], "domain_share_of_columns": rows[0]["domain_share_of_columns"],
               "own_domain_share_of_fixes": sum(r["own_domain_fixes"] for r in rows) / fixes if fixes else None}
        for key in ("fixes", "breaks", "own_domain_fixes"):
            values = [float(r[key]) for r in rows]
            row[key], row[f"{key}_std"] = statistics.fmean(values), spread(values)
        summary.append(row)
    return summary


def help_markdown(summary: Sequence[dict], seeds: int) -> str:
    def count(r: dict, key: str) -> str:
        return f"{r[key]:.1f} ± {r[f'{key}_std']:.1f}"

    rows = [[r["name"], count(r, "fixes"), count(r, "breaks"), count(r, "own_domain_fixes"),
             "-" if r["own_domain_share_of_fixes"] is None else f"{r['own_domain_share_of_fixes']:.2f}",
             f"{r['domain_share_of_columns']:.2f}"] for r in summary]
    return (f"Where each specialist's help lands (trainer/specialist_help.py): held-out columns with that specialist "
            f"alone fused against the primary alone, mean ± std over {seeds} seeds:\n\n"
            + reports.markdown_table(["specialist", "columns fixed", "columns broken", "fixes in its own domain",
                                      "share of fixes in its domain", "its domain's share of all columns"], rows))
