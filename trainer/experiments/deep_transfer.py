"""How a deep step's later specialist uses the earlier one, measured (issue #11: "beliefs, or the earlier
specialist's states as initial state — measure what works").

For every ordered pair of specialists (first, second) and every held-out column, the frozen primary answers with
- `union`: both specialists' own states fused — what deep search does (the primary's beliefs after the first step
  choose the second; the second reads the column from scratch);
- `chained`: the first's states and the second's states when its recurrence starts from the first's final states
  (`Specialist.extract_states(initial_states=...)`) fused;
- `handoff`: the chained second's states alone (the earlier step's memory travels only inside them);
beside the first and the second alone. Accuracy is pooled over the held-out columns of every fold (each from the
primary that did not train on it) and averaged over the pairs.

The primaries were trained on specialists' own states (with agents dropped), never on chained ones: this measures
state passing as the deployed primaries would meet it, not a primary trained for it.
"""
from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import Specialist
from swarm.trainer.data.columns import ColumnExample
from swarm.trainer.training.state_sources import cached_inputs
from swarm.trainer.training.train import encode, predict

VARIANTS = ("first", "second", "union", "chained", "handoff")


def chained_states(second: Specialist, texts: Sequence[str], first: Tensor, batch_size: int = 128) -> Tensor:
    """(n, L, H, K, V): `second`'s final states on `texts` when each column's recurrence starts from `first`'s
    final states for it (`first`: (n, L, H, K, V), as cached)."""
    if len(first) != len(texts):
        raise ValueError(f"{len(first)} rows of first-specialist states for {len(texts)} columns")
    rows = []
    for start in range(0, len(texts), batch_size):
        initial = first[start:start + batch_size].unbind(dim=1)
        states = second.extract_states(texts[start:start + batch_size], initial_states=initial)
        rows.append(torch.stack(states, dim=1).float().cpu())
    return torch.cat(rows)


def pair_correct(model: PrimaryModel, examples: Sequence[ColumnExample], caches: Sequence[Tensor],
                 specialists: Sequence[Specialist]) -> dict[str, Tensor]:
    """Per variant, (pairs, n) bool: is the primary right on each example, for every ordered pair of its
    specialists (`caches[j]`: `specialists[j]`'s own states on the examples, in the primary's order)."""
    texts = [e.text for e in examples]
    data = encode(texts, [e.label for e in examples], ColumnEncoder(model.cfg.max_len))

    def right(stack: Sequence[Tensor], agents: list[int]) -> Tensor:
        return predict(model, data, cached_inputs(stack, agents=agents)).argmax(-1) == data.labels

    alone = [right(caches, [j]) for j in range(len(caches))]
    rows: dict[str, list[Tensor]] = {v: [] for v in VARIANTS}
    pairs = list(itertools.permutations(range(len(caches)), 2))
    for i, j in tqdm(pairs, desc="deep transfer pairs", leave=False):
        chained = list(caches)
        chained[j] = chained_states(specialists[j], texts, caches[i])
        rows["first"].append(alone[i])
        rows["second"].append(alone[j])
        rows["union"].append(right(caches, [i, j]))
        rows["chained"].append(right(chained, [i, j]))
        rows["handoff"].append(right(chained, [j]))
    return {v: torch.stack(r) for v, r in rows.items()}


def deep_transfer(primaries: Sequence[PrimaryModel], examples: Sequence[ColumnExample],
                  folds: Sequence[Sequence[int]], states: dict[str, Tensor], specialists: Sequence[Specialist]
                  ) -> dict[str, float]:
    """Accuracy of each variant over every example, each from the primary of the fold that held it out
    (`folds[k]`: example indices `primaries[k]` did not train on), averaged over the ordered pairs; `states[name]`:
    the specialist's own cached states of all examples."""
    names = list(primaries[0].specialists)
    by_name = {s.name: s for s in specialists}
    parts = [pair_correct(model, [examples[i] for i in fold], [states[n][list(fold)] for n in names],
                          [by_name[n] for n in names])
             for model, fold in zip(primaries, folds, strict=True)]
    return {v: statistics.fmean(torch.cat([p[v] for p in parts], dim=1).float().mean(1).tolist())
            for v in VARIANTS}
