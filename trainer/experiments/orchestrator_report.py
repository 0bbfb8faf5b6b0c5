"""The orchestrator report: reports/orchestrator.{json,md,png} from what `run_orchestrator` measured (every
policy's accuracy against cost, the success criteria, the deep-transfer variants, robustness, throughput). Reads
only the result dict; trains nothing."""
from __future__ import annotations

import statistics
from pathlib import Path

from swarm.trainer import reports
from swarm.trainer.experiments.specialist_help import help_markdown


def orchestrator_markdown(result: dict) -> str:
    def cell(row: dict, key: str, digits: int = 3) -> str:
        value, std = row.get(key), row.get(f"{key}_std")
        if value is None:
            return "-"
        return f"{value:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{value:.{digits}f}"

    rows = [[p["name"], cell(p, "micro_f1"), cell(p, "macro_f1"), cell(p, "hard_class_f1"),
             cell(p, "calls_per_column", 2), cell(p, "critical_steps", 2), cell(p, "specialists_per_table", 2),
             cell(p, "spawned_per_table", 2)]
            for p in result["policies"]]
    crit = [[key, f"{c['value']:.3f}" if c.get("value") is not None else "-", "pass" if c["pass"] else "FAIL",
             c["how"] + "".join(f"; {k} {c[k]:.3f}" for k in ("value_error", "all_specialists_over_wide",
                                                               "oracle_over_wide") if c.get(k) is not None)]
            for key, c in result["criteria"].items()]
    text = (f"Real SOTAB validation columns; `{result['model']}` primary, {result['steps']} steps; "
            f"mean ± std over {result['seeds']} seeds; policies fitted on {result['folds'] - 1} of "
            f"{result['folds']} grouped folds and scored on the held-out one.\n\n"
            + reports.markdown_table(["policy", "micro-F1", "macro-F1", "hard-class F1", "calls / column",
                                      "critical steps", "specialists asked / table", "spawned / table"], rows)
            + "\nSuccess criteria of the design:\n\n"
            + reports.markdown_table(["criterion", "value", "result", "how"], crit))
    if result.get("oracle_routing"):
        o = result["oracle_routing"]
        text += (f"\nCeiling of any routing over these frozen models (the oracle: per column the smallest subset "
                 f"under which the primary is right; it reads the labels): micro-F1 {o['micro_f1']:.3f}, hard-class "
                 f"F1 {o['hard_class_f1'] or 0:.3f}, {o['calls_per_column']:.2f} calls per column.\n")
    if result.get("deep_transfer"):
        how = {"first": "the first specialist alone", "second": "the second alone",
               "union": "both, each reading the column from scratch (deep search today)",
               "chained": "both, the second started from the first's final states",
               "handoff": "the chained second alone"}
        dt = [[v, how[v], f"{r['accuracy']:.4f} ± {r['accuracy_std']:.4f}",
               f"{r['minus_union']:+.4f} ± {r['minus_union_std']:.4f}"]
              for v, r in result["deep_transfer"].items()]
        n = len(result["specialists"])
        text += ("\nHow a deep step's second specialist uses the first (trainer/experiments/deep_transfer.py): "
                 f"accuracy of the primary on every held-out column, averaged over the {n * (n - 1)} ordered pairs of "
                 "specialists, mean ± std over seeds; the difference to `union` paired per seed:\n\n"
                 + reports.markdown_table(["variant", "what the primary fuses", "accuracy", "minus union"], dt))
    if result.get("specialist_help"):
        text += "\n" + help_markdown(result["specialist_help"], result["seeds"])
    if result.get("robustness"):
        rob = [[label, *(f"{statistics.fmean(r[label][k] for r in result['robustness']):.3f}"
                         for k in ("robust", "dedicated"))] for label in result["robustness"][0]]
        text += ("\nRobust primary (agents dropped in training) with a subset against a primary trained for exactly "
                 "that subset, micro-F1, mean over seeds:\n\n"
                 + reports.markdown_table(["subset", "robust primary", "dedicated primary"], rob))
    if result.get("throughput"):
        tp = [[t["specialists"], f"{t['tables_per_s']:.1f}", f"{t['ratio_to_primary_only']:.2f}",
               f"{t['critical_path_ratio']:.2f}"] for t in result["throughput"]]
        text += ("\nThroughput against primary-only (bench/orchestrator_throughput.py):\n\n"
                 + reports.markdown_table(["specialists", "tables/s", "ratio", "critical-path ratio"], tp))
    return text


def write_orchestrator_reports(result: dict, reports_dir: Path) -> None:
    reports.write_json(reports_dir / "orchestrator.json", result)
    (reports_dir / "orchestrator.md").write_text("# The orchestrator: accuracy against cost\n\n"
                                                 + orchestrator_markdown(result), encoding="utf-8")
    _plot(result, reports_dir / "orchestrator.png")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (pareto, curves) = plt.subplots(1, 2, figsize=(11, 4))
    for p in result["policies"]:
        pareto.errorbar(p["calls_per_column"], p["micro_f1"], yerr=p["micro_f1_std"] or 0, fmt="o", capsize=3,
                        label=p["name"])
    pareto.set_xlabel("specialist calls per column")
    pareto.set_ylabel("micro-F1 (real validation columns)")
    pareto.set_title("accuracy against cost")
    pareto.legend(fontsize=7)
    history = result["parl_curves"]
    its = [h["iteration"] for h in history]
    for key in ("reward", "r_perf", "r_parallel", "r_finish", "lambda1"):
        curves.plot(its, [h[key] for h in history], label=key)
    twin = curves.twinx()
    twin.plot(its, [h["specialists_per_table"] for h in history], "k--", label="spawned / table")
    twin.plot(its, [h["critical_steps"] for h in history], "k:", label="critical steps")
    twin.legend(fontsize=7, loc="lower right")
    curves.set_xlabel("PARL iteration (seed 0, fold 0)")
    curves.set_title("PARL training")
    curves.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
