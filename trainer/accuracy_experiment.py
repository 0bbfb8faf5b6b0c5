"""The accuracy experiment: how well the primary, alone and with its specialists, labels real SOTAB columns, and
what each part of the model contributes. Writes reports/accuracy.{json,md,png}; `swarm accuracy-report` runs it.

Protocols, each stating what it trained on:
- `cv` (the reported estimate): grouped K-fold over the validation tables. Fold k's primary trains on training +
  training_columns + the validation tables of the other folds and is scored on fold k's columns; no table is in two
  folds. Rows are mean ± std over folds, paired (alone vs swarm share each fold's split and seed).
- `holdout` (the protocol of the earlier reports): trained on training + training_columns only, scored on the whole
  validation split; the ablation ladder runs here, one step at a time.
The specialists are fine-tuned per domain on training + training_columns only: they never see a validation label, so
the same frozen specialists serve every fold. The released primary (`released/model`, named in metrics.json) is
trained on every labelled split with the swarm's recipe; its own score is unknown by construction (the CV estimates
it). Table names are never read: a table is a tuple of columns (swarm.model_server.tables.Table).
"""
from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from swarm.model_server.backbone import get_config
from swarm.model_server.choices import DEVICE_AUTO
from swarm.model_server.column_encoder import ColumnEncoder
from swarm.model_server.primary import PrimaryModel
from swarm.model_server.specialist import Specialist, domains
from swarm.model_server.weights import save_weights
from swarm.trainer import reports
from swarm.trainer.columns import ColumnExample, build_examples
from swarm.trainer.fusion_experiment import spread
from swarm.trainer.metrics import HARD_CLASS_F1, Scores, score
from swarm.trainer.pipeline import encode_examples, labelled_splits
from swarm.trainer.sotab import load_labels
from swarm.trainer.specialist_training import train_specialist
from swarm.trainer.state_sources import LocalSpecialists, cache_states, cached_inputs
from swarm.trainer.train import TrainConfig, predict, train

FUSION = "gated"


class AccuracyConfig(BaseModel):
    data: Path
    run_dir: Path = Path("runs/accuracy")
    reports_dir: Path = Path("reports")
    model: str = "tiny"
    steps: int = Field(800, ge=1)
    specialist_steps: int = Field(400, ge=1)
    batch_size: int = Field(64, ge=1)
    folds: int = Field(5, ge=2)
    seed: int = 0
    thinned_copies: int = Field(1, ge=0)
    device: str = DEVICE_AUTO
    ablation: bool = True


def grouped_folds(examples: Sequence[ColumnExample], k: int, seed: int) -> list[list[int]]:
    """Example indices per fold; every table's columns in one fold, folds balanced by column count."""
    by_table: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_table.setdefault(e.table, []).append(i)
    tables = sorted(by_table)
    random.Random(seed).shuffle(tables)
    folds: list[list[int]] = [[] for _ in range(k)]
    for name in sorted(tables, key=lambda t: -len(by_table[t])):  # stable: shuffled order breaks size ties
        min(folds, key=len).extend(by_table[name])
    return [sorted(f) for f in folds]


def _hard_f1(s: Scores, hard: Sequence[str]) -> float | None:
    present = [c for c in hard if c in s.per_class]
    return statistics.fmean([s.per_class[c] for c in present]) if present else None


def _summary(runs: Sequence[Scores], hard: Sequence[str]) -> dict:
    micro = [s.micro_f1 for s in runs]
    macro = [s.macro_f1 for s in runs]
    hard_scores = [h for s in runs if (h := _hard_f1(s, hard)) is not None]
    return {"micro_f1": statistics.fmean(micro), "micro_f1_std": spread(micro),
            "macro_f1": statistics.fmean(macro), "macro_f1_std": spread(macro),
            "hard_class_f1": statistics.fmean(hard_scores) if hard_scores else None,
            "per_run": [{"micro_f1": s.micro_f1, "macro_f1": s.macro_f1} for s in runs]}


