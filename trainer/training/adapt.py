"""Adapting specialists to a new table domain with Model Swarms (`swarm adapt`).

The experts are trained specialists of one backbone config; the target is a domain of `domains.yaml` (its labels
plus [other]). Its labelled columns come from the validation split, which no expert was trained on, as columns
of a new table domain would: ~200 of them are the utility set, the rest are held out. A particle is the vector of
the weights in which the experts differ (backbone and state-decoder readout; their heads have one row per label
of their own domain and are not searched). Its utility is the macro-F1 of a nearest-prototype head over the
target's labels on the utility set, each column predicted by the prototypes of all the others (leave-one-out), so
that no column is scored by a head fitted on it. The best particle gets a head of prototypes fitted on the whole
utility set and is saved as a specialist of the target domain: a directory that `swarm serve-specialist
--checkpoint-dir` serves, whose states and decoder a primary reads like any other's.

Every model is scored on the held-out columns, which the search never sees: each expert with a prototype head
fitted the same way (the one with the best utility is what a user would pick without the swarm), the swarm's
result and, when given, a reference specialist fine-tuned on the target domain's training columns.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from swarm.model_server.choices import DEVICE_AUTO
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.devices import autocast, resolve_device
from swarm.model_server.model.specialist import OTHER, DomainModel, Specialist, domains
from swarm.model_server.model.tables import load_labels
from swarm.trainer.training.metrics import Scores, score
from swarm.trainer.training.model_swarms import SwarmConfig, SwarmResult, search
from swarm.trainer.training.primary import real_examples
from swarm.trainer.training.specialists import domain_examples

HEAD_PREFIX = "decoder.head."
HEAD_SCALE = 10.0  # logits = scale x cosine(features, prototype): a confident softmax for the primary's beliefs
BATCH = 128
MIN_HELD_OUT = 50


class AdaptConfig(BaseModel):
    """What `swarm adapt` searches for: a specialist of `domain` from the experts, on the domain's labelled
    columns of `data`."""

    model_config = ConfigDict(frozen=True)

    data: Path = Field(description="SOTAB-format dataset; the domain's validation columns are used.")
    experts: tuple[Path, ...] = Field(description="Trained specialist directories (two or more).")
    domain: str = Field(description="Target domain (model_server/domains.yaml): its labels plus \\[other].")
    out: Path = Field(Path("runs/adapt"), description="Where the adapted specialist directory is written.")
    reports_dir: Path = Field(Path("reports"), description="Where adapt_DOMAIN.{json,md,png} go.")
    utility_columns: int = Field(200, ge=2, description="Labelled columns the swarm's utility is measured on.")
    reference: Path | None = Field(None, description="A specialist fine-tuned on the domain, scored for "
                                   "comparison.")
    swarm: SwarmConfig = Field(default_factory=SwarmConfig)
    # Where the candidate specialist runs; the particles stay on the host.
    device: str = DEVICE_AUTO


@dataclass
class _Columns:
    """Tokenized columns with their target-domain class indices."""

    ids: Tensor
    mask: Tensor
    targets: Tensor
    texts: list[str]


def _columns(texts: Sequence[str], targets: Sequence[int], tokenizer: ColumnEncoder) -> _Columns:
    ids, mask = tokenizer(list(texts))
    return _Columns(ids, mask, torch.tensor(list(targets)), list(texts))


def searched_names(models: Sequence[DomainModel]) -> list[str]:
    """Parameters every expert has with one shape, except the heads, and in which at least two experts differ."""
    states = [m.state_dict() for m in models]
    names = []
    for name, first in states[0].items():
        if name.startswith(HEAD_PREFIX) or not first.is_floating_point():
            continue
        if any(name not in s or s[name].shape != first.shape for s in states[1:]):
            continue
        if any(not torch.equal(s[name], first) for s in states[1:]):
            names.append(name)
    return names


def flatten(model: DomainModel, names: Sequence[str]) -> Tensor:
    state = model.state_dict()
    return torch.cat([state[n].detach().float().reshape(-1) for n in names])


def assign(model: DomainModel, names: Sequence[str], vector: Tensor) -> None:
    state = model.state_dict()
    offset = 0
    for name in names:
        target = state[name]
        target.copy_(vector[offset : offset + target.numel()].view_as(target))
        offset += target.numel()
    if offset != vector.numel():
        raise ValueError(f"weight vector of {vector.numel()} values for {offset} parameters")


@torch.inference_mode()
def decoder_features(model: DomainModel, columns: _Columns) -> Tensor:
    """The decoder's features (what its head reads) for every column, (N, d_model), on the host."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(columns.targets), BATCH):
        part = slice(start, start + BATCH)
        with autocast(device):
            states = model.backbone(columns.ids[part].to(device), columns.mask[part].to(device)).states
            out.append(model.decoder.features(states).float().cpu())
    return torch.cat(out)


def prototypes(features: Tensor, targets: Tensor, n_classes: int) -> Tensor:
    """Per class, the mean of its unit-length features (zero for a class without columns), (n_classes, d)."""
    unit = F.normalize(features.float(), dim=-1)
    sums = torch.zeros(n_classes, unit.shape[1]).index_add_(0, targets, unit)
    counts = torch.bincount(targets, minlength=n_classes).clamp(min=1).unsqueeze(1)
    return sums / counts


