"""Do specialists add accuracy? Primary alone vs primary + 1, 3 and all specialists, for every fusion mode.

Protocol. Specialists are frozen experts that know something the primary was not trained on; here that knowledge
is what they learnt from synthetic tables:
1. pre-train one generic model on synthetic tables (all labels);
2. fine-tune one specialist per domain from it (model_server/domains.yaml), then freeze it;
3. train the primary on the real training columns only, from scratch: alone, and with the states of the first
   1, 3 and all specialists fused (each fusion mode). Every row is the mean over `primary_seeds` (its spread is
   reported: one seed swings macro-F1 by several points on 753 validation columns);
4. references: a primary pre-trained exactly like the specialists, alone and fused with all of them (the best
   mode of step 3). It tells how much of the synthetic knowledge the fused states carry over, and whether
   specialists add anything to a primary that already has their knowledge.
Scores are on the real validation split; `hard_class_f1` is the mean F1 of the classes that are hard (mean F1
< 0.5) for the primary alone. Writes reports/fusion.json, reports/fusion.md and reports/fusion.png.
"""
from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from swarm.model_server.choices import DEVICE_AUTO, FUSION_MODES
from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.devices import resolve_device
from swarm.model_server.model.manifest import PrimaryManifest
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import Specialist, domains
from swarm.model_server.model.tables import load_labels
from swarm.trainer.data.columns import ColumnExample, build_examples
from swarm.trainer.experiments.fusion_report import write_fusion_reports
from swarm.trainer.training.metrics import Scores, hard_class_f1, hard_classes, spread
from swarm.trainer.training.primary import encode_examples, real_examples, synthetic_split, train_and_score
from swarm.trainer.training.specialists import train_specialist
from swarm.trainer.training.state_sources import LocalSpecialists, cache_states
from swarm.trainer.training.train import Encoded, TrainConfig, predict, train

SCRATCH, PRETRAINED = "scratch", "pre-trained"


class FusionExperimentConfig(BaseModel):
    """`swarm fusion-report` (the descriptions are its help)."""

    data: Path = Field(description="SOTAB-format dataset directory.")
    run_dir: Path = Field(Path("runs/fusion"), description="Specialists and primaries of the experiment.")
    reports_dir: Path = Path("reports")
    model: str = Field("tiny", description="Backbone config.")
    synthetic_tables: int = Field(1500, ge=1, description="Synthetic tables the pre-trained primaries learn from "
                                  "first.")
    pretrain_steps: int = Field(800, ge=1, description="Pre-training steps on the synthetic tables.")
    specialist_steps: int = Field(400, ge=1, description="Optimizer steps of each specialist.")
    primary_steps: int = Field(400, ge=1, description="Optimizer steps of each primary.")
    modes: tuple[str, ...] = FUSION_MODES
    sizes: tuple[int, ...] = (1, 3, 0)  # 0 means all specialists
    seed: int = 0  # synthetic tables, pre-training and specialists
    primary_seeds: tuple[int, ...] = Field((0, 1), min_length=1)
    device: str = DEVICE_AUTO


def run_tag(specialists: int, mode: str | None, init: str, seed: int) -> str:
    """Run directory name of one trained primary, under the experiment's run_dir."""
    prefix = "primary" if init == SCRATCH else "pretrained"
    return f"{prefix}-{specialists}-{mode or 'alone'}-s{seed}"


def summarize(specialists: int, mode: str | None, init: str, runs: dict[int, Scores], hard: Sequence[str]) -> dict:
    """One table row: mean and spread over the seeds' runs, and each seed's scores and model directory."""
    micro = [s.micro_f1 for s in runs.values()]
    macro = [s.macro_f1 for s in runs.values()]
    hard_scores = [hard_class_f1(s.per_class, hard) for s in runs.values()]
    return {
        "specialists": specialists, "fusion": mode, "primary_init": init,
        "micro_f1": statistics.fmean(micro), "macro_f1": statistics.fmean(macro),
        "hard_class_f1": None if None in hard_scores else statistics.fmean(s for s in hard_scores if s is not None),
        "micro_f1_std": spread(micro), "macro_f1_std": spread(macro),
        "seeds": [{"seed": seed, "micro_f1": s.micro_f1, "macro_f1": s.macro_f1,
                   "model_dir": f"{run_tag(specialists, mode, init, seed)}/model"} for seed, s in runs.items()],
    }


def mean_hard_classes(runs: Sequence[Scores]) -> list[str]:
    """The hard classes of the runs' per-class F1 averaged over the runs."""
    return hard_classes({c: statistics.fmean([s.per_class[c] for s in runs]) for c in runs[0].per_class})