class ExperimentRunner:
    """Trains and scores primaries of one experiment, with the frozen specialists' states cached per column text."""

    def __init__(self, cfg: AccuracyConfig, labels: list[str]) -> None:
        self.cfg, self.labels = cfg, labels
        self.model_cfg = get_config(cfg.model)
        self.specialists: list[Specialist] = []
        self._states: dict[str, dict[str, torch.Tensor]] = {}

    def train_cfg(self, seed: int, steps: int | None = None) -> TrainConfig:
        return TrainConfig(steps=steps or self.cfg.steps, batch_size=self.cfg.batch_size, seed=seed,
                           device=self.cfg.device)

    def states(self, texts: Sequence[str], specialists: Sequence[Specialist] | None = None) -> list[torch.Tensor]:
        """(n, L, H, K, V) per specialist (default: all) for these texts, each text's states computed once."""
        chosen = self.specialists if specialists is None else specialists
        source = LocalSpecialists(chosen)
        out = []
        for s in chosen:
            known = self._states.setdefault(s.name, {})
            missing = list(dict.fromkeys(t for t in texts if t not in known))
            if missing:
                for text, row in zip(missing, cache_states(source, s.name, missing), strict=True):
                    known[text] = row
            out.append(torch.stack([known[t] for t in texts]))
        return out

    def fit(self, name: str, train_ex: Sequence[ColumnExample], seed: int, fused: bool,
            encoder: ColumnEncoder | None = None, names: Sequence[str] | None = None,
            agent_dropout: bool = False) -> PrimaryModel:
        """A primary trained on `train_ex`: alone, or fused with the specialists `names` (default: all of them);
        `agent_dropout` fuses a random subset per batch (a primary for the orchestrator's subsets)."""
        encoder = encoder or ColumnEncoder(self.model_cfg.max_len)
        chosen = [s for s in self.specialists if names is None or s.name in names] if fused else []
        torch.manual_seed(seed)
        model = PrimaryModel(self.model_cfg, self.labels, FUSION if chosen else None, [s.name for s in chosen])
        if chosen:
            model.load_decoders(LocalSpecialists(chosen).decoders())
        data = encode_examples(train_ex, encoder)
        extra = cached_inputs(self.states([e.text for e in train_ex], chosen),
                              agent_dropout_seed=seed if agent_dropout else None) if chosen else None
        meta = model.meta() | {"trained_on": name, "agent_dropout": agent_dropout}
        train(model, data, self.train_cfg(seed), self.cfg.run_dir / name, meta, extra, desc=name)
        return model

    def score(self, model: PrimaryModel, examples: Sequence[ColumnExample], encoder: ColumnEncoder | None = None,
              agents: Sequence[int] | None = None) -> Scores:
        """Scores on `examples`; a fused primary reads all its specialists, or only those indexed by `agents`."""
        pred = self.probs(model, examples, encoder, agents).argmax(-1).tolist()
        return score([self.labels[e.label] for e in examples], [self.labels[i] for i in pred])

    def probs(self, model: PrimaryModel, examples: Sequence[ColumnExample], encoder: ColumnEncoder | None = None,
              agents: Sequence[int] | None = None) -> torch.Tensor:
        data = encode_examples(examples, encoder or ColumnEncoder(self.model_cfg.max_len))
        chosen = [s for s in self.specialists if s.name in model.specialists]
        extra = cached_inputs(self.states([e.text for e in examples], chosen), agents) if chosen else None
        return predict(model, data, extra)


