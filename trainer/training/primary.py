"""Training a primary end to end: data → (synthetic pre-training) → training, alone or with fused specialist
states → evaluation on the real validation split → reports and a model directory."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from swarm.model_server.choices import DEFAULT_MAX_SPECIALISTS
from swarm.model_server.model.backbone import count_parameters, get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.manifest import PrimaryManifest
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.tables import load_labels
from swarm.model_server.model.weights import save_weights
from swarm.trainer import reports
from swarm.trainer.data.columns import ColumnExample, build_examples
from swarm.trainer.data.sotab import Split, load_dataset
from swarm.trainer.training.metrics import Scores, score
from swarm.trainer.training.state_sources import (
    LocalSpecialists,
    RemoteSpecialists,
    StateSource,
    cache_states,
    cached_inputs,
)
from swarm.trainer.training.train import Encoded, TrainConfig, encode, predict, train

TRAIN_SPLITS = ("training", "training_columns")
VALIDATION_SPLIT = "validation"


class RunConfig(BaseModel):
    """`swarm train`: a primary, alone or fused with specialists (the descriptions are its help)."""

    data: Path = Field(description="SOTAB-format dataset directory (training + validation splits).")
    run_dir: Path = Field(Path("runs/train"), description="Checkpoints; the final model goes to RUN_DIR/model.")
    reports_dir: Path | None = Field(None, description="Where metrics.json and the per-class report go (default: "
                                     "RUN_DIR; the committed reports/ belong to the report commands).")
    model: str = Field("small", description="Backbone config: tiny, small or base.")
    synthetic_tables: int = Field(0, ge=0, description="Synthetic tables generated for pre-training (0: none).")
    synthetic_steps: int = Field(0, ge=0, description="Pre-training steps on synthetic tables.")
    synthetic_seed: int = 7
    train: TrainConfig = TrainConfig()
    fusion: str | None = Field(None, description="Fuse specialist states with this mode.")
    max_specialists: int = Field(DEFAULT_MAX_SPECIALISTS, ge=0, description="Use at most this many of the given "
                                 "specialists (0: none).")
    specialist_dirs: list[Path] = Field([], description="A trained specialist directory (repeat).")
    endpoints: dict[str, str] = {}
    agent_dropout: bool = Field(False, description="Fuse a random subset of the specialists per batch, so the "
                                "primary annotates well with whatever subset an orchestrator picks.")


def synthetic_split(run_dir: Path, n_tables: int, seed: int) -> Split:
    """Synthetic tables from the project's generator, cached in the run directory."""
    from swarm.trainer.data.sotab import load_split
    from swarm.trainer.data.synth import GT_NAME, write_synthetic

    target = run_dir / f"synthetic-{n_tables}-{seed}"
    if not (target / GT_NAME).is_file():
        write_synthetic(target, n_tables, seed)
    return load_split(target, load_labels())


def labelled_splits(data: Path) -> tuple[list[Split], Split]:
    """The training splits present and the validation split of a dataset; a clear error when either is missing."""
    splits = load_dataset(data)
    train_splits = [splits[name] for name in TRAIN_SPLITS if name in splits]
    if not train_splits or VALIDATION_SPLIT not in splits:
        raise ValueError(f"{data}: need {VALIDATION_SPLIT!r} and at least one of {TRAIN_SPLITS}; "
                         f"found {sorted(splits)}")
    return train_splits, splits[VALIDATION_SPLIT]


def real_examples(data: Path, labels: list[str]) -> tuple[list[ColumnExample], list[ColumnExample]]:
    train_splits, validation = labelled_splits(data)
    return build_examples(train_splits, labels), build_examples([validation], labels)


def encode_examples(examples: Sequence[ColumnExample], tokenizer: ColumnEncoder) -> Encoded:
    return encode([e.text for e in examples], [e.label for e in examples], tokenizer)


def train_and_score(model: PrimaryModel, train_data: Encoded, val_data: Encoded, train_cfg: TrainConfig,
                    run_dir: Path, manifest: PrimaryManifest, train_caches: Sequence[Tensor] = (),
                    val_caches: Sequence[Tensor] = (), desc: str = "primary", agent_dropout: bool = False,
                    honest: Sequence[bool] | None = None) -> Scores:
    """Train (resumable) in run_dir, save the model to run_dir/model, score it on the validation columns (with all
    its specialists); `honest` (per training column): where the specialists' states may be fused."""
    extra = cached_inputs(train_caches, agent_dropout_seed=train_cfg.seed if agent_dropout else None,
                          honest=honest) if train_caches else None
    train(model, train_data, train_cfg, run_dir, manifest.to_dict(), extra, desc=desc)
    save_weights(run_dir / "model", model, manifest)
    pred = predict(model, val_data, cached_inputs(val_caches) if val_caches else None).argmax(-1).tolist()
    gold = [model.labels[i] for i in val_data.labels.tolist()]
    return score(gold, [model.labels[i] for i in pred], manifest.majority_label)