def run_fusion_experiment(cfg: FusionExperimentConfig) -> dict:
    started = time.time()
    labels = load_labels()
    model_cfg = get_config(cfg.model)
    tokenizer = ColumnEncoder(model_cfg.max_len)
    train_ex, val_ex = real_examples(cfg.data, labels)
    synth_ex = build_examples([synthetic_split(cfg.run_dir, cfg.synthetic_tables, cfg.seed + 7)], labels)
    base_train = TrainConfig(seed=cfg.seed, device=cfg.device)

    torch.manual_seed(cfg.seed)
    generic = PrimaryModel(model_cfg, labels)
    train(generic, encode_examples(synth_ex, tokenizer),
          base_train.model_copy(update={"steps": cfg.pretrain_steps}), cfg.run_dir / "generic", generic.meta(),
          desc="generic pre-training (synthetic)")
    pretrained = generic.state_dict()

    specialists = [
        train_specialist(domain, model_cfg, [*train_ex, *synth_ex], labels,
                         base_train.model_copy(update={"steps": cfg.specialist_steps}),
                         cfg.run_dir / "specialists", generic.backbone.state_dict())
        for domain in domains().values()
    ]
    train_data = encode_examples(train_ex, tokenizer)
    val_data = encode_examples(val_ex, tokenizer)
    source = LocalSpecialists(specialists)
    train_cache = [cache_states(source, s.name, [e.text for e in train_ex]) for s in specialists]
    val_cache = [cache_states(source, s.name, [e.text for e in val_ex]) for s in specialists]
    majority = Counter(labels[e.label] for e in train_ex).most_common(1)[0][0]

    def fit(n: int, mode: str | None, init: str) -> dict[int, Scores]:
        runs = {}
        for seed in cfg.primary_seeds:
            names = [s.name for s in specialists[:n]]
            torch.manual_seed(seed)
            model = PrimaryModel(model_cfg, labels, fusion_mode=mode, specialists=names)
            if init == PRETRAINED:
                model.load_state_dict(pretrained, strict=False)  # fusion parameters start fresh
            if n:
                model.load_decoders(source.decoders())
            tag = run_tag(n, mode, init, seed)
            model_dir = cfg.run_dir / tag / "model"
            manifest = PrimaryManifest.of(model.meta(), model_dir, [cfg.run_dir / "specialists" / name
                                                                   for name in names], majority_label=majority)
            train_cfg = base_train.model_copy(update={"steps": cfg.primary_steps, "seed": seed})
            runs[seed] = train_and_score(model, train_data, val_data, train_cfg, cfg.run_dir / tag, manifest,
                                         train_cache[:n], val_cache[:n], desc=tag)
        return runs

    alone = fit(0, None, SCRATCH)
    hard = mean_hard_classes(list(alone.values()))
    rows = [summarize(0, None, SCRATCH, alone, hard)]
    for mode in cfg.modes:
        for size in cfg.sizes:
            n = size or len(specialists)
            rows.append(summarize(n, mode, SCRATCH, fit(n, mode, SCRATCH), hard))
    every = len(specialists)
    best_mode = max((r for r in rows if r["specialists"] == every and r["fusion"]), key=lambda r: r["macro_f1"],
                    default=None)
    references = [summarize(0, None, PRETRAINED, fit(0, None, PRETRAINED), hard)]
    if best_mode is not None:
        mode = best_mode["fusion"]
        references.append(summarize(every, mode, PRETRAINED, fit(every, mode, PRETRAINED), hard))

    first_alone, _ = PrimaryModel.load(cfg.run_dir / rows[0]["seeds"][0]["model_dir"])
    first_alone.to(resolve_device(cfg.device))
    result = {
        "split": "validation", "model": cfg.model, "n_columns": len(val_ex),
        "specialists_order": [s.name for s in specialists],
        "primary_seeds": list(cfg.primary_seeds),
        "primary": {"micro_f1": rows[0]["micro_f1"], "macro_f1": rows[0]["macro_f1"], "hard_classes": hard},
        "rows": rows,
        "references": references,
        "in_domain": in_domain_accuracy(specialists, first_alone, val_ex, val_data, labels),
        "budget": {"synthetic_tables": cfg.synthetic_tables, "pretrain_steps": cfg.pretrain_steps,
                   "specialist_steps": cfg.specialist_steps, "primary_steps": cfg.primary_steps},
        "seconds": round(time.time() - started, 1),
    }
    write_fusion_reports(result, cfg.reports_dir)
    return result


def in_domain_accuracy(specialists: Sequence[Specialist], primary: PrimaryModel, examples: Sequence[ColumnExample],
                       data: Encoded, labels: Sequence[str]) -> list[dict]:
    """Do the specialists know more than the primary where they specialise? Per domain, on the validation
    columns whose label is in the domain: the specialist's accuracy among its domain's labels vs the primary
    alone's accuracy restricted to the same labels. Fusion can only add what the specialists know beyond this."""
    primary_probs = predict(primary, data)
    rows = []
    for specialist in specialists:
        domain = specialist.labels
        index = [i for i, e in enumerate(examples) if labels[e.label] in domain]
        if not index:
            continue
        gold = torch.tensor([domain.index(labels[examples[i].label]) for i in index])
        texts = [examples[i].text for i in index]
        spec_probs = torch.cat([specialist.predict(texts[j:j + 128]) for j in range(0, len(texts), 128)])
        restricted = primary_probs[index][:, [labels.index(label) for label in domain]]
        rows.append({"domain": specialist.name, "columns": len(index),
                     "specialist_accuracy": (spec_probs[:, :-1].argmax(-1) == gold).float().mean().item(),
                     "primary_accuracy": (restricted.argmax(-1) == gold).float().mean().item()})
    return rows
