"""The orchestrator experiment (`swarm orchestrator-report`, `make orchestrator`): accuracy against cost for every
way of deciding which specialists read which columns, on real SOTAB validation columns, over seeds.

Protocol, per seed, on grouped K folds of the validation tables (the accuracy experiment's stronger primaries):
1. The five specialists are fine-tuned per domain on training + training_columns (once, frozen, shared by seeds).
2. Per fold, a robust primary is trained on training + training_columns + the other folds' validation tables, with
   honest fusion (its specialists withheld on the tables they were trained on, as in the accuracy experiment) and
   agents dropped at random per batch, so that it annotates well with any subset the orchestrator picks.
3. Each validation column's answers under all 2^5 subsets come from the primary of the fold that held it out, so
   every outcome a policy learns from or is scored on is out of sample for the primary (trainer/orchestration/env.py).
4. Every policy (threshold rule, supervised head, PARL and its ablations) is fitted on the other folds' tables and
   played greedily on the held-out fold. The features it reads (first layer) are those of the held-out fold's
   primary, on every table, so the policy plays with the primary it was fitted for (as the released one does).
   A seed's row pools the held-out predictions of all folds; no policy sees the labels of the tables it is
   scored on. The robustness check (robust against dedicated primaries) runs on the first fold.
Rows are mean ± std over seeds (paired: every policy plays the same primaries and folds in a seed).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from swarm.model_server.choices import DEVICE_AUTO
from swarm.model_server.model.manifest import PrimaryManifest
from swarm.model_server.model.orchestrator import OrchestratorPolicy, domain_masks_for, primary_fingerprint
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.segments import segment_any, segment_mean
from swarm.model_server.model.specialist import domains
from swarm.model_server.model.tables import load_labels
from swarm.model_server.model.weights import save_weights
from swarm.trainer.data.columns import ColumnExample, build_examples
from swarm.trainer.experiments.deep_transfer import VARIANTS, deep_transfer
from swarm.trainer.experiments.orchestrator_report import write_orchestrator_reports
from swarm.trainer.experiments.runner import ExperimentRunner, cv_folds, grouped_folds
from swarm.trainer.experiments.specialist_help import specialist_help, summarise_help
from swarm.trainer.orchestration.baselines import (
    confidence_gate,
    domain_scores,
    fit_gate,
    fit_loss_regressor,
    fit_tiers,
    predicted_complexity,
    random_k,
    standardise,
    table_stats,
)
from swarm.trainer.orchestration.env import (
    Cost,
    Outcomes,
    column_plan,
    oracle_routing,
    plan_metrics,
    rollout,
    static_plan,
)
from swarm.trainer.orchestration.outcomes import first_layer_features_of, outcomes_from_caches
from swarm.trainer.orchestration.parl import ParlConfig, cost_of, train_parl
from swarm.trainer.training.metrics import hard_classes, spread
from swarm.trainer.training.primary import labelled_splits
from swarm.trainer.training.specialists import train_specialist
from swarm.trainer.training.train import TrainConfig

POLICIES = ("primary_alone", "all_specialists", "random_k", "threshold_rule", "supervised_head", "confidence_gate",
            "parl")
ABLATIONS: dict[str, dict[str, Any]] = {
    "parl_wide_only": {"max_deep": 0}, "parl_no_anneal": {"anneal": 0.0},
    "parl_no_r_parallel": {"lambda1": 0.0}, "parl_no_r_finish": {"lambda2": 0.0},
    # the routing bits credited with the column's group advantage instead of their counterfactual
    "parl_group_credit": {"credit": "group"},
    # a spawn budget of 3 with two specialists cold (scaled to zero: +2 critical steps on first use)
    "parl_budget3_two_cold": {"budget": 3, "cold": ["people", "commerce"], "spawn_steps": 2}}


class OrchestratorConfig(BaseModel):
    """`swarm orchestrator-report` (the descriptions are its help)."""

    data: Path = Field(description="SOTAB-format dataset directory (training splits + validation).")
    run_dir: Path = Field(Path("runs/orchestrator"), description="Specialists, primaries and the released policy.")
    reports_dir: Path = Field(Path("reports"), description="Where orchestrator.json, orchestrator.md and "
                              "orchestrator.png go.")
    model: str = Field("tiny", description="Backbone config of primaries and specialists.")
    steps: int = Field(600, ge=1, description="Optimizer steps per primary.")
    specialist_steps: int = Field(400, ge=1, description="Optimizer steps of each specialist.")
    batch_size: int = Field(64, ge=1)
    seeds: int = Field(3, ge=1, description="Seeds the experiment is repeated over (rows are mean ± std over them).")
    folds: int = Field(3, ge=2, description="Grouped folds over the validation tables (policies fit on K-1).")
    thinned_copies: int = Field(1, ge=0)
    device: str = DEVICE_AUTO
    robustness: bool = Field(True, description="Also train primaries dedicated to one subset (robustness check).")
    ablations: bool = Field(True, description="Also train the PARL ablations (no annealing, no r_parallel, ...).")
    parl: ParlConfig = ParlConfig()
    # Other prices (β per call and per critical step, 2β for spawning) at which PARL and the threshold rule are
    # also fitted: the accuracy-cost curve of each, compared at equal calls.
    sweep: list[float] = [0.0, 0.003]


def compute_outcomes(runner: ExperimentRunner, model: PrimaryModel, examples: Sequence[ColumnExample]) -> Outcomes:
    """The primary's log-probabilities for every example under every subset of its specialists."""
    chosen = [s for s in runner.specialists if s.name in model.specialists]
    return outcomes_from_caches(model, examples, runner.states([e.text for e in examples], chosen))


