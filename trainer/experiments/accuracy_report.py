"""The accuracy report: reports/accuracy.{json,md,png} from what `run_accuracy` measured (the markdown tables,
the per-run gains, the confusions and hard classes, the chart). Reads only the result dict; trains nothing."""
from __future__ import annotations

import statistics
from pathlib import Path

from swarm.trainer import reports
from swarm.trainer.experiments.specialist_help import help_markdown

# The classes below 0.5 F1 when the knowledge specialists were asked for (issue #28): reported before/after whatever
# this run's primary scores on them.
NAMED_HARD = ("postalCode", "IdentifierAT", "Brand", "category", "Book/description")


def _cell(summary: dict, key: str) -> str:
    value = summary.get(key)
    if value is None:
        return "-"
    std = summary.get(f"{key}_std")
    return f"{value:.3f} ± {std:.3f}" if std is not None else f"{value:.3f}"


def _per_seed_gains(cv: dict) -> str:
    by_seed: dict[int, list[float]] = {}
    for run in cv.get("runs", []):
        by_seed.setdefault(run["seed"], []).append(run["swarm_micro_f1"] - run["alone_micro_f1"])
    return ", ".join(f"seed {seed} {statistics.fmean(g):+.3f}" for seed, g in sorted(by_seed.items()))


def _criterion_a(cv: dict) -> str:
    a = cv.get("criterion_a")
    if not a:
        return ""
    return (f"Criterion (a), within the agent-dropout primary, paired per run: all specialists − the best single one "
            f"({a['best_single']}) = {a['all_minus_best_single']:+.3f} ± {a['all_minus_best_single_std']:.3f} "
            f"micro-F1 (goal ≥ +{a['goal']:.2f}: {'met' if a['passes'] else 'not met'}).\n\n")


def accuracy_markdown(result: dict) -> str:
    cv = result["cv"]
    n = len(result.get("specialists", {})) or 5
    named = (("primary alone", "primary_alone"),
             ("primary reading every knowledge source itself, no specialists (control)", "primary_with_knowledge"),
             (f"primary + {n} specialists without knowledge sources (control)", "swarm_without_knowledge"),
             (f"primary + {n} specialists (the swarm)", "swarm"))
    rows = [[name, _cell(cv[key], "micro_f1"), _cell(cv[key], "macro_f1"), _cell(cv[key], "hard_class_f1")]
            for name, key in named if key in cv]
    robust = [("agent-dropout primary, no specialist", cv.get("robust_none")),
              *((f"agent-dropout primary + {name} alone", row) for name, row in cv.get("single", {}).items()),
              (f"agent-dropout primary + all {n}", cv.get("robust_all"))]
    rows += [[name, _cell(row, "micro_f1"), _cell(row, "macro_f1"), _cell(row, "hard_class_f1")]
             for name, row in robust if row]
    gains = ", ".join(f"{g:+.3f}" for g in cv["swarm_gain_per_fold"])
    seeds = result.get("seeds", 1)
    ladder = [[r["step"], r.get("protocol", "holdout"), r["micro_f1"], r["macro_f1"]] for r in result["ablation"]]
    per_class = sorted(result.get("per_class_f1", {}).items(), key=lambda kv: (kv[1]["primary_alone"] or 0, kv[0]))
    confusion = result.get("confusions", {})
    text = (
        f"Grouped {result['folds']}-fold cross-validation over the real SOTAB validation tables, {seeds} seed(s) "
        f"(`{result['model']}` config, {result['steps']} steps; each fold trained on {result['trained_on']['cv']}; "
        f"specialists trained on {result['trained_on']['specialists']}; "
        f"fusion: {result['trained_on'].get('fusion', '-')}). Mean ± std over the "
        f"{len(cv['swarm_gain_per_fold'])} (seed, fold) runs:\n\n"
        + reports.markdown_table(["model", "micro-F1", "macro-F1", "hard-class F1"], rows)
        + f"\nSwarm minus primary alone, micro-F1 per (seed, fold) run, paired: {gains} "
        f"({sum(g > 0 for g in cv['swarm_gain_per_fold'])} of {len(cv['swarm_gain_per_fold'])} positive); per seed "
        f"(mean over its folds): {_per_seed_gains(cv) or '-'}.\n\n"
        + _criterion_a(cv)
        + "Ablation (holdout: trained on training + training_columns, scored on all of validation; cv: the first "
        "seed's folds):\n\n" + reports.markdown_table(["step", "protocol", "micro-F1", "macro-F1"], ladder))
    if confusion:
        groups = list(confusion["primary_alone"])
        text += ("\nConfusions within the issue's groups (columns labelled as another member of their group, all CV "
                 "runs together):\n\n" + reports.markdown_table(
                     ["group", "primary alone", "swarm"],
                     [[g, confusion["primary_alone"][g], confusion["swarm"][g]] for g in groups]))
    per_class_f1 = result.get("per_class_f1", {})
    hard_rows = {label: per_class_f1[label] for label in sorted({*result.get("hard_classes", []), *NAMED_HARD})
                 if label in per_class_f1}
    if hard_rows:
        text += ("\nThe hard classes (below 0.5 F1 for the primary alone, and those issue #28 named), before "
                 "(primary alone) and after (swarm), all CV runs together:\n\n" + reports.markdown_table(
                     ["label", "primary alone", "swarm"],
                     [[label, f["primary_alone"], f["swarm"]] for label, f in hard_rows.items()]))
    if result.get("specialist_help"):
        text += "\n" + help_markdown(result["specialist_help"], seeds,
                                      "the same agent-dropout primary with no specialist (all folds of a seed)")
    if per_class:
        text += ("\nPer-class F1 (all CV runs together), worst first for the primary alone:\n\n"
                 + reports.markdown_table(["label", "primary alone", "swarm"],
                                          [[label, f["primary_alone"], f["swarm"]] for label, f in per_class]))
    return text