def run_accuracy(cfg: AccuracyConfig) -> dict:
    started = time.time()
    labels = load_labels()
    train_splits, validation = labelled_splits(cfg.data)
    runner = ExperimentRunner(cfg, labels)
    base = build_examples(train_splits, labels, thinned_copies=cfg.thinned_copies, seed=cfg.seed)
    val = build_examples([validation], labels)

    plain_context = build_examples(train_splits, labels)
    runner.specialists = [
        train_specialist(domain, runner.model_cfg, plain_context, labels,
                         TrainConfig(steps=cfg.specialist_steps, batch_size=cfg.batch_size, seed=cfg.seed,
                                     device=cfg.device), cfg.run_dir / "specialists")
        for domain in domains().values()]

    # Holdout protocol: the ladder, then the full recipe alone and with specialists.
    ladder: list[tuple[str, dict]] = []
    if cfg.ablation:
        plain = build_examples(train_splits, labels, context=False)
        val_plain = build_examples([validation], labels, context=False)
        no_features = ColumnEncoder(runner.model_cfg.max_len, features=False)
        steps = [
            ("cell vectors of the column alone", plain, val_plain, no_features),
            ("+ neighbour columns as context", plain_context, val, no_features),
            ("+ thinned-table copies in training", base, val, no_features),
        ]
        for step, train_ex, val_ex, encoder in steps:
            model = runner.fit(f"holdout-{len(ladder)}", train_ex, cfg.seed, fused=False, encoder=encoder)
            ladder.append((step, runner.score(model, val_ex, encoder).to_dict()))
    alone_holdout = runner.score(runner.fit("holdout-alone", base, cfg.seed, fused=False), val)
    swarm_holdout = runner.score(runner.fit("holdout-swarm", base, cfg.seed, fused=True), val)
    ladder.append(("+ surface features (full primary)", alone_holdout.to_dict()))
    ladder.append((f"+ 5 specialists ({FUSION} fusion, beliefs)", swarm_holdout.to_dict()))
    hard = sorted(c for c, f1 in alone_holdout.per_class.items() if f1 < HARD_CLASS_F1)

    # Grouped K-fold CV over the validation tables (the reported estimate).
    folds = grouped_folds(val, cfg.folds, cfg.seed)
    alone_runs, swarm_runs = [], []
    for k, held in enumerate(folds):
        held_set = set(held)
        train_ex = [*base, *(e for i, e in enumerate(val) if i not in held_set)]
        test_ex = [val[i] for i in held]
        alone_runs.append(runner.score(runner.fit(f"cv{k}-alone", train_ex, cfg.seed + k, fused=False), test_ex))
        swarm_runs.append(runner.score(runner.fit(f"cv{k}-swarm", train_ex, cfg.seed + k, fused=True), test_ex))
    cv = {"primary_alone": _summary(alone_runs, hard), "swarm": _summary(swarm_runs, hard)}
    cv["swarm_gain_per_fold"] = [s.micro_f1 - a.micro_f1 for a, s in zip(alone_runs, swarm_runs, strict=True)]

    # The released swarm: every labelled split, the swarm's recipe.
    released = runner.fit("released", [*base, *val], cfg.seed, fused=True)
    model_dir = cfg.run_dir / "released" / "model"
    save_weights(model_dir, released, released.meta() | {"specialist_dirs": [
        os.path.relpath(cfg.run_dir / "specialists" / s.name, model_dir) for s in runner.specialists]})

    result = {
        "model": cfg.model, "folds": cfg.folds, "steps": cfg.steps,
        "trained_on": {
            "cv": f"training + training_columns ({len(base)} examples with thinned copies) + the validation "
                  "tables of the other folds; scored on the held-out fold",
            "holdout": "training + training_columns; scored on all of validation",
            "specialists": "training + training_columns, per domain",
            "released": "training + training_columns + validation",
        },
        "cv": cv,
        "holdout": {"primary_alone": alone_holdout.to_dict() | {"hard_class_f1": _hard_f1(alone_holdout, hard)},
                    "swarm": swarm_holdout.to_dict() | {"hard_class_f1": _hard_f1(swarm_holdout, hard)}},
        "ablation": [{"step": step, "micro_f1": s["micro_f1"], "macro_f1": s["macro_f1"]} for step, s in ladder],
        "hard_classes": hard,
        "checkpoint": str(model_dir),
        "seconds": round(time.time() - started, 1),
    }
    write_accuracy_reports(result, cfg.reports_dir)
    return result


def _cell(summary: dict, key: str) -> str:
    value = summary.get(key)
    if value is None:
        return "-"
    std = summary.get(f"{key}_std")
    return f"{value:.3f} ± {std:.3f}" if std is not None else f"{value:.3f}"


def accuracy_markdown(result: dict) -> str:
    cv = result["cv"]
    rows = [[name, _cell(cv[key], "micro_f1"), _cell(cv[key], "macro_f1"), _cell(cv[key], "hard_class_f1")]
            for name, key in (("primary alone", "primary_alone"), ("primary + 5 specialists", "swarm"))]
    gains = ", ".join(f"{g:+.3f}" for g in cv["swarm_gain_per_fold"])
    ladder = [[r["step"], r["micro_f1"], r["macro_f1"]] for r in result["ablation"]]
    return (
        f"Grouped {result['folds']}-fold cross-validation over the real SOTAB validation tables (`{result['model']}` "
        f"config, {result['steps']} steps; each fold trained on {result['trained_on']['cv']}). Mean ± std over "
        f"folds:\n\n"
        + reports.markdown_table(["model", "micro-F1", "macro-F1", "hard-class F1"], rows)
        + f"\nSwarm minus primary alone, micro-F1 per fold (paired): {gains}.\n\n"
        "Ablation ladder, holdout protocol (trained on training + training_columns, scored on all of validation, "
        "one seed):\n\n" + reports.markdown_table(["step", "micro-F1", "macro-F1"], ladder))


def write_accuracy_reports(result: dict, reports_dir: Path) -> None:
    reports.write_json(reports_dir / "accuracy.json", result)
    (reports_dir / "accuracy.md").write_text("# Accuracy on real SOTAB columns\n\n" + accuracy_markdown(result),
                                              encoding="utf-8")
    _plot(result, reports_dir / "accuracy.png")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["ablation"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ys = range(len(steps))
    ax.barh([y + 0.2 for y in ys], [s["micro_f1"] for s in steps], height=0.4, label="micro-F1")
    ax.barh([y - 0.2 for y in ys], [s["macro_f1"] for s in steps], height=0.4, label="macro-F1")
    ax.set_yticks(list(ys), [s["step"] for s in steps], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    for key, style in (("primary_alone", "--"), ("swarm", "-")):
        ax.axvline(result["cv"][key]["micro_f1"], color="black", linestyle=style, linewidth=0.8,
                   label=f"CV micro-F1, {key.replace('_', ' ')}")
    ax.set_xlabel("F1 on real SOTAB validation columns")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