def pooled_outcomes(runner: ExperimentRunner, primaries: Sequence[PrimaryModel], examples: Sequence[ColumnExample],
                    folds: Sequence[Sequence[int]]) -> Outcomes:
    """Every example's outcomes from the primary of the fold that held it out (`folds[k]`: example indices that
    `primaries[k]` was not trained on), in the examples' order; features likewise from that primary."""
    parts = [compute_outcomes(runner, model, [examples[i] for i in fold])
             for model, fold in zip(primaries, folds, strict=True)]
    position = torch.empty(len(examples), dtype=torch.long)
    position[torch.tensor([i for fold in folds for i in fold])] = torch.arange(len(examples))
    tables = {name: i for i, name in enumerate(dict.fromkeys(e.table for e in examples))}
    return Outcomes(parts[0].specialists, parts[0].labels_text, torch.cat([o.features for o in parts])[position],
                    torch.cat([o.log_probs for o in parts])[position], torch.cat([o.labels for o in parts])[position],
                    torch.tensor([tables[e.table] for e in examples]), len(tables))


class _Pooled:
    """One policy's held-out plans of every fold, gathered into one plan over all tables of the seed."""

    def __init__(self, out: Outcomes) -> None:
        self.used = torch.zeros((len(out.table), out.n), dtype=torch.bool)
        self.spawned = torch.zeros((out.n_tables, out.n), dtype=torch.bool)
        self.critical = torch.zeros(out.n_tables)
        self.deep = torch.zeros(len(out.table), dtype=torch.long)

    def put(self, rows: torch.Tensor, tables: torch.Tensor, used: torch.Tensor, spawned: torch.Tensor,
            critical: torch.Tensor, deep: torch.Tensor) -> None:
        self.used[rows], self.spawned[tables], self.critical[tables], self.deep[rows] = used, spawned, critical, deep

    def metrics(self, out: Outcomes, hard: Sequence[str]) -> dict:
        return plan_metrics(out, self.used, self.spawned, self.critical, self.deep, hard)


def _policy(out: Outcomes, primary: PrimaryModel, cfg: ParlConfig) -> OrchestratorPolicy:
    torch.manual_seed(cfg.seed)
    return OrchestratorPolicy(primary.specialists, domain_masks_for(primary), out.features.shape[1], cfg.hidden,
                              cfg.max_deep)


