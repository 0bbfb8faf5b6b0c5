"""The real `TableAnnotator`: a trained (or, for smoke tests, untrained) primary that fuses whatever states arrived,
with the orchestrator's policy when the model directory has one.

Routing: with a learnt policy (model_server/model/orchestrator.py, found in `<model>/orchestrator/`), the complexity
head picks how many specialists the table gets within the spawn budget, the routing head which columns each reads (wide
search), and after each stage the deep head may send ambiguous columns to one more specialist (deep search, greedy).
Without one, every specialist the primary was trained with reads every column. Columns are grouped by the set of
specialists whose states actually arrived for them, so a specialist lost mid-stream only removes its own
contribution. Latency is counted in critical steps: Σ over stages of (one primary step + the slowest specialist's).

A column without a single non-empty cell (`column_features.is_empty_cell`: whitespace, zero-width characters and
byte-order marks count as empty) has nothing to classify: it is labelled `unknown` with confidence 0,
routed to no specialist and not run through the model (which would otherwise give it a confident label learnt
from nothing).
"""
from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.column_features import is_empty_cell
from swarm.model_server.model.devices import autocast, resolve_device
from swarm.model_server.model.manifest import PrimaryManifest
from swarm.model_server.model.orchestrator import POLICY_META, OrchestratorPolicy, critical_steps, realise_deep
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.tables import Table, load_labels, serialize_table
from swarm.model_server.serving.annotator import AnnotationResult, Routing, SpecialistStates, Stage

T = TypeVar("T")
UNKNOWN = "unknown"  # the label of a column with no non-empty cell (confidence 0)
NO_POLICY = "none"  # `--policy none`: no orchestrator even when the model directory has one


def is_empty_column(values: Sequence[str]) -> bool:
    return all(is_empty_cell(v) for v in values)


