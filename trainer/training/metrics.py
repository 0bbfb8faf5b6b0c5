"""CTA metrics: micro-F1, macro-F1, per-class F1, hard classes and the majority-class baseline, and the spread of a
score over seeds or folds.

Macro-F1 averages over the labels present in the ground truth (as the SOTAB evaluation does); a column always gets
exactly one prediction, so micro-F1 equals accuracy here.
"""
from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

HARD_CLASS_F1 = 0.5


@dataclass
class Scores:
    micro_f1: float
    macro_f1: float
    per_class: dict[str, float]
    hard_classes: list[str]
    n_columns: int
    majority_macro_f1: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def per_class_f1(gold: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    tp, fp, fn = Counter[str](), Counter[str](), Counter[str]()
    for g, p in zip(gold, pred, strict=True):
        if g == p:
            tp[g] += 1
        else:
            fp[p] += 1
            fn[g] += 1
    scores = {}
    for label in sorted(set(gold)):
        denom = 2 * tp[label] + fp[label] + fn[label]
        scores[label] = 2 * tp[label] / denom if denom else 0.0
    return scores


def hard_classes(per_class: Mapping[str, float]) -> list[str]:
    """The labels whose F1 is below HARD_CLASS_F1, sorted."""
    return sorted(label for label, f1 in per_class.items() if f1 < HARD_CLASS_F1)


def hard_class_f1(per_class: Mapping[str, float], hard: Iterable[str]) -> float | None:
    """Mean F1 over those of the `hard` labels that `per_class` scores; None when it scores none of them."""
    present = [per_class[c] for c in hard if c in per_class]
    return statistics.fmean(present) if present else None


def spread(values: Sequence[float]) -> float:
    """Sample standard deviation over seeds or folds (0 for a single run)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def score(gold: Sequence[str], pred: Sequence[str], majority_label: str | None = None) -> Scores:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    if not gold:
        raise ValueError("no labelled columns to score")
    per_class = per_class_f1(gold, pred)
    micro = sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)
    majority = None
    if majority_label is not None:
        majority = sum(per_class_f1(gold, [majority_label] * len(gold)).values()) / len(per_class)
    return Scores(
        micro_f1=micro,
        macro_f1=sum(per_class.values()) / len(per_class),
        per_class=per_class,
        hard_classes=hard_classes(per_class),
        n_columns=len(gold),
        majority_macro_f1=majority,
    )
