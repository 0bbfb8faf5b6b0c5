"""The fusion report: reports/fusion.{json,md,png} from what `run_fusion_experiment` measured (one row per
specialist count and fusion mode, the in-domain accuracies, the chart). Reads only the result dict; trains nothing."""
from __future__ import annotations

from pathlib import Path

from swarm.trainer import reports


def _cell(row: dict, key: str) -> str:
    value = row[key]
    if value is None:
        return "-"
    std = row.get(f"{key}_std")
    return f"{value:.3f} ± {std:.3f}" if std else f"{value:.3f}"


def rows_table(result: dict) -> str:
    """Markdown table of every row and reference: mean ± standard deviation over the primary seeds."""
    def label(row: dict) -> str:
        return row["fusion"] or "none (primary alone)"

    body = [[r["specialists"], label(r), _cell(r, "micro_f1"), _cell(r, "macro_f1"), _cell(r, "hard_class_f1")]
            for r in result["rows"]]
    body += [[r["specialists"], f"{label(r)}, primary pre-trained like the specialists", _cell(r, "micro_f1"),
              _cell(r, "macro_f1"), _cell(r, "hard_class_f1")] for r in result.get("references", [])]
    return reports.markdown_table(["specialists", "fusion", "micro-F1", "macro-F1", "hard-class F1"], body)


def in_domain_table(result: dict) -> str:
    return reports.markdown_table(
        ["domain", "validation columns", "specialist accuracy", "primary-alone accuracy"],
        [[d["domain"], d["columns"], d["specialist_accuracy"], d["primary_accuracy"]] for d in result["in_domain"]])


def write_fusion_reports(result: dict, reports_dir: Path) -> None:
    reports.write_json(reports_dir / "fusion.json", result)
    order = ", ".join(result["specialists_order"])
    seeds = ", ".join(str(s) for s in result["primary_seeds"])
    (reports_dir / "fusion.md").write_text(
        f"# Fusion: primary alone vs primary + specialists ({result['model']}, real validation, "
        f"{result['n_columns']} columns)\n\nThe primary is trained on the real training columns only; the frozen "
        "specialists were pre-trained on synthetic tables and fine-tuned on their domain. Specialists are added in "
        f"this order: {order}. Mean ± standard deviation over primary seeds {seeds}.\n\n{rows_table(result)}\n"
        "## What the specialists know beyond the primary\n\nAccuracy among each domain's own labels, on the "
        f"validation columns of that domain (primary alone, seed {result['primary_seeds'][0]}):\n\n"
        f"{in_domain_table(result)}", encoding="utf-8")
    _plot(result, reports_dir / "fusion.png")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    alone = result["rows"][0]
    ax.axhline(alone["macro_f1"], color="black", linestyle="--", label="primary alone")
    ax.axhspan(alone["macro_f1"] - alone["macro_f1_std"], alone["macro_f1"] + alone["macro_f1_std"],
               color="black", alpha=0.08)
    for ref in result.get("references", [])[:1]:
        ax.axhline(ref["macro_f1"], color="grey", linestyle=":", label="primary pre-trained like the specialists")
    for mode in sorted({r["fusion"] for r in result["rows"] if r["fusion"]}):
        pts = sorted((r["specialists"], r["macro_f1"], r["macro_f1_std"]) for r in result["rows"]
                     if r["fusion"] == mode)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                    label=mode)
    ax.set_xlabel("specialists fused")
    ax.set_ylabel("macro-F1 (real validation), mean ± std over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
