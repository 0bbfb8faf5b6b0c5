"""The real `TableAnnotator`: a trained (or, for smoke tests, untrained) primary that fuses whatever states arrived.

Wide search: every specialist the primary was trained with reads every column (the routing an orchestrator would
prune). Columns are grouped by the set of specialists whose states actually arrived for them, so a specialist
lost mid-stream only removes its own contribution. Latency is counted in critical steps: one stage of
(slowest specialist's steps + one primary step).

A column without a single non-empty cell has nothing to classify: it is labelled `unknown` with confidence 0,
routed to no specialist and not run through the model (which would otherwise give it a confident label learnt
from nothing).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from swarm.model_server.annotator import AnnotationResult, SpecialistStates
from swarm.model_server.backbone import get_config
from swarm.model_server.column_encoder import ColumnEncoder
from swarm.model_server.devices import autocast, resolve_device
from swarm.model_server.primary import PrimaryModel
from swarm.model_server.tables import Table, load_labels, serialize_table

UNKNOWN = "unknown"  # the label of a column with no non-empty cell (confidence 0)


def is_empty_column(values: Sequence[str]) -> bool:
    return not any(v.strip() for v in values)


class PrimaryAnnotator:
    def __init__(self, model: PrimaryModel, device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.specialist_names = list(model.specialists) if model.fusion is not None else []
        self.tokenizer = ColumnEncoder(model.cfg.max_len)

    @classmethod
    def load(cls, model_dir: Path, device: str | torch.device = "cpu") -> PrimaryAnnotator:
        model, _ = PrimaryModel.load(Path(model_dir))
        return cls(model, device)

    @classmethod
    def untrained(cls, specialist_names: Sequence[str], config: str = "tiny",
                  fusion_mode: str = "weighted_sum", device: str | torch.device = "cpu") -> PrimaryAnnotator:
        """Fresh weights: for tests and smoke runs of the serving path, never for real annotation."""
        torch.manual_seed(0)
        return cls(PrimaryModel(get_config(config), load_labels(), fusion_mode, specialist_names), device)

    def serialize(self, table: Table) -> list[str]:
        return serialize_table(table)

    def route(self, table: Table) -> dict[str, list[int]]:
        columns = [j for j, values in enumerate(table.columns) if not is_empty_column(values)]
        return {name: columns for name in self.specialist_names}

    @torch.inference_mode()
    def annotate(self, table: Table, states: SpecialistStates, routing: dict[str, list[int]],
                 specialist_steps: dict[str, int] | None = None) -> AnnotationResult:
        texts = self.serialize(table)
        empty = {j for j, values in enumerate(table.columns) if is_empty_column(values)}
        agent_index = {name: i for i, name in enumerate(self.specialist_names)}
        arrived = [n for n in states if n in agent_index]
        # agent -> {column: row of that agent's state tensors}
        position = {name: {c: r for r, c in enumerate(routing.get(name, []))} for name in arrived}
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for column in range(len(texts)):
            if column not in empty:
                groups[tuple(name for name in arrived if column in position[name])].append(column)

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

        confidence, best = probs.max(-1)
        labels = [UNKNOWN if j in empty else self.model.labels[i] for j, i in enumerate(best.tolist())]
        confidences = [0.0 if j in empty else c for j, c in enumerate(confidence.tolist())]
        steps = [(specialist_steps or {}).get(name, 1) for name in arrived]
        return AnnotationResult(
            labels=labels,
            confidences=confidences,
            specialists_used=arrived,
            specialists_missing=[n for n in routing if n not in states],
            critical_steps=1 + (max(steps) if steps else 0),
        )