def run_policies(out: Outcomes, primary: PrimaryModel, folds: list[list[int]], cfg: OrchestratorConfig, seed: int,
                 variants: dict[str, dict], features: Sequence[torch.Tensor]) -> tuple[dict[str, _Pooled], list, dict]:
    """Every policy fitted on the other folds and played on each held-out fold; also the PARL curves of fold 0
    and the per-table complexity signals of the held-out tables. `features[k]`: the first-layer features of every
    column as the primary of fold k computes them, read by the policies of that fold."""
    cost = Cost(budget=cfg.parl.budget, warm=torch.ones(out.n, dtype=torch.bool), spawn_steps=cfg.parl.spawn_steps)
    sweep = {f"{rule} β={beta:g}": beta for beta in cfg.sweep for rule in ("parl", "threshold_rule")}
    names = [*POLICIES, *variants, *sweep]
    pooled = {name: _Pooled(out) for name in names}
    masks = domain_masks_for(primary)
    signals = {"formula": torch.zeros(out.n_tables), "parl_specialists": torch.zeros(out.n_tables),
               "alone_error": 1 - segment_mean(out.correct(torch.zeros((len(out.table), out.n), dtype=torch.bool)),
                                                out.table, out.n_tables),
               "head_complexity": torch.zeros(out.n_tables)}
    curves: list = []
    betas = (cfg.parl.beta_calls, cfg.parl.beta_steps, cfg.parl.beta_spawn)
    for k, held in enumerate(folds):
        train_tables = sorted(set(range(out.n_tables)) - set(held))
        view = replace(out, features=features[k])
        fit, test = view.tables(train_tables), view.tables(held)
        rows = torch.isin(out.table, torch.tensor(held)).nonzero().squeeze(-1)
        tables = torch.tensor(held)  # sorted: out.tables(held) numbers them in this order, rows stay in order

        def put(name: str, used: torch.Tensor, spawned: torch.Tensor, critical: torch.Tensor, deep: torch.Tensor,
                rows: torch.Tensor = rows, tables: torch.Tensor = tables) -> None:
            pooled[name].put(rows, tables, used, spawned, critical, deep)

        put("primary_alone", *static_plan(test, torch.zeros((test.n_tables, out.n), dtype=torch.bool), cost))
        put("all_specialists", *static_plan(test, torch.ones((test.n_tables, out.n), dtype=torch.bool), cost))
        put("random_k", *static_plan(test, random_k(test, seed * 100 + k), cost))
        formula_fit = standardise(table_stats(fit), table_stats(fit))
        formula_test = standardise(table_stats(test), table_stats(fit))
        signals["formula"][tables] = formula_test
        for name, beta in {"threshold_rule": None, **sweep}.items():
            if name.startswith("threshold_rule"):
                tiers = fit_tiers(fit, formula_fit, domain_scores(fit, masks), cost,
                                  betas if beta is None else sweep_betas(beta))
                put(name, *static_plan(test, tiers.per_table(formula_test, domain_scores(test, masks)), cost,
                                       reads_alone=True))
        regressor = fit_loss_regressor(fit, seed=seed)
        head_fit, head_test = predicted_complexity(regressor, fit), predicted_complexity(regressor, test)
        signals["head_complexity"][tables] = head_test
        tiers = fit_tiers(fit, head_fit, domain_scores(fit, masks), cost, betas)
        put("supervised_head", *static_plan(test, tiers.per_table(head_test, domain_scores(test, masks)), cost,
                                            reads_alone=True))
        put("confidence_gate", *column_plan(test, confidence_gate(test, fit_gate(fit, cost, betas)), cost,
                                            reads_alone=True))
        parl_sweep = {name: dict(zip(("beta_calls", "beta_steps", "beta_spawn"), sweep_betas(beta), strict=True))
                      for name, beta in sweep.items() if name.startswith("parl")}
        for name, change in {"parl": {}, **variants, **parl_sweep}.items():
            parl_cfg = cfg.parl.model_copy(update={"seed": seed * 100 + k, **change})
            policy = _policy(fit, primary, parl_cfg)
            history = train_parl(policy, fit, parl_cfg, desc=f"PARL {name} seed {seed} fold {k}")
            if name == "parl" and k == 0:
                curves = history
            with torch.no_grad():
                plan = rollout(policy, test, cost_of(parl_cfg, out.specialists), max_deep=parl_cfg.max_deep)
            put(name, plan.used, plan.spawned, plan.critical, plan.deep_steps)
            if name == "parl":
                # what the table really asked: distinct specialists fused into some column (not the spawn count)
                signals["parl_specialists"][tables] = segment_any(plan.used, test.table, test.n_tables).sum(-1).float()
    return pooled, curves, signals


