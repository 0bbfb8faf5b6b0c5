"""The released swarm, built from any SOTAB-format data: `swarm release` (and `make demo`, `make accuracy`, a SwarmJob
of mode `train`) run `build_release`.

The labelled tables are split by role (per table, from a hash of its name and the seed, so no table is in two roles
and the split does not depend on the order the tables were read in):
- expert tables: the specialists are fine-tuned on them, one per domain (`model_server/domains.yaml`), and frozen;
  each specialist records the tables it saw (specialist.json `trained_tables`);
- fusion tables: the primary learns how far to trust the specialists only here, on columns they never saw
  (honest fusion: on their own training columns their beliefs are near perfect, and a primary that learnt to trust
  them there was made worse by them); on the expert tables the specialists are withheld and the primary trains as
  alone;
- policy tables: held out from the primary and the specialists; the orchestrator policy (PARL) learns from the
  primary's out-of-sample answers on them under every subset of specialists.
The primary trains on the expert and fusion tables, with specialists dropped at random per batch and per column
(agent dropout) when a policy is trained, so it answers well with whatever subset the policy asks.

Given specialists (their directories or servers: a SpecialistPool's) are not trained again: the tables they record
as seen are the expert tables and every other labelled table is a fusion table.

Every stage is skipped when its output already exists for the same recipe (`release.json` records it), so a second
run over the same run directory only re-reads what it needs.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field, model_validator

from swarm.model_server.choices import DEVICE_AUTO, FUSION_MODES
from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.manifest import PRIMARY_MANIFEST, PrimaryManifest, SpecialistManifest
from swarm.model_server.model.orchestrator import POLICY_META
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import domains
from swarm.model_server.model.tables import load_labels
from swarm.model_server.model.weights import save_weights
from swarm.trainer.data.columns import ColumnExample, build_examples
from swarm.trainer.data.sotab import load_dataset
from swarm.trainer.orchestration.parl import ParlConfig
from swarm.trainer.orchestration.parl_pipeline import train_policy
from swarm.trainer.training.metrics import score
from swarm.trainer.training.primary import encode_examples, seen_tables
from swarm.trainer.training.specialists import train_specialist
from swarm.trainer.training.state_sources import (
    LocalSpecialists,
    RemoteSpecialists,
    StateSource,
    cache_states,
    cached_inputs,
)
from swarm.trainer.training.train import TrainConfig, predict, train

RELEASE_RECORD = "release.json"
FUSION_MODE = "gated"
TRAIN_SPLITS = ("training", "training_columns")


class ReleaseConfig(BaseModel):
    """The released recipe. Defaults are the recipe `make demo` builds from the bundled data's training splits;
    the descriptions are `swarm release`'s help."""

    data: Path = Field(description="SOTAB-format dataset directory.")
    run_dir: Path = Field(Path("runs/release"), description="Where the released swarm goes: specialists/, model/ "
                          "(the primary, its policy in model/orchestrator/) and release.json.")
    model: str = Field("tiny", description="Backbone config of the primary and the specialists: tiny, small or base.")
    splits: list[str] = Field(list(TRAIN_SPLITS), description="A labelled split the swarm learns from (repeat; "
                              "those present are used).")
    specialist_splits: list[str] | None = Field(None, description="A split whose tables are the specialists' "
                                                "(repeat); the other splits' tables are where the primary learns to "
                                                "trust them. Default: a random share of all tables (--fusion-share).")
    fusion_share: float = Field(0.3, ge=0, lt=1, description="Share of the tables the specialists never see, where "
                                "the primary learns how far to trust them (without --specialist-split).")
    policy_share: float = Field(0.15, ge=0, lt=1, description="Share of the tables held out from the primary for "
                                "the orchestrator policy (0: no policy; every specialist reads every column).")
    steps: int = Field(600, ge=1, description="Optimizer steps of the primary.")
    specialist_steps: int = Field(400, ge=1, description="Optimizer steps of each specialist.")
    batch_size: int = Field(64, ge=1)
    thinned_copies: int = Field(1, ge=0)  # thinned-table copies of the primary's training columns
    seed: int = 0
    agent_dropout: bool | None = None  # None: on exactly when a policy is trained
    # one of model_server/choices.FUSION_MODES
    fusion: str = Field(FUSION_MODE, description="How the primary fuses the specialists' states.")
    knowledge: bool = True  # trained specialists read their domain's knowledge sources (domains.yaml `knowledge:`)
    max_specialists: int | None = Field(None, ge=0, description="Fuse at most this many of the specialists "
                                        "(default: all; 0: the primary alone).")
    parl: ParlConfig = ParlConfig()
    specialist_dirs: list[Path] = Field([], description="Use this trained specialist instead of training them "
                                        "(repeat).")
    endpoints: dict[str, str] = {}  # given specialist servers (not trained)
    device: str = DEVICE_AUTO

    @model_validator(mode="after")
    def _one_source(self) -> ReleaseConfig:
        if self.specialist_dirs and self.endpoints:
            raise ValueError("give specialists as directories or as servers, not both")
        return self

    @property
    def dropout(self) -> bool:
        return self.policy_share > 0 if self.agent_dropout is None else self.agent_dropout

    def recipe(self) -> dict:
        """What the outputs depend on (paths and devices excluded), the specialists' domains (labels, knowledge
        sources) included: a stage is reused only for the same recipe."""
        return self.model_dump(mode="json", exclude={"run_dir", "device"}) | {
            "domains": {d.name: {"labels": list(d.labels), "knowledge": list(d.knowledge)} for d in domains().values()}}

    @model_validator(mode="after")
    def _known_fusion(self) -> ReleaseConfig:
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {self.fusion!r}; choose one of {', '.join(FUSION_MODES)}")
        return self