class PrimaryAnnotator:
    def __init__(self, model: PrimaryModel, device: str | torch.device = "cpu",
                 policy: OrchestratorPolicy | None = None, budget: int | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.specialist_names = list(model.specialists) if model.fusion is not None else []
        self.tokenizer = ColumnEncoder(model.cfg.max_len)
        self.policy = policy.eval().to(self.device) if policy is not None and self.specialist_names else None
        # Spawn budget: distinct specialists a table may use (wide and deep together).
        self.budget = len(self.specialist_names) if budget is None else max(0, budget)
        self.manifest = PrimaryManifest(**model.meta())  # the loaded model.json (see load), else the model's own
        self.specialist_dirs: list[Path] = []  # its specialists' directories, as its model.json names them (load)
        # route, next_stage and annotate of one table run one after another in one compute thread, and ask for the
        # same wide plan and (after the last stage) the same probabilities: each thread keeps its last of each.
        self._last = threading.local()

    def forget(self) -> None:
        """Drop this thread's last wide plan and fusion: the next call on the same table computes afresh (a benchmark
        timing repeated calls on one table would otherwise time the memo)."""
        self._last = threading.local()

    def _memo(self, kind: str, key: object, compute: Callable[[], T]) -> T:
        last = getattr(self._last, kind, None)
        if last is not None and last[0] == key:
            return last[1]
        value = compute()
        setattr(self._last, kind, (key, value))
        return value

    @classmethod
    def load(cls, model_dir: Path, device: str | torch.device = "cpu", policy: Path | str | None = None,
             budget: int | None = None) -> PrimaryAnnotator:
        """The primary in `model_dir` with the orchestrator policy in `policy` (default: `model_dir/orchestrator`
        when it exists; NO_POLICY: none, every specialist reads every column). A policy trained for another
        primary is refused (ValueError). The model's manifest (model.json) is kept as `.manifest`, the specialist
        directories it names (resolved) as `.specialist_dirs`."""
        model, manifest = PrimaryModel.load(Path(model_dir))
        if policy is None and (Path(model_dir) / "orchestrator" / POLICY_META).is_file():
            policy = Path(model_dir) / "orchestrator"
        loaded = None if policy in (None, NO_POLICY) else OrchestratorPolicy.load(Path(policy), model)
        annotator = cls(model, device, loaded, budget)
        annotator.manifest = manifest
        annotator.specialist_dirs = manifest.resolve_specialist_dirs(Path(model_dir))
        return annotator

    @classmethod
    def untrained(cls, specialist_names: Sequence[str], config: str = "tiny",
                  fusion_mode: str = "weighted_sum", device: str | torch.device = "cpu") -> PrimaryAnnotator:
        """Fresh weights: for tests and smoke runs of the serving path, never for real annotation."""
        torch.manual_seed(0)
        return cls(PrimaryModel(get_config(config), load_labels(), fusion_mode, specialist_names), device)

    def serialize(self, table: Table) -> list[str]:
        return serialize_table(table)

    @staticmethod
    def _filled(table: Table) -> list[int]:
        return [j for j, values in enumerate(table.columns) if not is_empty_column(values)]

    def _wide(self, table: Table, columns: list[int]) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
        """The policy's greedy first stage for the filled columns: column features, routed (C, N), complexity,
        spawned (N,)."""
        return self._memo("wide", table, lambda: self._plan_wide(table, columns))

    @torch.inference_mode()
    def _plan_wide(self, table: Table, columns: list[int]) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
        assert self.policy is not None
        ids, mask = (t.to(self.device) for t in self.tokenizer([self.serialize(table)[j] for j in columns]))
        with autocast(self.device):
            h = self.policy.encode_columns(self.model.backbone.first_layer(ids, mask).float())
        table_index = torch.zeros(len(columns), dtype=torch.long, device=self.device)
        plan = self.policy.wide(h, table_index, 1, self.budget)
        return h, plan.routed.cpu(), float(plan.complexity[0]), plan.spawned[0].cpu()

    def route(self, table: Table) -> Routing:
        columns = self._filled(table)
        if self.policy is None or not columns:
            return {name: columns for name in self.specialist_names}
        _, routed, _, _ = self._wide(table, columns)
        return {name: [c for c, r in zip(columns, routed[:, j].tolist(), strict=True) if r]
                for j, name in enumerate(self.specialist_names)}

    def deep_call_bound(self, table: Table) -> int:
        """At most this many more column passes after the wide stage (what admission prices ahead): every deep
        stage may ask every specialist for every column."""
        if self.policy is None:
            return 0
        return self.policy.max_deep * self.policy.n * len(self._filled(table))

    @torch.inference_mode()
    def next_stage(self, table: Table, states: SpecialistStates, routing: Routing, stages: Sequence[Stage]
                   ) -> Routing:
        columns = self._filled(table)
        if self.policy is None or not columns or len(stages) > self.policy.max_deep:
            return {}
        # After the wide stage every column may go deeper; after a deep stage only the columns that took it.
        active = columns if len(stages) <= 1 else sorted({c for cols in stages[-1].routing.values() for c in cols})
        if not active:
            return {}
        probs, used_names = self._probs(table, states, routing)
        h, _, _, spawned = self._wide(table, columns)
        row = {c: i for i, c in enumerate(columns)}
        index = {name: j for j, name in enumerate(self.specialist_names)}
        used = torch.zeros((len(columns), len(index)), dtype=torch.bool)
        for c in columns:
            for name in used_names[c]:
                used[row[c], index[name]] = True
        started = (spawned | used.any(0))[None, :]
        allowed = (started | (started.sum() < self.budget)).expand_as(used)
        is_active = torch.tensor([c in set(active) for c in columns])
        step = self.policy.deep(h, probs[columns].to(self.device), used.to(self.device), allowed.to(self.device),
                                is_active.to(self.device))
        one_table = torch.zeros(len(columns), dtype=torch.long)  # every column in table 0
        chosen, _, _ = realise_deep(step.next.cpu(), used, allowed, started, one_table, self.budget)
        return {name: [c for c, r in zip(columns, chosen[:, j].tolist(), strict=True) if r]
                for j, name in enumerate(self.specialist_names) if chosen[:, j].any()}

    def _probs(self, table: Table, states: SpecialistStates, routing: Routing
               ) -> tuple[torch.Tensor, dict[int, list[str]]]:
        """Per column: the primary's probabilities with the specialists whose states arrived for it fused, and
        their names (in routing order). Empty columns get zeros and no names. Computed once for the same table,
        routing and state tensors (annotate after a last next_stage that stopped asks again for exactly these)."""
        delivered = tuple((name, tuple(routing.get(name, ())), id(states[name][0])) for name in states)
        # The state tensors are kept with the result, so their ids in the key cannot be reused meanwhile.
        probs, names, _ = self._memo("probs", (table, delivered),
                                     lambda: (*self._fuse(table, states, routing), [states[n] for n in states]))
        return probs, names

    @torch.inference_mode()
    def _fuse(self, table: Table, states: SpecialistStates, routing: Routing
              ) -> tuple[torch.Tensor, dict[int, list[str]]]:
        agent_index = {name: i for i, name in enumerate(self.specialist_names)}
        arrived = [n for n in states if n in agent_index]
        position = {name: {c: r for r, c in enumerate(routing.get(name, []))} for name in arrived}
        texts = self.serialize(table)
        empty = set(range(len(texts))) - set(self._filled(table))
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        names: dict[int, list[str]] = {}
        for column in range(len(texts)):
            if column not in empty:
                agents = tuple(name for name in arrived if column in position[name])
                groups[agents].append(column)
                names[column] = list(agents)
        probs = torch.zeros(len(texts), len(self.model.labels))
        if groups:
            ids, mask = (t.to(self.device) for t in self.tokenizer(texts))
        for agents, columns in groups.items():
            # Received states live in the gRPC messages' host memory; one host-to-device copy per layer.
            agent_states = [
                torch.stack([states[a][layer][[position[a][c] for c in columns]] for a in agents])
                .to(self.device, torch.float32, non_blocking=True)
                for layer in range(self.model.cfg.n_layers)
            ] if agents else None
            with autocast(self.device):
                logits = self.model(ids[columns], mask[columns], agent_states, [agent_index[a] for a in agents])
            probs[columns] = logits.float().softmax(-1).cpu()
        return probs, names

    @torch.inference_mode()
    def annotate(self, table: Table, states: SpecialistStates, routing: Routing,
                 stages: Sequence[Stage] | None = None) -> AnnotationResult:
        texts = self.serialize(table)
        empty = set(range(len(texts))) - set(self._filled(table))
        probs, names = self._probs(table, states, routing)
        agent_index = {name: i for i, name in enumerate(self.specialist_names)}
        arrived = [n for n in states if n in agent_index]
        confidence, best = probs.max(-1)
        labels = [UNKNOWN if j in empty else self.model.labels[i] for j, i in enumerate(best.tolist())]
        confidences = [0.0 if j in empty else c for j, c in enumerate(confidence.tolist())]
        stages = list(stages) if stages else [Stage(routing, {name: 1 for name in arrived})]
        delivered = [{n: s for n, s in stage.steps.items() if n in states} for stage in stages]
        deep = [sum(1 for stage in stages[1:] if any(j in cols for cols in stage.routing.values()))
                for j in range(len(texts))]
        complexity = None
        if self.policy is not None and self._filled(table):
            complexity = self._wide(table, self._filled(table))[2]
        return AnnotationResult(
            labels=labels,
            confidences=confidences,
            specialists_used=arrived,
            specialists_missing=[n for n in routing if n not in states],
            critical_steps=critical_steps(delivered),
            column_specialists=[names.get(j, []) for j in range(len(texts))],
            deep_steps=deep,
            complexity=complexity,
        )