def sweep_betas(beta: float) -> tuple[float, float, float]:
    """The prices of a point of the cost sweep: β per call and per critical step, 2β for spawning everyone."""
    return beta, beta, 2 * beta


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    def ranks(x: torch.Tensor) -> torch.Tensor:
        order = x.argsort()
        r = torch.empty_like(x, dtype=torch.float)
        r[order] = torch.arange(len(x), dtype=torch.float)
        for value in x.unique():  # average ranks of ties
            tie = x == value
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a.float()), ranks(b.float())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float((ra * rb).sum() / denom) if denom else 0.0


def subset_curve(out: Outcomes) -> dict:
    """micro-F1 of the robust primary with every subset, averaged per subset size; single and full subsets."""
    n = out.n
    by_size: dict[int, list[float]] = {}
    singles = {}
    for mask in range(2 ** n):
        used = torch.tensor([[bool(mask >> j & 1) for j in range(n)]]).expand(len(out.table), n)
        acc = float(out.correct(used).mean())
        size = bin(mask).count("1")
        by_size.setdefault(size, []).append(acc)
        if size == 1:
            singles[out.specialists[mask.bit_length() - 1]] = acc
    return {"by_size": {k: statistics.fmean(v) for k, v in sorted(by_size.items())}, "singles": singles,
            "all": by_size[n][0], "none": by_size[0][0]}


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), spread(present)


@dataclass
class _Setup:
    """The orchestrator experiment's data: the runner with the frozen specialists, the examples and the folds."""

    runner: ExperimentRunner
    base: list[ColumnExample]  # training + training_columns, with thinned copies
    val: list[ColumnExample]
    names: list[str]  # the specialists, in the runner's order
    table_folds: list[list[int]]  # validation example indices per fold
    splits: list[tuple[list[ColumnExample], list[ColumnExample]]]  # (training, held-out) examples per fold
    folds: list[list[int]]  # validation table ids per fold
    variants: dict[str, dict[str, Any]]  # the PARL ablations fitted beside PARL


def _prepare(cfg: OrchestratorConfig) -> _Setup:
    """Loads the labelled splits, trains the specialists and cuts the validation tables into grouped folds."""
    labels = load_labels()
    train_splits, validation = labelled_splits(cfg.data)
    runner = ExperimentRunner(cfg, labels)
    base = build_examples(train_splits, labels, thinned_copies=cfg.thinned_copies)
    plain = build_examples(train_splits, labels)
    val = build_examples([validation], labels)
    runner.specialists = [
        train_specialist(domain, runner.model_cfg, plain, labels,
                         TrainConfig(steps=cfg.specialist_steps, batch_size=cfg.batch_size, device=cfg.device),
                         cfg.run_dir / "specialists")
        for domain in domains().values()]
    runner.specialist_tables = {e.table for e in plain}
    names = [s.name for s in runner.specialists]
    table_folds = grouped_folds(val, cfg.folds, 0)
    splits = cv_folds(base, val, table_folds, 1)
    table_ids = {name: i for i, name in enumerate(dict.fromkeys(e.table for e in val))}
    folds = [sorted({table_ids[val[i].table] for i in fold}) for fold in table_folds]
    variants = ABLATIONS if cfg.ablations else {"parl_wide_only": ABLATIONS["parl_wide_only"]}
    return _Setup(runner, base, val, names, table_folds, splits, folds, variants)


@dataclass
class _Seeds:
    """What each seed adds, in seed order; `hard`: the primary alone's hard classes on seed 0's outcomes, on which
    every seed's rows are scored."""

    per_seed: dict[str, list[dict]] = field(default_factory=dict)  # per policy, its metrics per seed
    robustness: list[dict] = field(default_factory=list)
    curves: list[list] = field(default_factory=list)
    signals: list[dict] = field(default_factory=list)
    subsets: list[dict] = field(default_factory=list)
    oracles: list[dict] = field(default_factory=list)
    transfers: list[dict[str, float]] = field(default_factory=list)
    helps: list[list[dict]] = field(default_factory=list)
    hard: list[str] = field(default_factory=list)