def table_role(table: str, seed: int, shares: Sequence[float]) -> int:
    """Which of len(shares) + 1 roles a table takes: role i with probability shares[i], the last one otherwise."""
    digest = hashlib.sha256(f"{seed}:{table}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2 ** 64
    for i, share in enumerate(shares):
        if u < share:
            return i
        u -= share
    return len(shares)


def _fingerprint(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Roles(BaseModel):
    """The labelled tables of a release by role (see the module docstring)."""

    expert: set[str]
    fusion: set[str]
    policy: set[str]


def assign_roles(cfg: ReleaseConfig, tables_by_split: dict[str, set[str]], seen: set[str] | None) -> Roles:
    """Tables per role; `seen`: the tables given specialists record as theirs (None: the specialists are trained
    here)."""
    everything = set().union(*tables_by_split.values()) if tables_by_split else set()
    policy = {t for t in everything if table_role(t, cfg.seed, [cfg.policy_share]) == 0} if cfg.policy_share else set()
    rest = everything - policy
    if seen is not None:
        expert = rest & seen
    elif cfg.specialist_splits is not None:
        expert = rest & set().union(*(tables_by_split.get(s, set()) for s in cfg.specialist_splits))
    else:
        # A second, independent draw: the policy share above does not shift which tables are fusion tables.
        expert = {t for t in rest if table_role(t, cfg.seed + 1, [cfg.fusion_share]) == 1}
    return Roles(expert=expert, fusion=rest - expert, policy=policy)


def build_release(cfg: ReleaseConfig) -> dict:
    """Build (or reuse) the released swarm in cfg.run_dir: specialists/, model/ (the primary, with its policy in
    model/orchestrator/ when one is trained) and release.json (the recipe and what each part learnt from)."""
    started = time.time()
    labels = load_labels()
    splits = load_dataset(cfg.data)
    chosen = [name for name in cfg.splits if name in splits]
    if not chosen:
        raise ValueError(f"{cfg.data}: none of the splits {cfg.splits} (found {sorted(splits)})")
    unknown = sorted({r.label for name in chosen for r in splits[name].columns if r.label and r.label not in labels})
    if unknown:
        raise ValueError(f"{cfg.data}: labels outside the label set: {unknown}")
    train_splits = [splits[name] for name in chosen]
    tables_by_split = {name: {r.table for r in splits[name].columns if r.label} for name in chosen}
    record_path = cfg.run_dir / RELEASE_RECORD
    previous = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    reuse = previous.get("recipe") == cfg.recipe()
    if not reuse:
        # Another recipe (or none yet): nothing built before may be reused or resumed. The recipe is recorded first,
        # so that a run killed from here on resumes its checkpoints instead of starting over.
        given_here = any(Path(d).resolve().is_relative_to((cfg.run_dir / "specialists").resolve())
                         for d in cfg.specialist_dirs)
        for stale in ("primary", "model", *(() if given_here else ("specialists",))):
            shutil.rmtree(cfg.run_dir / stale, ignore_errors=True)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps({"recipe": cfg.recipe(), "complete": False}, indent=2), encoding="utf-8")

    given = bool(cfg.specialist_dirs or cfg.endpoints)
    source: StateSource | None = None
    seen: set[str] | None = None
    if given:
        source, seen = _given_specialists(cfg)
    roles = assign_roles(cfg, tables_by_split, seen)
    plain = build_examples(train_splits, labels)
    if not given:
        expert_examples = [e for e in plain if e.table in roles.expert]
        source = LocalSpecialists(_specialists(cfg, expert_examples, labels, reuse))
    assert source is not None

    primary_examples = [e for e in build_examples(train_splits, labels, thinned_copies=cfg.thinned_copies,
                                                  seed=cfg.seed) if e.table not in roles.policy]
    policy_examples = [e for e in plain if e.table in roles.policy]
    model_dir = cfg.run_dir / "model"
    with closing(source):
        model = _primary(cfg, source, primary_examples, roles, labels, model_dir, reuse)
        # The policy tables' states, read once: for the held-out scores and for the policy's outcomes.
        policy_caches = [cache_states(source, name, [e.text for e in policy_examples])
                         for name in model.specialists] if policy_examples else []
    held_out = _held_out_scores(model, policy_caches, policy_examples) if policy_examples else None
    policy = _policy(cfg, model, policy_caches, policy_examples, model_dir, reuse) \
        if policy_examples and model.specialists else None

    record = {
        "recipe": cfg.recipe(),
        "complete": True,
        "data": str(cfg.data),
        "splits": chosen,
        "tables": {role: len(getattr(roles, role)) for role in ("expert", "fusion", "policy")},
        "columns": {"primary": len(primary_examples), "policy": len(policy_examples),
                    "fusion": sum(e.table in roles.fusion for e in primary_examples)},
        "specialists": list(model.specialists),
        "primary": str(model_dir),
        "policy": policy,
        # Out of sample for every part: the policy tables, which neither the primary nor the specialists saw.
        "held_out": held_out,
        "seconds": round(time.time() - started, 1),
    }
    if reuse and "seconds" in previous:
        record["seconds_first_build"] = previous.get("seconds_first_build", previous["seconds"])
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def _given_specialists(cfg: ReleaseConfig) -> tuple[StateSource, set[str]]:
    """The given specialists (at most max_specialists of them) as a state source, and the tables they record as
    seen (union)."""
    keep = cfg.max_specialists
    source: StateSource = LocalSpecialists.from_dirs(cfg.specialist_dirs[:keep], cfg.device) if cfg.specialist_dirs \
        else RemoteSpecialists(dict(list(cfg.endpoints.items())[:keep]))
    return source, seen_tables(source)


def _held_out_scores(model: PrimaryModel, caches: Sequence[torch.Tensor], examples: Sequence[ColumnExample]) -> dict:
    """micro/macro-F1 on columns no part of the swarm learnt from (`caches`: the specialists' states for them): with
    every specialist, and the primary alone."""
    data = encode_examples(examples, ColumnEncoder(model.cfg.max_len))
    gold = [model.labels[e.label] for e in examples]
    out: dict[str, Any] = {"columns": len(examples)}
    for key, agents in (("swarm", None), ("primary_alone", [])):
        pred = predict(model, data, cached_inputs(caches, agents) if caches else None).argmax(-1).tolist()
        scores = score(gold, [model.labels[i] for i in pred])
        out[key] = {"micro_f1": scores.micro_f1, "macro_f1": scores.macro_f1}
    return out


def _specialists(cfg: ReleaseConfig, examples: Sequence[ColumnExample], labels: list[str], reuse: bool) -> list:
    """One frozen specialist per domain, fine-tuned on the expert tables' columns (reused when already built)."""
    from swarm.model_server.model.devices import resolve_device
    from swarm.model_server.model.specialist import Specialist

    out_dir = cfg.run_dir / "specialists"
    backbone = get_config(cfg.model)
    train_cfg = TrainConfig(steps=cfg.specialist_steps, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device)
    built = []
    for domain in domains().values():
        if reuse and SpecialistManifest.is_in(out_dir / domain.name):
            built.append(Specialist.load(out_dir / domain.name, device=resolve_device(cfg.device)))
            continue
        built.append(train_specialist(domain, backbone, examples, labels, train_cfg, out_dir,
                                      knowledge=cfg.knowledge))
    return built


def _primary(cfg: ReleaseConfig, source: StateSource, examples: Sequence[ColumnExample], roles: Roles,
             labels: list[str], model_dir: Path, reuse: bool) -> PrimaryModel:
    """The fused primary, trained with honest fusion (and agent dropout when a policy follows)."""
    if reuse and (model_dir / PRIMARY_MANIFEST).is_file():
        return PrimaryModel.load(model_dir)[0]
    names = list(source.names)[:cfg.max_specialists]
    torch.manual_seed(cfg.seed)
    model = PrimaryModel(get_config(cfg.model), labels, cfg.fusion if names else None, names)
    if names:
        model.load_decoders(source.decoders())
    data = encode_examples(examples, ColumnEncoder(model.cfg.max_len))
    caches = [cache_states(source, name, [e.text for e in examples]) for name in names]
    honest = [e.table in roles.fusion for e in examples]
    extra = cached_inputs(caches, agent_dropout_seed=cfg.seed if cfg.dropout else None, honest=honest) \
        if names else None
    counts = Counter(labels[e.label] for e in examples)
    # Where serving finds the specialists: the given directories, or those trained here; servers are named at
    # serving time instead.
    dirs = [] if cfg.endpoints else cfg.specialist_dirs[:len(names)] or [cfg.run_dir / "specialists" / n for n in names]
    manifest = PrimaryManifest.of(
        model.meta(), model_dir, dirs, majority_label=counts.most_common(1)[0][0], train_columns=len(examples),
        honest_fusion=True, fusion_columns=sum(honest), agent_dropout=cfg.dropout, release=_fingerprint(cfg.recipe()))
    train(model, data, TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device),
          cfg.run_dir / "primary", manifest.to_dict(), extra, desc="primary (honest fusion)")
    save_weights(model_dir, model, manifest)
    return model


def _policy(cfg: ReleaseConfig, model: PrimaryModel, caches: Sequence[torch.Tensor],
            examples: Sequence[ColumnExample], model_dir: Path, reuse: bool) -> str:
    """The orchestrator policy, learnt by PARL from the primary's answers on the held-out policy tables."""
    out = model_dir / "orchestrator"
    if reuse and (out / POLICY_META).is_file():
        return str(out)
    train_policy(model, examples, caches, cfg.parl.model_copy(update={"seed": cfg.seed}), out,
                 f"{cfg.data}: {len(examples)} columns of the held-out policy tables")
    return str(out)