def predict(features: Tensor, protos: Tensor) -> Tensor:
    """The class whose prototype is nearest in cosine; classes without a prototype are never predicted."""
    sims = F.normalize(features.float(), dim=-1) @ F.normalize(protos, dim=-1).T
    return sims.masked_fill(protos.norm(dim=-1) == 0, float("-inf")).argmax(-1)


def leave_one_out_f1(features: Tensor, targets: Tensor, class_names: Sequence[str]) -> float:
    """Macro-F1 of the prototype head with every column predicted by prototypes of all the other columns."""
    unit = F.normalize(features.float(), dim=-1)
    n_classes = len(class_names)
    sums = torch.zeros(n_classes, unit.shape[1]).index_add_(0, targets, unit)
    counts = torch.bincount(targets, minlength=n_classes).float()
    sims = unit @ F.normalize(sums, dim=-1).T
    sims = sims.masked_fill(counts == 0, float("-inf"))
    own = sums[targets] - unit  # the column's class without the column
    own_sim = (unit * F.normalize(own, dim=-1)).sum(-1)
    own_sim = own_sim.masked_fill(counts[targets] <= 1, float("-inf"))
    sims[torch.arange(len(targets)), targets] = own_sim
    return _score(targets, sims.argmax(-1), class_names).macro_f1


def _score(targets: Tensor, pred: Tensor, class_names: Sequence[str]) -> Scores:
    return score([class_names[int(t)] for t in targets], [class_names[int(p)] for p in pred])


@dataclass
class ModelScores:
    name: str
    utility: float | None  # leave-one-out macro-F1 on the utility columns (None for the reference)
    macro_f1: float  # on the held-out validation columns of the target domain
    micro_f1: float


def _scores(name: str, predicted: Tensor, held_out: _Columns, class_names: Sequence[str],
            utility: float | None) -> ModelScores:
    result = _score(held_out.targets, predicted, class_names)
    return ModelScores(name, utility, result.macro_f1, result.micro_f1)


def adapt(cfg: AdaptConfig) -> dict:
    """Run the search, save the adapted specialist to cfg.out, write reports/adapt_<domain>.{json,md,png}."""
    if cfg.domain not in domains():
        raise ValueError(f"unknown target domain {cfg.domain!r}; known: {sorted(domains())}")
    if len(cfg.experts) < 2:
        raise ValueError(f"Model Swarms needs at least two experts, got {len(cfg.experts)}")
    domain = domains()[cfg.domain]
    class_names = [*domain.labels, OTHER]
    experts = [Specialist.load(path) for path in cfg.experts]
    configs = {e.config.name for e in experts}
    if len(configs) != 1:
        raise ValueError(f"experts of one backbone config only; got {sorted(configs)}")
    device = resolve_device(cfg.device)
    reference = Specialist.load(cfg.reference, device=device) if cfg.reference is not None else None
    if reference is not None and reference.labels != list(domain.labels):
        raise ValueError(f"reference {cfg.reference} is a specialist of other labels than domain {domain.name!r}")
    utility_set, held_out = _split_columns(cfg, ColumnEncoder(experts[0].config.max_len))

    names = searched_names([e.model for e in experts])
    if not names:
        raise ValueError("the experts do not differ in any searchable weight")
    work = DomainModel(experts[0].config, domain.labels).eval().to(device)
    work.load_state_dict({k: v for k, v in experts[0].model.state_dict().items() if not k.startswith(HEAD_PREFIX)},
                         strict=False)
    vectors = [flatten(e.model, names) for e in experts]

    def utility(vector: Tensor) -> float:
        assign(work, names, vector)
        return leave_one_out_f1(decoder_features(work, utility_set), utility_set.targets, class_names)

    print(f"model swarms: {len(experts)} experts ({', '.join(e.name for e in experts)}) -> domain {domain.name!r} "
          f"({len(domain.labels)} labels + {OTHER}); {vectors[0].numel():,} searched weights; "
          f"{len(utility_set.targets)} utility columns, {len(held_out.targets)} held-out validation columns")
    result = search(vectors, utility, cfg.swarm)

    rows = []
    chosen = max(range(len(experts)), key=lambda i: result.start_utilities[i])
    for i, (expert, vector) in enumerate(zip(experts, vectors, strict=True)):
        name = f"expert {expert.name}{' (best utility: the one to pick without a swarm)' if i == chosen else ''}"
        rows.append(_evaluate(name, work, names, vector, utility_set, held_out, class_names,
                              result.start_utilities[i]))
    rows.append(_evaluate("Model Swarms", work, names, result.best, utility_set, held_out, class_names,
                          result.best_utility))
    _save_adapted(work, names, result.best, utility_set, domain.name, cfg.out)
    if reference is not None:
        predicted = torch.cat([reference.predict(held_out.texts[i : i + BATCH]).argmax(-1)
                               for i in range(0, len(held_out.texts), BATCH)])
        rows.append(_scores(f"reference: {reference.name} fine-tuned on all its training columns", predicted,
                            held_out, class_names, None))
    report = _report(cfg, domain.name, class_names, experts, result, rows, len(utility_set.targets),
                     len(held_out.targets))
    print(report["markdown"])
    return report


