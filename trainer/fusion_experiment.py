"""Do specialists add accuracy? Primary alone vs primary + 1, 3 and all specialists, for every fusion mode.

Protocol (one shared budget for every row, so rows differ only in the specialists and the fusion):
1. pre-train one generic model on synthetic tables (all labels): the shared starting point;
2. fine-tune one specialist per domain from it, then freeze it (model_server/domains.yaml);
3. fine-tune the primary from the same starting point on the real training columns: alone, and with the states
   of the first 1, 3 and all specialists fused into its initial states (each fusion mode);
4. evaluate each on the real validation split; `hard_class_f1` is the mean F1, under each row, of the classes that
   are hard (F1 < 0.5) for the primary alone.
Writes reports/fusion.json, reports/fusion.md and reports/fusion.png.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from swarm.model_server.backbone import get_config
from swarm.model_server.specialist import Specialist, domains
from swarm.model_server.text import ColumnTokenizer
from swarm.trainer import reports
from swarm.trainer.columns import ColumnExample, build_examples
from swarm.trainer.evaluate import load_primary
from swarm.trainer.metrics import Scores
from swarm.trainer.pipeline import encode_examples, real_examples, synthetic_split, train_and_score
from swarm.trainer.primary import PrimaryModel
from swarm.trainer.sotab import load_labels
from swarm.trainer.specialists import train_specialist
from swarm.trainer.state_sources import LocalSpecialists, cache_states
from swarm.trainer.train import Encoded, TrainConfig, predict, train

FUSION_MODES = ("weighted_sum", "gated", "concat_project")


class FusionExperimentConfig(BaseModel):
    data: Path
    run_dir: Path = Path("runs/fusion")
    reports_dir: Path = Path("reports")
    model: str = "tiny"
    synthetic_tables: int = Field(1500, ge=1)
    pretrain_steps: int = Field(600, ge=1)
    specialist_steps: int = Field(400, ge=1)
    primary_steps: int = Field(400, ge=1)
    modes: tuple[str, ...] = FUSION_MODES
    sizes: tuple[int, ...] = (1, 3, 0)  # 0 means all specialists
    seed: int = 0


def _row(specialists: int, mode: str | None, scores: Scores, hard: Sequence[str]) -> dict:
    hard_f1 = sum(scores.per_class[c] for c in hard) / len(hard) if hard else None
    return {"specialists": specialists, "fusion": mode, "micro_f1": scores.micro_f1, "macro_f1": scores.macro_f1,
            "hard_class_f1": hard_f1}


def run_fusion_experiment(cfg: FusionExperimentConfig) -> dict:
    started = time.time()
    labels = load_labels()
    model_cfg = get_config(cfg.model)
    tokenizer = ColumnTokenizer(model_cfg.max_len)
    train_ex, val_ex = real_examples(cfg.data, labels)
    synth_ex = build_examples([synthetic_split(cfg.run_dir, cfg.synthetic_tables, cfg.seed + 7)], labels)
    base_train = TrainConfig(seed=cfg.seed)

    torch.manual_seed(cfg.seed)
    generic = PrimaryModel(model_cfg, labels)
    generic_dir = cfg.run_dir / "generic"
    train(generic, encode_examples(synth_ex, tokenizer),
          base_train.model_copy(update={"steps": cfg.pretrain_steps}), generic_dir, generic.meta(),
          desc="generic pre-training (synthetic)")
    init = generic.state_dict()
    backbone_init = generic.backbone.state_dict()

    specialists = [
        train_specialist(domain, model_cfg, [*train_ex, *synth_ex], labels,
                         base_train.model_copy(update={"steps": cfg.specialist_steps}),
                         cfg.run_dir / "specialists", backbone_init)
        for domain in domains().values()
    ]
    train_data = encode_examples(train_ex, tokenizer)
    val_data = encode_examples(val_ex, tokenizer)
    source = LocalSpecialists(specialists)
    train_cache = [cache_states(source, s.name, [e.text for e in train_ex]) for s in specialists]
    val_cache = [cache_states(source, s.name, [e.text for e in val_ex]) for s in specialists]
    majority = Counter(labels[e.label] for e in train_ex).most_common(1)[0][0]

    def fit_and_score(n: int, mode: str | None) -> Scores:
        names = [s.name for s in specialists[:n]]
        torch.manual_seed(cfg.seed)
        model = PrimaryModel(model_cfg, labels, fusion_mode=mode, specialists=names)
        model.load_state_dict(init, strict=False)  # fusion parameters start fresh, the rest from `generic`
        tag = f"primary-{n}-{mode or 'alone'}"
        model_dir = cfg.run_dir / tag / "model"
        meta = model.meta() | {"majority_label": majority, "specialist_dirs": [
            os.path.relpath(cfg.run_dir / "specialists" / name, model_dir) for name in names]}
        return train_and_score(model, train_data, val_data, base_train.model_copy(update={"steps": cfg.primary_steps}),
                               cfg.run_dir / tag, meta, train_cache[:n], val_cache[:n], desc=tag)

    alone = fit_and_score(0, None)
    rows = [_row(0, None, alone, alone.hard_classes)]
    alone_model, _ = load_primary(cfg.run_dir / "primary-0-alone" / "model")
    diagnosis = in_domain_accuracy(specialists, alone_model, val_ex, val_data, labels)
    for mode in cfg.modes:
        for size in cfg.sizes:
            n = size or len(specialists)
            rows.append(_row(n, mode, fit_and_score(n, mode), alone.hard_classes))

    result = {
        "split": "validation", "model": cfg.model, "n_columns": alone.n_columns,
        "specialists_order": [s.name for s in specialists],
        "primary": {"micro_f1": alone.micro_f1, "macro_f1": alone.macro_f1,
                    "hard_classes": alone.hard_classes},
        "rows": rows,
        "in_domain": diagnosis,
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


def write_fusion_reports(result: dict, reports_dir: Path) -> None:
    reports.write_json(reports_dir / "fusion.json", result)
    table = reports.markdown_table(
        ["specialists", "fusion", "micro-F1", "macro-F1", "hard-class F1"],
        [[r["specialists"], r["fusion"] or "— (primary alone)", r["micro_f1"], r["macro_f1"],
          r["hard_class_f1"] if r["hard_class_f1"] is not None else "-"] for r in result["rows"]])
    order = ", ".join(result["specialists_order"])
    diagnosis = reports.markdown_table(
        ["domain", "validation columns", "specialist accuracy", "primary-alone accuracy"],
        [[d["domain"], d["columns"], d["specialist_accuracy"], d["primary_accuracy"]] for d in result["in_domain"]])
    (reports_dir / "fusion.md").write_text(
        f"# Fusion: primary alone vs primary + specialists ({result['model']}, real validation, "
        f"{result['n_columns']} columns)\n\nSpecialists are added in this order: {order}.\n\n{table}\n"
        "## What the specialists know beyond the primary\n\nAccuracy among each domain's own labels, on the "
        f"validation columns of that domain:\n\n{diagnosis}", encoding="utf-8")
    _plot(result, reports_dir / "fusion.png")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    base = result["primary"]["macro_f1"]
    ax.axhline(base, color="black", linestyle="--", label="primary alone")
    for mode in sorted({r["fusion"] for r in result["rows"] if r["fusion"]}):
        pts = sorted((r["specialists"], r["macro_f1"]) for r in result["rows"] if r["fusion"] == mode)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=mode)
    ax.set_xlabel("specialists fused")
    ax.set_ylabel("macro-F1 (real validation)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
