"""The primary-only baseline end to end: data → (synthetic pre-training) → training → evaluation → reports."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from swarm.model_server.backbone import count_parameters, get_config
from swarm.model_server.text import ColumnTokenizer
from swarm.trainer import checkpoint, reports
from swarm.trainer.columns import ColumnExample, build_examples
from swarm.trainer.evaluate import evaluate_examples
from swarm.trainer.metrics import Scores
from swarm.trainer.primary import PrimaryModel
from swarm.trainer.sotab import Split, load_dataset, load_labels
from swarm.trainer.train import TrainConfig, encode, train

TRAIN_SPLITS = ("training", "training_columns")
VALIDATION_SPLIT = "validation"


class BaselineConfig(BaseModel):
    data: Path
    run_dir: Path = Path("runs/demo")
    reports_dir: Path = Path("reports")
    model: str = "small"
    synthetic_tables: int = Field(0, ge=0)
    synthetic_steps: int = Field(0, ge=0)
    synthetic_seed: int = 7
    train: TrainConfig = TrainConfig()


def synthetic_split(run_dir: Path, n_tables: int, seed: int) -> Split:
    """Synthetic tables from the project's generator, cached in the run directory."""
    from swarm.trainer.sotab import load_split
    from swarm.trainer.synth import write_synthetic

    target = run_dir / f"synthetic-{n_tables}-{seed}"
    if not (target / "sotab_v2_cta_synthetic_set.csv").is_file():
        write_synthetic(target, n_tables, seed)
    return load_split(target, load_labels())


def real_examples(data: Path, labels: list[str]) -> tuple[list[ColumnExample], list[ColumnExample]]:
    splits = load_dataset(data)
    train_splits = [splits[name] for name in TRAIN_SPLITS if name in splits]
    if not train_splits or VALIDATION_SPLIT not in splits:
        raise ValueError(f"{data}: need {VALIDATION_SPLIT!r} and at least one of {TRAIN_SPLITS}; "
                         f"found {sorted(splits)}")
    return build_examples(train_splits, labels), build_examples([splits[VALIDATION_SPLIT]], labels)


def run_baseline(cfg: BaselineConfig) -> tuple[Scores, Path]:
    """Train the primary alone and evaluate it on the real validation split; returns (scores, model dir)."""
    labels = load_labels()
    started = time.time()
    train_ex, val_ex = real_examples(cfg.data, labels)
    torch.manual_seed(cfg.train.seed)  # weight init is part of the run's reproducibility
    model = PrimaryModel(get_config(cfg.model), labels)
    tokenizer = ColumnTokenizer(model.cfg.max_len)
    counts = Counter(labels[e.label] for e in train_ex)
    meta = model.meta() | {"majority_label": counts.most_common(1)[0][0], "train_columns": len(train_ex)}
    print(f"primary '{cfg.model}': {count_parameters(model):,} parameters "
          f"({count_parameters(model, trainable_only=True):,} trainable); "
          f"{len(train_ex)} real training columns, {len(val_ex)} validation columns")

    if cfg.synthetic_tables and cfg.synthetic_steps:
        synth = build_examples([synthetic_split(cfg.run_dir, cfg.synthetic_tables, cfg.synthetic_seed)], labels)
        pre = cfg.train.model_copy(update={"steps": cfg.synthetic_steps})
        train(model, encode([e.text for e in synth], [e.label for e in synth], tokenizer), pre,
              cfg.run_dir / "pretrain", meta, desc="synthetic pre-training")

    data = encode([e.text for e in train_ex], [e.label for e in train_ex], tokenizer)
    train(model, data, cfg.train, cfg.run_dir / "primary", meta, desc="primary (real data)")
    model_dir = cfg.run_dir / "model"
    checkpoint.save_weights(model_dir, model, meta)

    scores = evaluate_examples(model, val_ex, labels, majority_label=meta["majority_label"])
    elapsed = time.time() - started
    payload = scores.to_dict() | {"model": cfg.model, "split": VALIDATION_SPLIT, "seconds": round(elapsed, 1),
                                  "checkpoint": str(model_dir)}
    reports.write_json(cfg.reports_dir / "metrics.json", payload)
    reports.per_class_report(scores, f"Primary alone ({cfg.model}) on real SOTAB validation",
                             cfg.reports_dir / "baseline.md", cfg.reports_dir / "baseline_per_class_f1.png",
                             dict(counts))
    return scores, model_dir