def _split_columns(cfg: AdaptConfig, tokenizer: ColumnEncoder) -> tuple[_Columns, _Columns]:
    """The domain's validation columns (and as many [other]) shuffled: the utility set, and the rest held out."""
    labels = load_labels()
    _, val_ex = real_examples(cfg.data, labels)
    domain = domains()[cfg.domain]
    columns = list(zip(*domain_examples(val_ex, labels, domain, seed=cfg.swarm.seed), strict=True))
    random.Random(cfg.swarm.seed).shuffle(columns)
    if len(columns) < cfg.utility_columns + MIN_HELD_OUT:
        raise ValueError(
            f"domain {domain.name!r} has {len(columns)} validation columns (with as many {OTHER}): not enough for "
            f"{cfg.utility_columns} utility columns and {MIN_HELD_OUT} held out; lower --utility-columns"
        )
    utility_texts, utility_targets = zip(*columns[: cfg.utility_columns], strict=True)
    held_texts, held_targets = zip(*columns[cfg.utility_columns :], strict=True)
    return _columns(utility_texts, utility_targets, tokenizer), _columns(held_texts, held_targets, tokenizer)


def _save_adapted(work: DomainModel, names: Sequence[str], best: Tensor, utility_set: _Columns, domain: str,
                  out: Path) -> None:
    """The best particle with a head of scaled prototypes from the whole utility set, as a specialist directory."""
    assign(work, names, best)
    protos = prototypes(decoder_features(work, utility_set), utility_set.targets, work.decoder.head.out_features)
    with torch.no_grad():
        work.decoder.head.weight.copy_(HEAD_SCALE * F.normalize(protos, dim=-1))
        # a class without utility columns has no prototype: a logit below any cosine's keeps it from winning
        work.decoder.head.bias.copy_(torch.where(protos.norm(dim=-1) > 0, 0.0, -2 * HEAD_SCALE))
    Specialist(domain, work).save(out)


def _evaluate(name: str, work: DomainModel, names: Sequence[str], vector: Tensor, utility_set: _Columns,
              held_out: _Columns, class_names: Sequence[str], utility: float) -> ModelScores:
    """A model with a prototype head fitted on all utility columns, scored on the held-out columns."""
    assign(work, names, vector)
    protos = prototypes(decoder_features(work, utility_set), utility_set.targets, len(class_names))
    return _scores(name, predict(decoder_features(work, held_out), protos), held_out, class_names, utility)


def _report(cfg: AdaptConfig, domain: str, class_names: Sequence[str], experts: Sequence[Specialist],
            result: SwarmResult, rows: Sequence[ModelScores], n_utility: int, n_held_out: int) -> dict:
    lines = [
        f"# Model Swarms: adapting {len(experts)} specialists to domain `{domain}`",
        "",
        f"The domain's labelled validation columns (its {len(class_names) - 1} labels and as many others as {OTHER}), "
        f"which no expert was trained on, split at random: utility = macro-F1 of a nearest-prototype head, "
        f"leave-one-out, on {n_utility} of them; held out = the other {n_held_out}, never seen by the search. "
        f"{len(result.history) - 1} steps of {cfg.swarm.particles} particles, {result.evaluations} evaluations; "
        f"adapted specialist saved to `{cfg.out}`.",
        "",
        "| model | utility (LOO macro-F1) | held-out macro-F1 | held-out micro-F1 |",
        "|---|---|---|---|",
        *(f"| {r.name} | {'-' if r.utility is None else f'{r.utility:.3f}'} | {r.macro_f1:.3f} | {r.micro_f1:.3f} |"
          for r in rows),
        "",
    ]
    report: dict[str, Any] = {
        "domain": domain,
        "experts": [str(p) for p in cfg.experts],
        "out": str(cfg.out),
        "utility_columns": n_utility,
        "held_out_columns": n_held_out,
        "swarm": cfg.swarm.model_dump(),
        "evaluations": result.evaluations,
        "history": [asdict(s) for s in result.history],
        "models": [asdict(r) for r in rows],
        "markdown": "\n".join(lines),
    }
    cfg.reports_dir.mkdir(parents=True, exist_ok=True)
    stem = cfg.reports_dir / f"adapt_{domain}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(report["markdown"], encoding="utf-8")
    _plot(result, max(result.start_utilities), stem.with_suffix(".png"), domain)
    return report


def _plot(result: SwarmResult, best_expert: float, path: Path, domain: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s.iteration for s in result.history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [s.global_best for s in result.history], marker="o", label="global best")
    ax.plot(steps, [s.mean for s in result.history], linestyle="--", label="particles, mean")
    ax.axhline(best_expert, color="gray", linestyle=":", label="best expert")
    ax.set_xlabel("step")
    ax.set_ylabel("utility (leave-one-out macro-F1)")
    ax.set_title(f"Model Swarms -> {domain}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
