"""The cross-validation runner the experiments share (accuracy, orchestrator): grouped folds over tables, each
fold's (training, held-out) examples, and `ExperimentRunner`, which trains and scores primaries of one experiment
with the frozen specialists' states cached per column text."""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import Specialist
from swarm.trainer.data.columns import ColumnExample
from swarm.trainer.training.metrics import Scores, score
from swarm.trainer.training.primary import encode_examples
from swarm.trainer.training.state_sources import LocalSpecialists, cache_states, cached_inputs
from swarm.trainer.training.train import TrainConfig, predict, train

FUSION = "gated"


class RunSettings(Protocol):
    """What the runner reads of an experiment's config (AccuracyConfig and OrchestratorConfig have these fields)."""

    run_dir: Path
    model: str
    steps: int
    batch_size: int
    device: str


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



def cv_folds(base: Sequence[ColumnExample], val: Sequence[ColumnExample], folds: Sequence[Sequence[int]],
             copies: int) -> list[tuple[list[ColumnExample], list[ColumnExample]]]:
    """(training, held-out) examples per fold: everything else + the other folds' validation columns, each of
    those `copies` times."""
    out = []
    for held in folds:
        held_set = set(held)
        other = [e for i, e in enumerate(val) if i not in held_set]
        out.append(([*base, *(e for e in other for _ in range(copies))], [val[i] for i in held]))
    return out


class ExperimentRunner:
    """Trains and scores primaries of one experiment, with the frozen specialists' states cached per column text."""

    def __init__(self, cfg: RunSettings, labels: list[str]) -> None:
        self.cfg, self.labels = cfg, labels
        self.model_cfg = get_config(cfg.model)
        self.specialists: list[Specialist] = []
        self.specialist_tables: set[str] = set()  # the tables the specialists were trained on
        self._states: dict[tuple[str, tuple[str, ...]], dict[str, torch.Tensor]] = {}
        self._fused_with: dict[int, list[Specialist]] = {}  # id(primary) -> the specialists it was trained with

    def train_cfg(self, seed: int, steps: int | None = None) -> TrainConfig:
        return TrainConfig(steps=steps or self.cfg.steps, batch_size=self.cfg.batch_size, seed=seed,
                           device=self.cfg.device)

    def states(self, texts: Sequence[str], specialists: Sequence[Specialist] | None = None) -> list[torch.Tensor]:
        """(n, L, H, K, V) per specialist (default: all) for these texts, each text's states computed once."""
        chosen = self.specialists if specialists is None else specialists
        source = LocalSpecialists(chosen)
        out = []
        for s in chosen:
            known = self._states.setdefault((s.name, s.model.backbone.knowledge), {})
            missing = list(dict.fromkeys(t for t in texts if t not in known))
            if missing:
                for text, row in zip(missing, cache_states(source, s.name, missing), strict=True):
                    known[text] = row
            out.append(torch.stack([known[t] for t in texts]))
        return out

    def fit(self, name: str, train_ex: Sequence[ColumnExample], seed: int, fused: bool,
            encoder: ColumnEncoder | None = None, names: Sequence[str] | None = None,
            agent_dropout: bool = False, honest: bool = False, specialists: Sequence[Specialist] | None = None,
            knowledge: Sequence[str] = ()) -> PrimaryModel:
        """A primary trained on `train_ex`: alone, or fused with the specialists `names` (default: all of them) of
        `specialists` (default: the runner's); `agent_dropout` fuses a random subset per batch (a primary for the
        orchestrator's subsets); `honest` withholds the specialists from the columns of tables they were trained on;
        `knowledge`: knowledge sources the primary reads itself (a control)."""
        encoder = encoder or ColumnEncoder(self.model_cfg.max_len)
        pool = self.specialists if specialists is None else list(specialists)
        chosen = [s for s in pool if names is None or s.name in names] if fused else []
        torch.manual_seed(seed)
        model = PrimaryModel(self.model_cfg, self.labels, FUSION if chosen else None, [s.name for s in chosen],
                             knowledge=knowledge)
        self._fused_with[id(model)] = chosen
        if chosen:
            model.load_decoders(LocalSpecialists(chosen).decoders())
        data = encode_examples(train_ex, encoder)
        allowed = [e.table not in self.specialist_tables for e in train_ex] if honest else None
        extra = cached_inputs(self.states([e.text for e in train_ex], chosen),
                              agent_dropout_seed=seed if agent_dropout else None, honest=allowed) if chosen else None
        meta = model.meta() | {"trained_on": name, "agent_dropout": agent_dropout, "honest_fusion": honest}
        train(model, data, self.train_cfg(seed), self.cfg.run_dir / name, meta, extra, desc=name)
        return model

    def score(self, model: PrimaryModel, examples: Sequence[ColumnExample], encoder: ColumnEncoder | None = None,
              agents: Sequence[int] | None = None) -> Scores:
        """Scores on `examples`; a fused primary reads all its specialists, or only those indexed by `agents`."""
        return score([self.labels[e.label] for e in examples], self.predict(model, examples, encoder, agents))

    def predict(self, model: PrimaryModel, examples: Sequence[ColumnExample], encoder: ColumnEncoder | None = None,
                agents: Sequence[int] | None = None) -> list[str]:
        pred = self.probs(model, examples, encoder, agents).argmax(-1).tolist()
        return [self.labels[i] for i in pred]

    def probs(self, model: PrimaryModel, examples: Sequence[ColumnExample], encoder: ColumnEncoder | None = None,
              agents: Sequence[int] | None = None) -> torch.Tensor:
        data = encode_examples(examples, encoder or ColumnEncoder(self.model_cfg.max_len))
        chosen = self._fused_with.get(id(model)) or [s for s in self.specialists if s.name in model.specialists]
        extra = cached_inputs(self.states([e.text for e in examples], chosen), agents) if chosen else None
        return predict(model, data, extra)