def write_accuracy_reports(result: dict, reports_dir: Path) -> None:
    reports.write_json(reports_dir / "accuracy.json", result)
    (reports_dir / "accuracy.md").write_text("# Accuracy on real SOTAB columns\n\n" + accuracy_markdown(result),
                                              encoding="utf-8")
    _plot(result, reports_dir / "accuracy.png")


def _plot(result: dict, path: Path) -> None:
    """Left: the ablation rows; middle: the swarm's paired gain over the primary alone, per CV run; right (when
    measured): the agent-dropout primary with no specialist, each one alone, and all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["ablation"]
    singles = result["cv"].get("single", {})
    panels = 3 if singles else 2
    fig, axes = plt.subplots(1, panels, figsize=(11 + 4 * (panels - 2), 1.6 + 0.42 * max(4, len(steps), len(singles))),
                             gridspec_kw={"width_ratios": [3, 1, 1.5][:panels]})
    ax, gain_ax = axes[0], axes[1]
    ys = range(len(steps))
    ax.barh([y + 0.2 for y in ys], [s["micro_f1"] for s in steps], height=0.4, label="micro-F1")
    ax.barh([y - 0.2 for y in ys], [s["macro_f1"] for s in steps], height=0.4, label="macro-F1")
    ax.set_yticks(list(ys), [f"[{s.get('protocol', 'holdout')}] {s['step']}" for s in steps], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.3)  # room for the legend right of the bars
    for key, style in (("primary_alone", "--"), ("swarm", "-")):
        ax.axvline(result["cv"][key]["micro_f1"], color="black", linestyle=style, linewidth=0.8,
                   label=f"CV micro-F1, {key.replace('_', ' ')}")
    ax.set_xlabel("F1 on real SOTAB validation columns")
    ax.legend(fontsize=7, loc="upper right")
    gains = result["cv"]["swarm_gain_per_fold"]
    gain_ax.scatter(gains, range(len(gains)), color="tab:green")
    gain_ax.axvline(0, color="black", linewidth=0.8)
    gain_ax.set_yticks(range(len(gains)), [f"seed {r['seed']} fold {r['fold']}" for r in result["cv"].get("runs", [])]
                       or [str(i) for i in range(len(gains))], fontsize=7)
    gain_ax.invert_yaxis()
    gain_ax.set_xlabel("swarm − primary alone, micro-F1 (paired)")
    if singles:
        cv = result["cv"]
        rows = [("none", cv["robust_none"]), *singles.items(), ("all", cv["robust_all"])]
        single_ax = axes[2]
        single_ax.barh(range(len(rows)), [r["micro_f1"] for _, r in rows],
                       xerr=[r["micro_f1_std"] or 0 for _, r in rows], color="tab:purple")
        single_ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=7)
        single_ax.invert_yaxis()
        low = min(r["micro_f1"] for _, r in rows)
        single_ax.set_xlim(max(0.0, low - 0.1), 1.0)
        single_ax.set_xlabel("micro-F1, agent-dropout primary\nwith each specialist alone")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