def _run_seed(cfg: OrchestratorConfig, s: _Setup, seeds: _Seeds, seed: int) -> Outcomes:
    """One seed: its robust primary per fold, their pooled out-of-sample outcomes, and every policy played on them;
    adds the seed's rows to `seeds` and returns its outcomes."""
    runner, val = s.runner, s.val
    primaries = [runner.fit(f"seed{seed}-f{k}-robust", train_ex, seed, fused=True, agent_dropout=True,
                            honest=True) for k, (train_ex, _) in enumerate(s.splits)]
    out = pooled_outcomes(runner, primaries, val, s.table_folds)
    features = [first_layer_features_of(model, val) for model in primaries]
    seeds.subsets.append(subset_curve(out))
    seeds.helps.append(specialist_help(out))
    caches = runner.states([e.text for e in val], runner.specialists)
    seeds.transfers.append(deep_transfer(primaries, val, s.table_folds,
                                         {sp.name: c for sp, c in zip(runner.specialists, caches, strict=True)},
                                         runner.specialists))
    if seed == 0:
        alone = routing_metrics(out, torch.zeros((len(out.table), out.n), dtype=torch.bool), [])
        seeds.hard = hard_classes(alone["per_class"])
    seeds.oracles.append(routing_metrics(out, oracle_routing(out), seeds.hard))
    pooled, curves, signals = run_policies(out, primaries[0], s.folds, cfg, seed, s.variants, features)
    signals["easy"] = easy_table_gains(out, pooled, signals["formula"])
    for name, plan in pooled.items():
        seeds.per_seed.setdefault(name, []).append(plan.metrics(out, seeds.hard))
    seeds.curves.append(curves)
    seeds.signals.append(signals)
    if cfg.robustness:
        seeds.robustness.append(_robustness(runner, primaries[0], *s.splits[0], seed, s.names))
    return out


def _policy_rows(per_seed: dict[str, list[dict]]) -> list[dict]:
    """Per policy: each metric's mean and spread over seeds, and its micro-F1 per seed."""
    policies = []
    for name, runs in per_seed.items():
        row: dict[str, Any] = {"name": name}
        for key in ("micro_f1", "macro_f1", "hard_class_f1", "calls_per_column", "critical_steps",
                    "specialists_per_table", "spawned_per_table", "deep_columns"):
            row[key], row[f"{key}_std"] = _mean_std([r[key] for r in runs])
        row["per_seed_micro_f1"] = [r["micro_f1"] for r in runs]
        policies.append(row)
    return policies


def _release(cfg: OrchestratorConfig, s: _Setup, out: Outcomes) -> Path:
    """The released orchestrator: a robust primary on every labelled split (honest fusion on the validation tables)
    and a policy trained on the last seed's out-of-sample outcomes `out` of all validation tables, reading the
    released primary's own features; served by `swarm up --checkpoint runs/orchestrator/released/model`. Returns
    its directory."""
    robust = s.runner.fit("released-robust", [*s.base, *s.val], cfg.seeds - 1, fused=True, agent_dropout=True,
                          honest=True)
    released = cfg.run_dir / "released" / "model"
    save_weights(released, robust, PrimaryManifest.of(robust.meta(), released,
                                                      [cfg.run_dir / "specialists" / n for n in s.names],
                                                      agent_dropout=True, honest_fusion=True))
    final_cfg = cfg.parl.model_copy(update={"seed": 0})
    final = replace(out, features=first_layer_features_of(robust, s.val))
    policy = _policy(final, robust, final_cfg)
    train_parl(policy, final, final_cfg, desc="PARL released")
    policy.save(released / "orchestrator", primary_fingerprint(robust),
                {"trained_on": "validation (all tables; outcomes out of sample, from the CV's fold primaries)",
                 "parl": final_cfg.model_dump()})
    return released


