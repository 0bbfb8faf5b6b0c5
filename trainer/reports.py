"""Human-facing results: markdown tables and PNG charts under reports/, and the console table."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swarm.trainer.training.metrics import Scores


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def per_class_report(scores: Scores, title: str, md_path: Path, png_path: Path,
                     train_counts: dict[str, int] | None = None) -> None:
    """Markdown table of per-class F1 (worst first) and a horizontal bar chart of the same."""
    ordered = sorted(scores.per_class.items(), key=lambda kv: (kv[1], kv[0]))
    summary = markdown_table(
        ["metric", "value"],
        [["micro-F1", scores.micro_f1], ["macro-F1", scores.macro_f1],
         ["majority-class macro-F1", scores.majority_macro_f1 if scores.majority_macro_f1 is not None else "-"],
         ["labelled columns", scores.n_columns], ["hard classes (F1 < 0.5)", len(scores.hard_classes)]])
    rows = [[label, f1, (train_counts or {}).get(label, "-")] for label, f1 in ordered]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(f"# {title}\n\n{summary}\n## Per-class F1 (worst first)\n\n"
                       + markdown_table(["label", "F1", "training columns"], rows), encoding="utf-8")
    _bar_chart(ordered, title, png_path)


def _bar_chart(ordered: Sequence[tuple[str, float]], title: str, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, max(4, 0.22 * len(ordered))))
    labels = [k for k, _ in ordered]
    values = [v for _, v in ordered]
    colors = ["#d62728" if v < 0.5 else "#1f77b4" for v in values]
    ax.barh(labels, values, color=colors)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (red: hard class, F1 < 0.5)")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def print_scores(scores: Scores, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("micro-F1", f"{scores.micro_f1:.3f}")
    table.add_row("macro-F1", f"{scores.macro_f1:.3f}")
    if scores.majority_macro_f1 is not None:
        table.add_row("majority-class macro-F1", f"{scores.majority_macro_f1:.3f}")
    table.add_row("labelled columns", str(scores.n_columns))
    table.add_row("hard classes (F1 < 0.5)", str(len(scores.hard_classes)))
    Console().print(table)