def state_source(cfg: RunConfig) -> StateSource | None:
    if not cfg.fusion or cfg.max_specialists == 0:
        return None
    if cfg.specialist_dirs:
        return LocalSpecialists.from_dirs(cfg.specialist_dirs[: cfg.max_specialists], cfg.train.device)
    if cfg.endpoints:
        return RemoteSpecialists(dict(list(cfg.endpoints.items())[: cfg.max_specialists]))
    raise ValueError(f"fusion {cfg.fusion!r} needs specialists: --specialist-dir or --specialist NAME=HOST:PORT")


def seen_tables(source: StateSource) -> set[str]:
    """The tables the source's specialists record as their training data (honest fusion withholds them there)."""
    if isinstance(source, LocalSpecialists):
        return set().union(*(s.trained_tables for s in source.specialists))
    if isinstance(source, RemoteSpecialists):
        return source.trained_tables()
    return set()


def run_training(cfg: RunConfig) -> tuple[Scores, Path]:
    """Train a primary (alone, or fused with specialists) and evaluate it on the real validation split."""
    labels = load_labels()
    started = time.time()
    train_ex, val_ex = real_examples(cfg.data, labels)
    source = state_source(cfg)
    names = source.names if source is not None else []
    torch.manual_seed(cfg.train.seed)  # weight init is part of the run's reproducibility
    model = PrimaryModel(get_config(cfg.model), labels, fusion_mode=cfg.fusion if names else None, specialists=names)
    if source is not None:
        model.load_decoders(source.decoders())
    tokenizer = ColumnEncoder(model.cfg.max_len)
    counts = Counter(labels[e.label] for e in train_ex)
    model_dir = cfg.run_dir / "model"
    manifest = PrimaryManifest.of(model.meta(), model_dir, cfg.specialist_dirs[:len(names)],
                                  majority_label=counts.most_common(1)[0][0], train_columns=len(train_ex),
                                  agent_dropout=cfg.agent_dropout and bool(names))
    print(f"primary '{cfg.model}': {count_parameters(model):,} parameters "
          f"({count_parameters(model, trainable_only=True):,} trainable); specialists: {names or 'none'}; "
          f"{len(train_ex)} real training columns, {len(val_ex)} validation columns")

    if cfg.synthetic_tables and cfg.synthetic_steps:
        synth = build_examples([synthetic_split(cfg.run_dir, cfg.synthetic_tables, cfg.synthetic_seed)], labels)
        pre = cfg.train.model_copy(update={"steps": cfg.synthetic_steps})
        train(model, encode_examples(synth, tokenizer), pre, cfg.run_dir / "pretrain", manifest.to_dict(),
              desc="synthetic pre-training")

    train_caches: list[Tensor] = []
    val_caches: list[Tensor] = []
    honest: list[bool] | None = None
    if source is not None:
        with closing(source):
            honest = [e.table not in seen_tables(source) for e in train_ex]
            if not any(honest):
                print("warning: the specialists record every training table as theirs, so there is no column to "
                      "learn how far to trust them on (honest fusion): the fused primary stays the primary alone. "
                      "`swarm release` keeps a share of the tables from them.")
            train_caches = [cache_states(source, n, [e.text for e in train_ex]) for n in names]
            val_caches = [cache_states(source, n, [e.text for e in val_ex]) for n in names]
    scores = train_and_score(model, encode_examples(train_ex, tokenizer), encode_examples(val_ex, tokenizer),
                             cfg.train, cfg.run_dir, manifest.model_copy(update={"honest_fusion": source is not None}),
                             train_caches, val_caches, desc="primary (real data)", agent_dropout=cfg.agent_dropout,
                             honest=honest)
    payload = scores.to_dict() | {"model": cfg.model, "split": VALIDATION_SPLIT, "fusion": model.fusion_mode,
                                  "specialists": names, "seconds": round(time.time() - started, 1),
                                  "checkpoint": str(model_dir)}
    reports_dir = cfg.reports_dir or cfg.run_dir
    reports.write_json(reports_dir / "metrics.json", payload)
    reports.per_class_report(scores, f"Primary ({cfg.model}, specialists: {', '.join(names) or 'none'}) "
                             "on real SOTAB validation", reports_dir / "baseline.md",
                             reports_dir / "baseline_per_class_f1.png", dict(counts))
    return scores, model_dir