def run_orchestrator(cfg: OrchestratorConfig) -> dict:
    started = time.time()
    s = _prepare(cfg)
    seeds = _Seeds()
    for seed in range(cfg.seeds):
        out = _run_seed(cfg, s, seeds, seed)
    policies = _policy_rows(seeds.per_seed)
    criteria = _criteria(seeds.subsets, seeds.signals, seeds.per_seed, seeds.oracles)
    released = _release(cfg, s, out)

    result = {
        "model": cfg.model, "seeds": cfg.seeds, "folds": cfg.folds, "steps": cfg.steps,
        "specialists": s.names, "parl": cfg.parl.model_dump(),
        "trained_on": {
            "specialists": "training + training_columns, per domain",
            "primary": "per fold: training + training_columns + the other folds' validation tables, honest fusion, "
                       "agents dropped at random per batch (robust primary); outcomes of the held-out fold only",
            "policies": f"the validation tables of the other {cfg.folds - 1} folds; scored on the held-out fold",
            "released": "primary on every labelled split (same recipe); policy on all validation tables",
        },
        "policies": policies,
        "criteria": criteria,
        "robustness": seeds.robustness,
        "subset_sizes": seeds.subsets,
        "hard_classes": seeds.hard,
        "oracle_routing": {key: _mean_std([o[key] for o in seeds.oracles])[0]
                           for key in ("micro_f1", "macro_f1", "hard_class_f1", "calls_per_column")},
        "deep_transfer": _transfer_summary(seeds.transfers),
        "specialist_help": summarise_help(seeds.helps),
        "parl_curves": [vars(step) for step in seeds.curves[0]],
        "checkpoint": str(released),
        "seconds": round(time.time() - started, 1),
    }
    throughput = cfg.reports_dir / "bench_throughput.json"
    if throughput.is_file():
        import json

        result["throughput"] = json.loads(throughput.read_text(encoding="utf-8")).get("throughput", [])
    write_orchestrator_reports(result, cfg.reports_dir)
    return result


def _transfer_summary(transfers: list[dict[str, float]]) -> dict:
    """Per variant of trainer/experiments/deep_transfer: accuracy mean and spread over seeds, and each minus `union`
    (what deep search does) paired per seed."""
    summary = {}
    for variant in VARIANTS:
        mean, std = _mean_std([t[variant] for t in transfers])
        gain, gain_std = _mean_std([t[variant] - t["union"] for t in transfers])
        summary[variant] = {"accuracy": mean, "accuracy_std": std, "minus_union": gain, "minus_union_std": gain_std}
    return summary


def _robustness(runner: ExperimentRunner, robust: PrimaryModel, train_ex: list[ColumnExample],
                held: list[ColumnExample], seed: int, names: list[str]) -> dict:
    """The robust primary with a subset against a primary trained for exactly that subset (same seed, same
    training columns and honest fusion), on the held-out columns of the fold."""
    rows = {}
    for label, subset in (("none", []), ("numeric", ["numeric"]), ("all", names)):
        dedicated = runner.fit(f"seed{seed}-f0-only-{label}", train_ex, seed, fused=bool(subset), names=subset,
                               honest=bool(subset))
        agents = [names.index(n) for n in subset]
        rows[label] = {"robust": runner.score(robust, held, agents=agents).micro_f1,
                       "dedicated": runner.score(dedicated, held).micro_f1}
    return rows


def routing_metrics(out: Outcomes, used: torch.Tensor, hard: Sequence[str]) -> dict:
    """plan_metrics of a per-column routing alone (no spawn or critical-step accounting): the primary alone's row
    and the oracle routing's ceiling."""
    return plan_metrics(out, used, torch.zeros((out.n_tables, out.n), dtype=torch.bool), torch.ones(out.n_tables),
                        torch.zeros(len(out.table), dtype=torch.long), hard)


