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

from swarm.model_server.model.specialist import domain_of
from swarm.trainer import reports
from swarm.trainer.orchestration.env import Outcomes
from swarm.trainer.training.metrics import spread


def help_counts(name: str, gold: Sequence[str], base_correct: Sequence[bool], single_correct: Sequence[bool]
                ) -> dict:
    """One specialist's help: columns its fusion fixes and breaks against the base answers, its fixes whose gold
    label is in its domain, and the share of all columns whose gold label is in its domain."""
    domain = set(domain_of(name).labels)
    in_domain = [g in domain for g in gold]
    fixed = [j for j, (b, s) in enumerate(zip(base_correct, single_correct, strict=True)) if s and not b]
    return {
        "name": name,
        "fixes": len(fixed),
        "breaks": sum(b and not s for b, s in zip(base_correct, single_correct, strict=True)),
        "own_domain_fixes": sum(in_domain[j] for j in fixed),
        "domain_share_of_columns": sum(in_domain) / len(gold) if gold else 0.0,
    }


def specialist_help(out: Outcomes) -> list[dict]:
    """Per specialist (`help_counts`): fusing it alone against the primary with none, on cached outcomes."""
    rows = len(out.labels)
    alone = out.correct(torch.zeros((rows, out.n), dtype=torch.bool)).bool().tolist()
    gold = [out.labels_text[int(label)] for label in out.labels.tolist()]
    result = []
    for i, name in enumerate(out.specialists):
        used = torch.zeros((rows, out.n), dtype=torch.bool)
        used[:, i] = True
        result.append(help_counts(name, gold, alone, out.correct(used).bool().tolist()))
    return result


def own_domain_goal(domain_share: float) -> float:
    """The share of a specialist's fixes that must be in its own domain: half, or twice its domain's share of the
    columns where that is lower (a domain of 5% of the columns is met at 10%)."""
    return min(0.5, 2 * domain_share)


def summarise_help(per_seed: Sequence[list[dict]]) -> list[dict]:
    """Mean and spread over seeds of each specialist's counts; `own_domain_share_of_fixes` pools the seeds' fixes."""
    summary = []
    for rows in zip(*per_seed, strict=True):
        fixes = sum(r["fixes"] for r in rows)
        row = {"name": rows[0]["name"], "domain_share_of_columns": rows[0]["domain_share_of_columns"],
               "own_domain_share_of_fixes": sum(r["own_domain_fixes"] for r in rows) / fixes if fixes else None}
        row["own_domain_goal"] = own_domain_goal(row["domain_share_of_columns"])
        row["meets_own_domain_goal"] = (row["own_domain_share_of_fixes"] is not None
                                        and row["own_domain_share_of_fixes"] >= row["own_domain_goal"])
        for key in ("fixes", "breaks", "own_domain_fixes"):
            values = [float(r[key]) for r in rows]
            row[key], row[f"{key}_std"] = statistics.fmean(values), spread(values)
        summary.append(row)
    return summary


def help_markdown(summary: Sequence[dict], seeds: int, against: str = "the primary alone") -> str:
    def count(r: dict, key: str) -> str:
        return f"{r[key]:.1f} ± {r[f'{key}_std']:.1f}"

    rows = [[r["name"], count(r, "fixes"), count(r, "breaks"), count(r, "own_domain_fixes"),
             "-" if r["own_domain_share_of_fixes"] is None else f"{r['own_domain_share_of_fixes']:.2f}",
             f"{r['domain_share_of_columns']:.2f}", f"{own_domain_goal(r['domain_share_of_columns']):.2f}",
             "yes" if r.get("meets_own_domain_goal") else "no"] for r in summary]
    return (f"Where each specialist's help lands (trainer/experiments/specialist_help.py): held-out columns with that "
            f"specialist alone fused against {against}, mean ± std over {seeds} seeds; goal: half of its fixes in its "
            f"domain, or twice its domain's share of the columns where that is lower:\n\n"
            + reports.markdown_table(["specialist", "columns fixed", "columns broken", "fixes in its own domain",
                                      "share of fixes in its domain", "its domain's share of all columns",
                                      "goal", "met"], rows))
