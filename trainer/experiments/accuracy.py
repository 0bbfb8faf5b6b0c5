"""The accuracy experiment: how well the primary, alone and with its specialists, labels real SOTAB columns, and
what each part of the model contributes. Writes reports/accuracy.{json,md,png}; `swarm accuracy-report` runs it.

Protocols, each stating what it trained on:
- `cv` (the reported estimate): grouped K-fold over the validation tables, repeated over seeds. Fold k's primary
  trains on training + training_columns + the validation tables of the other folds and is scored on fold k's
  columns; no table is in two folds. Rows are mean ± std over the (seed, fold) runs, paired (alone vs swarm share
  each run's split and seed).
- `holdout` (the protocol of the earlier reports): trained on training + training_columns only, scored on the whole
  validation split; the ablation ladder runs here, one step at a time.
The specialists are fine-tuned per domain on training + training_columns only: they never see a validation label, so
the same frozen specialists serve every fold. A fused primary learns how far to trust them (belief weights, state
fusion) only on columns they were not trained on ("honest" fusion): on their own training columns their beliefs are
near perfect, and a primary that learnt to trust those was made worse by them (see the ablation rows); there the
specialists are withheld and the primary trains as alone. The released primary (`released/model`, named in
metrics.json) is trained on every labelled split with the swarm's recipe; its own score is unknown by construction
(the CV estimates it). Table names are never read: a table is a tuple of columns
(swarm.model_server.model.tables.Table).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from swarm.model_server.choices import DEVICE_AUTO
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.specialist import Specialist, domains
from swarm.model_server.model.tables import load_labels
from swarm.trainer import reports
from swarm.trainer.data.columns import ColumnExample, build_examples
from swarm.trainer.data.sotab import Split
from swarm.trainer.experiments.accuracy_report import write_accuracy_reports
from swarm.trainer.experiments.runner import ExperimentRunner, cv_folds, grouped_folds
from swarm.trainer.experiments.specialist_help import help_counts, summarise_help
from swarm.trainer.training.metrics import Scores, hard_class_f1, hard_classes, score, spread
from swarm.trainer.training.primary import labelled_splits
from swarm.trainer.training.specialists import train_specialist
from swarm.trainer.training.train import TrainConfig


class AccuracyConfig(BaseModel):
    """`swarm accuracy-report` (the descriptions are its help)."""

    data: Path = Field(description="SOTAB-format dataset directory (training splits + validation).")
    run_dir: Path = Field(Path("runs/accuracy"), description="Specialists, fold models and the released swarm.")
    reports_dir: Path = Field(Path("reports"), description="Where accuracy.json, accuracy.md and accuracy.png go.")
    model: str = Field("tiny", description="Backbone config of primaries and specialists.")
    steps: int = Field(600, ge=1, description="Optimizer steps per primary.")
    specialist_steps: int = Field(400, ge=1, description="Optimizer steps of each specialist.")
    batch_size: int = Field(64, ge=1)
    folds: int = Field(5, ge=2, description="Grouped folds over the validation tables.")
    seeds: int = Field(3, ge=1, description="The CV is repeated per seed (every fold re-trained).")
    singles: bool = Field(True, description="Also each specialist alone (cv.single.<name>), specialist_help and "
                          "criterion (a), from one agent-dropout primary per run.")
    seed: int = 0
    # The ablation also runs 3.
    validation_copies: int = Field(1, ge=1, description="Times each validation column of a fold's training set is "
                                   "repeated.")
    thinned_copies: int = Field(1, ge=0)
    device: str = DEVICE_AUTO
    ablation: bool = Field(True, description="Also run the ablation rows (holdout ladder, CV variants).")
    # model_server/domains.yaml `knowledge:`
    knowledge: bool = Field(True, description="The specialists read their domain's knowledge sources.")
    controls: bool = Field(True, description="Also the control rows: the primary reading every knowledge source "
                           "itself, and specialists without knowledge sources.")


def _summary(runs: Sequence[Scores], hard: Sequence[str]) -> dict:
    micro = [s.micro_f1 for s in runs]
    macro = [s.macro_f1 for s in runs]
    hard_scores = [h for s in runs if (h := hard_class_f1(s.per_class, hard)) is not None]
    return {"micro_f1": statistics.fmean(micro), "micro_f1_std": spread(micro),
            "macro_f1": statistics.fmean(macro), "macro_f1_std": spread(macro),
            "hard_class_f1": statistics.fmean(hard_scores) if hard_scores else None,
            "per_run": [{"micro_f1": s.micro_f1, "macro_f1": s.macro_f1} for s in runs]}


# Confusions the issue names (the worst of the first front end), plus Duration/Time: a label taken for another of its
# group.
CONFUSION_GROUPS: tuple[tuple[str, ...], ...] = (
    ("Time", "openingHours"),
    ("weight", "Distance", "price", "QuantitativeValue"),
    ("unitCode", "unitText"),
    ("Review", "Product/description"),
    ("Duration", "Time"),
)


def confusions(gold: Sequence[str], pred: Sequence[str]) -> dict[str, int]:
    """Per group, how many of its columns were labelled as another member of the group."""
    return {" / ".join(group): sum(g in group and p in group and g != p for g, p in zip(gold, pred, strict=True))
            for group in CONFUSION_GROUPS}


class FoldRun(BaseModel):
    """One (seed, fold) of the CV: the held-out columns' gold labels and each model's predictions."""

    seed: int
    fold: int
    gold: list[str]
    alone: list[str]
    swarm: list[str]
    primary_with_knowledge: list[str] | None = None
    swarm_without_knowledge: list[str] | None = None
    # A primary trained with agent dropout (any subset of the specialists fused per batch), answering with none, with
    # each specialist alone, and with all: the rows `cv.single.<name>` and criterion (a) compare within one model.
    robust_none: list[str] | None = None
    robust_all: list[str] | None = None
    singles: dict[str, list[str]] = Field(default_factory=dict)


@dataclass
class _Setup:
    """What every part of one accuracy run reads: the labelled splits and their examples, and the runner with the
    frozen specialists (plus, for the controls, the specialists trained without knowledge sources)."""

    labels: list[str]
    train_splits: list[Split]
    validation: Split
    runner: ExperimentRunner
    base: list[ColumnExample]  # training + training_columns, with thinned copies
    val: list[ColumnExample]
    plain_context: list[ColumnExample]  # training + training_columns, no thinned copies (the specialists' data)
    controls: bool
    every_source: tuple[str, ...]
    without_knowledge: list[Specialist]


def _prepare(cfg: AccuracyConfig) -> _Setup:
    """Loads the labelled splits, builds their examples and trains the specialists (and the controls' ones)."""
    labels = load_labels()
    train_splits, validation = labelled_splits(cfg.data)
    runner = ExperimentRunner(cfg, labels)
    base = build_examples(train_splits, labels, thinned_copies=cfg.thinned_copies, seed=cfg.seed)
    val = build_examples([validation], labels)

    plain_context = build_examples(train_splits, labels)
    specialist_cfg = TrainConfig(steps=cfg.specialist_steps, batch_size=cfg.batch_size, seed=cfg.seed,
                                 device=cfg.device)
    runner.specialists = [
        train_specialist(domain, runner.model_cfg, plain_context, labels, specialist_cfg, cfg.run_dir / "specialists",
                         knowledge=cfg.knowledge)
        for domain in domains().values()]
    runner.specialist_tables = {e.table for e in plain_context}
    every_source = tuple(dict.fromkeys(k for d in domains().values() for k in d.knowledge))
    controls = cfg.controls and cfg.knowledge
    without_knowledge = [
        train_specialist(domain, runner.model_cfg, plain_context, labels, specialist_cfg,
                         cfg.run_dir / "specialists-without-knowledge")
        for domain in domains().values()] if controls else []
    return _Setup(labels, train_splits, validation, runner, base, val, plain_context, controls, every_source,
                  without_knowledge)


def _ablation_row(step: str, protocol: str, scores: dict) -> dict:
    return {"step": step, "protocol": protocol, "micro_f1": scores["micro_f1"], "macro_f1": scores["macro_f1"]}


def _holdout_ladder(cfg: AccuracyConfig, d: _Setup) -> tuple[list[dict], list[str]]:
    """Holdout protocol: the primary's ladder, one step at a time; its rows and the full primary's hard classes."""
    rows: list[dict] = []
    runner = d.runner
    plain = build_examples(d.train_splits, d.labels, context=False)
    val_plain = build_examples([d.validation], d.labels, context=False)
    no_features = ColumnEncoder(runner.model_cfg.max_len, features=False)
    for step, train_ex, val_ex, encoder in (
            ("cell vectors of the column alone", plain, val_plain, no_features),
            ("+ neighbour columns as context", d.plain_context, d.val, no_features),
            ("+ thinned-table copies in training", d.base, d.val, no_features),
            ("+ surface features (full primary)", d.base, d.val, None)):
        scores = runner.score(runner.fit(f"holdout-{len(rows)}", train_ex, cfg.seed, fused=False,
                                         encoder=encoder), val_ex, encoder)
        rows.append(_ablation_row(step, "holdout", scores.to_dict()))
    return rows, hard_classes(scores.per_class)


def _fold_run(cfg: AccuracyConfig, d: _Setup, s: int, k: int, train_ex: list[ColumnExample],
              test_ex: list[ColumnExample]) -> FoldRun:
    """CV seed `s`, fold `k`: the primary alone and the swarm, the agent-dropout primary (`singles`) and the controls,
    each trained on the fold's training examples, answering its held-out ones."""
    runner, labels = d.runner, d.labels
    seed = cfg.seed + 100 * s + k
    alone = runner.fit(f"cv-s{s}-f{k}-alone", train_ex, seed, fused=False)
    swarm = runner.fit(f"cv-s{s}-f{k}-swarm", train_ex, seed, fused=True, honest=True)
    run = FoldRun(seed=s, fold=k, gold=[labels[e.label] for e in test_ex],
                  alone=runner.predict(alone, test_ex), swarm=runner.predict(swarm, test_ex))
    if cfg.singles:
        robust = runner.fit(f"cv-s{s}-f{k}-robust", train_ex, seed, fused=True, honest=True,
                            agent_dropout=True)
        run.robust_none = runner.predict(robust, test_ex, agents=[])
        run.robust_all = runner.predict(robust, test_ex)
        run.singles = {sp.name: runner.predict(robust, test_ex, agents=[i])
                       for i, sp in enumerate(runner.specialists)}
    if d.controls:
        with_knowledge = runner.fit(f"cv-s{s}-f{k}-primary-knowledge", train_ex, seed, fused=False,
                                    knowledge=d.every_source)
        plain_swarm = runner.fit(f"cv-s{s}-f{k}-swarm-without-knowledge", train_ex, seed, fused=True,
                                 honest=True, specialists=d.without_knowledge)
        run.primary_with_knowledge = runner.predict(with_knowledge, test_ex)
        run.swarm_without_knowledge = runner.predict(plain_swarm, test_ex)
    return run


def _cv_summary(runs: Sequence[FoldRun], hard: Sequence[str], controls: bool
                ) -> tuple[dict[str, Any], list[Scores], list[Scores]]:
    """The CV rows (primary alone, swarm, their paired gain per run, the controls), and the alone and swarm scores
    per run."""
    alone_scores = [score(r.gold, r.alone) for r in runs]
    swarm_scores = [score(r.gold, r.swarm) for r in runs]
    cv: dict[str, Any] = {"primary_alone": _summary(alone_scores, hard), "swarm": _summary(swarm_scores, hard)}
    cv["swarm_gain_per_fold"] = [b.micro_f1 - a.micro_f1 for a, b in zip(alone_scores, swarm_scores, strict=True)]
    cv["runs"] = [{"seed": r.seed, "fold": r.fold, "alone_micro_f1": a.micro_f1, "swarm_micro_f1": b.micro_f1}
                  for r, a, b in zip(runs, alone_scores, swarm_scores, strict=True)]
    for key in ("primary_with_knowledge", "swarm_without_knowledge") if controls else ():
        control = [score(r.gold, getattr(r, key)) for r in runs]
        cv[key] = _summary(control, hard)
        cv[f"swarm_minus_{key}_per_run"] = [b.micro_f1 - c.micro_f1
                                             for b, c in zip(swarm_scores, control, strict=True)]
    return cv, alone_scores, swarm_scores


def _help_summary(runs: Sequence[FoldRun]) -> list[dict]:
    """Where each specialist's help lands (against the agent-dropout primary with none), per seed over its folds,
    summarised over seeds."""
    help_per_seed = [[help_counts(name, gold, [g == p for g, p in zip(gold, none, strict=True)],
                                  [g == p for g, p in zip(gold, single, strict=True)])
                      for name, single, none, gold in _seed_columns(runs, seed)]
                     for seed in sorted({r.seed for r in runs})]
    return summarise_help(help_per_seed)


def _cv_ablation(cfg: AccuracyConfig, d: _Setup, folds: Sequence[Sequence[int]], runs: Sequence[FoldRun],
                 alone_scores: Sequence[Scores], swarm_scores: Sequence[Scores], hard: Sequence[str]) -> list[dict]:
    """CV rows, first seed: what the validation tables, their weight and honest fusion each bring."""
    def first_seed(scores: Sequence[Scores]) -> dict:
        return _summary([s for r, s in zip(runs, scores, strict=True) if r.seed == 0], hard)

    rows = [_ablation_row("+ validation tables of the other folds in training (primary alone)", "cv",
                          first_seed(alone_scores))]
    extra = 3 if cfg.validation_copies == 1 else 1
    n = len(d.runner.specialists)
    variants = [("alone", f"validation columns x{extra} (primary alone)", False, False, extra),
                ("swarm", f"validation columns x{extra} (swarm, honest fusion)", True, True, extra),
                ("dishonest", f"+ {n} specialists, fusion learnt on every column (also their own training ones)",
                 True, False, cfg.validation_copies)]
    for key, step, fused, honest, copies in variants:
        got = []
        for k, (train_ex, test_ex) in enumerate(cv_folds(d.base, d.val, folds, copies)):
            model = d.runner.fit(f"cv-ablation-{key}-x{copies}-f{k}", train_ex, cfg.seed + k, fused=fused,
                                 honest=honest)
            got.append(d.runner.score(model, test_ex))
        rows.append(_ablation_row(step, "cv", _summary(got, hard)))
    rows.append(_ablation_row(f"+ {n} specialists, fusion learnt only on columns they never saw (the swarm)", "cv",
                              first_seed(swarm_scores)))
    return rows


def _release(cfg: AccuracyConfig, d: _Setup) -> Path:
    """The released swarm: every labelled split, the swarm's recipe, through the one release path (`swarm release`)
    with the specialists trained above (they record their tables: the primary trusts them on validation's); its
    primary's directory."""
    from swarm.trainer.release import ReleaseConfig, build_release

    release = build_release(ReleaseConfig(
        data=cfg.data, run_dir=cfg.run_dir / "released", model=cfg.model, steps=cfg.steps,
        batch_size=cfg.batch_size, splits=[s.name for s in d.train_splits] + [d.validation.name], policy_share=0.0,
        thinned_copies=cfg.thinned_copies, seed=cfg.seed, device=cfg.device,
        specialist_dirs=[cfg.run_dir / "specialists" / s.name for s in d.runner.specialists]))
    return Path(release["primary"])


def _trained_on(cfg: AccuracyConfig, n_base: int) -> dict[str, str]:
    """The report's `trained_on`: what each protocol's models were trained on."""
    times = "" if cfg.validation_copies == 1 else f" (each {cfg.validation_copies} times)"
    return {
        "cv": f"training + training_columns ({n_base} examples with thinned copies) + the validation "
              f"tables of the other folds{times}; scored on the held-out fold",
        "holdout": "training + training_columns; scored on all of validation",
        "specialists": "training + training_columns, per domain",
        "fusion": "belief weights and state fusion learnt only on columns the specialists were not trained on "
                  "(the validation tables in training); elsewhere the primary trains alone",
        "released": f"training + training_columns + validation{times}",
    }


def _write_metrics(cfg: AccuracyConfig, pooled_swarm: Scores, cv: dict, model_dir: Path) -> None:
    """metrics.json: the released swarm, in `swarm eval --json`'s format, with the CV estimate of its scores."""
    reports.write_json(cfg.reports_dir / "metrics.json", pooled_swarm.to_dict() | {
        "micro_f1": cv["swarm"]["micro_f1"], "macro_f1": cv["swarm"]["macro_f1"], "model": cfg.model,
        "split": f"validation, grouped {cfg.folds}-fold CV x {cfg.seeds} seed(s) (per_class: all runs pooled); the "
                 "released checkpoint itself was trained on it", "checkpoint": str(model_dir)})


def run_accuracy(cfg: AccuracyConfig) -> dict:
    started = time.time()
    d = _prepare(cfg)
    ablation: list[dict] = []
    hard: list[str] = []
    if cfg.ablation:
        ablation, hard = _holdout_ladder(cfg, d)

    # Grouped K-fold CV over the validation tables (the reported estimate), repeated per seed.
    folds = grouped_folds(d.val, cfg.folds, cfg.seed)
    splits = cv_folds(d.base, d.val, folds, cfg.validation_copies)
    runs = [_fold_run(cfg, d, s, k, train_ex, test_ex)
            for s in range(cfg.seeds) for k, (train_ex, test_ex) in enumerate(splits)]
    if not hard:
        hard = hard_classes(_pooled(runs, "alone").per_class)
    cv, alone_scores, swarm_scores = _cv_summary(runs, hard, d.controls)
    help_summary: list[dict] = []
    if cfg.singles:
        cv.update(single_rows(runs, hard))
        help_summary = _help_summary(runs)
    if cfg.ablation:
        ablation += _cv_ablation(cfg, d, folds, runs, alone_scores, swarm_scores, hard)
    model_dir = _release(cfg, d)

    pooled_alone, pooled_swarm = _pooled(runs, "alone"), _pooled(runs, "swarm")
    gold = [g for r in runs for g in r.gold]
    result = {
        "model": cfg.model, "folds": cfg.folds, "seeds": cfg.seeds, "steps": cfg.steps,
        "specialists": {sp.name: list(sp.model.backbone.knowledge) for sp in d.runner.specialists},
        "validation_copies": cfg.validation_copies,
        "trained_on": _trained_on(cfg, len(d.base)),
        "cv": cv,
        "per_class_f1": {label: {"primary_alone": pooled_alone.per_class.get(label),
                                 "swarm": pooled_swarm.per_class.get(label)} for label in sorted(set(gold))},
        "specialist_help": help_summary,
        "confusions": {"primary_alone": confusions(gold, [p for r in runs for p in r.alone]),
                       "swarm": confusions(gold, [p for r in runs for p in r.swarm])},
        "ablation": ablation,
        "hard_classes": hard,
        "checkpoint": str(model_dir),
        "seconds": round(time.time() - started, 1),
    }
    write_accuracy_reports(result, cfg.reports_dir)
    _write_metrics(cfg, pooled_swarm, cv, model_dir)
    return result


def _pooled(runs: Sequence[FoldRun], key: str) -> Scores:
    """Scores of every run's held-out predictions together (per-class F1 over all folds and seeds)."""
    return score([g for r in runs for g in r.gold], [p for r in runs for p in getattr(r, key)])


def _seed_columns(runs: Sequence[FoldRun], seed: int) -> list[tuple[str, list[str], list[str], list[str]]]:
    """Per specialist, (name, its single answers, the no-specialist answers, gold) over every fold of one seed."""
    mine = [r for r in runs if r.seed == seed]
    names = list(mine[0].singles)
    return [(name, [p for r in mine for p in r.singles[name]], [p for r in mine for p in r.robust_none or []],
             [g for r in mine for g in r.gold]) for name in names]


def single_rows(runs: Sequence[FoldRun], hard: Sequence[str]) -> dict[str, Any]:
    """`single.<name>`: the agent-dropout primary with that specialist alone, per run; `robust_all` and
    `robust_none`: the same primary with every specialist and with none; criterion (a): all − the best single
    (the single with the highest mean micro-F1), paired per run, within that one primary."""
    names = list(runs[0].singles)
    singles = {name: [score(r.gold, r.singles[name]) for r in runs] for name in names}
    every = [score(r.gold, r.robust_all or []) for r in runs]
    none = [score(r.gold, r.robust_none or []) for r in runs]
    best = max(names, key=lambda n: statistics.fmean(s.micro_f1 for s in singles[n]))
    beyond = [a.micro_f1 - b.micro_f1 for a, b in zip(every, singles[best], strict=True)]
    return {
        "single": {name: _summary(scores, hard) for name, scores in singles.items()},
        "robust_all": _summary(every, hard),
        "robust_none": _summary(none, hard),
        "criterion_a": {"best_single": best, "all_minus_best_single": statistics.fmean(beyond),
                        "all_minus_best_single_std": spread(beyond), "per_run": beyond,
                        "goal": 0.02, "passes": statistics.fmean(beyond) >= 0.02},
    }