def _criteria(subsets: list[dict], signals: list[dict], per_seed: dict[str, list[dict]], oracles: list[dict]
              ) -> dict:
    beyond_one = [s["all"] - max(s["singles"].values()) for s in subsets]
    a_value, a_std = _mean_std(beyond_one)
    parl, wide = per_seed["parl"], per_seed["parl_wide_only"]
    def hard_gain_over_wide(runs: list[dict]) -> tuple[float | None, float | None]:
        """Hard-class F1 of `runs` minus wide-only PARL's, paired per seed: mean and spread."""
        return _mean_std([(r["hard_class_f1"] or 0) - (w["hard_class_f1"] or 0)
                          for r, w in zip(runs, wide, strict=True)])

    c_value, c_std = hard_gain_over_wide(parl)
    # what any routing could still add on the hard classes over wide-only PARL, and what asking everyone adds
    ceiling, _ = hard_gain_over_wide(oracles)
    everyone, _ = hard_gain_over_wide(per_seed["all_specialists"])
    rho_formula = [spearman(s["parl_specialists"], s["formula"]) for s in signals]
    rho_error = [spearman(s["parl_specialists"], s["alone_error"]) for s in signals]
    d_value, _ = _mean_std(rho_formula)
    d_error, _ = _mean_std(rho_error)
    easy = _easy_table_efficiency(signals)
    return {
        "a": {"value": a_value, "std": a_std, "pass": bool(a_value is not None and a_value > (a_std or 0)),
              "how": "micro-F1 of the robust primary with all specialists minus with its best single one, over "
                     "seeds; passes when above its seed spread"},
        "b": easy,
        "c": {"value": c_value, "std": c_std, "pass": bool(c_value is not None and c_value >= 0.05),
              "all_specialists_over_wide": everyone, "oracle_over_wide": ceiling,
              "how": "hard-class F1 (classes under 0.5 F1 for the primary alone) of PARL with deep search minus "
                     "PARL trained without deep steps (wide only); passes at +0.05. Beside it: asking every "
                     "specialist on every column minus wide-only, and the oracle routing (per column the smallest "
                     "subset that is right; reads the labels) minus wide-only: the most any plan could add"},
        "d": {"value": d_value, "value_error": d_error,
              "pass": bool(d_value is not None and d_error is not None and d_value > 0.3 and d_error > 0.3),
              "how": "Spearman rank correlation over held-out tables between the specialists PARL asked (distinct, "
                     "fused into some column) and the design's complexity formula (value) and the primary-alone "
                     "error (value_error); passes when both exceed 0.3"},
    }


def easy_table_gains(out: Outcomes, pooled: dict[str, _Pooled], formula: torch.Tensor) -> dict[str, float]:
    """On the easy tables (the design's complexity formula at or below its median): micro-F1 gain over the primary
    alone and specialist calls per column, for PARL and for asking every specialist."""
    easy_columns = (formula <= formula.median())[out.table]
    alone = out.correct(pooled["primary_alone"].used)[easy_columns].mean()
    row = {}
    for name in ("parl", "all_specialists"):
        used = pooled[name].used[easy_columns]
        row[f"{name}_gain"] = float(out.correct(pooled[name].used)[easy_columns].mean() - alone)
        row[f"{name}_calls"] = float(used.sum(-1).float().mean())
    return row


def _easy_table_efficiency(signals: list[dict]) -> dict:
    """(b) wide search gains on easy tables in proportion to throughput: what PARL's specialist calls buy on easy
    tables, per call, against asking every specialist there."""
    def mean(key: str) -> float:
        return statistics.fmean(s["easy"][key] for s in signals)

    per_call = {name: mean(f"{name}_gain") / mean(f"{name}_calls") if mean(f"{name}_calls") else 0.0
                for name in ("parl", "all_specialists")}
    return {"value": per_call["parl"], "all_specialists_per_call": per_call["all_specialists"],
            "parl_gain": mean("parl_gain"), "parl_calls": mean("parl_calls"),
            "all_specialists_gain": mean("all_specialists_gain"),
            "pass": mean("parl_gain") > 0 and per_call["parl"] >= per_call["all_specialists"],
            "how": "on easy tables (design formula at or below its median): PARL's micro-F1 gain over the primary "
                   "alone per specialist call per column (value), against all specialists' (all_specialists_per_"
                   "call); passes when PARL gains and each of its calls buys at least as much"}
