"""Where a primary's specialist states come from while training or evaluating: frozen specialists loaded in this
process, or specialist servers reached over gRPC (e.g. a SpecialistPool's Services in a trainer pod).

Frozen specialists give the same states for the same column every time, so both sources are read once per column
into a cache (n_columns, L, H, K, V) that the training loop indexes.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from swarm.model_server.choices import DEVICE_AUTO
from swarm.model_server.model.devices import resolve_device
from swarm.model_server.model.specialist import Specialist
from swarm.trainer.training.train import ExtraInputs


class StateSource(Protocol):
    names: list[str]

    def states(self, name: str, texts: Sequence[str]) -> list[Tensor]:
        """Per-layer (B, H, K, V) states of specialist `name` for the serialized columns."""
        ...

    def decoders(self) -> dict[str, dict[str, Tensor]]:
        """Each specialist's state decoder weights (see PrimaryModel.load_decoders)."""
        ...

    def close(self) -> None:
        """Release connections (remote sources); the cached states stay valid."""
        ...


class LocalSpecialists:
    def __init__(self, specialists: Sequence[Specialist]) -> None:
        self._by_name = {s.name: s for s in specialists}
        self.names = list(self._by_name)

    @classmethod
    def from_dirs(cls, dirs: Sequence[Path], device: str = DEVICE_AUTO) -> LocalSpecialists:
        return cls([Specialist.load(Path(d), device=resolve_device(device)) for d in dirs])

    @property
    def specialists(self) -> list[Specialist]:
        return list(self._by_name.values())

    def states(self, name: str, texts: Sequence[str]) -> list[Tensor]:
        return self._by_name[name].extract_states(texts)

    def decoders(self) -> dict[str, dict[str, Tensor]]:
        return {name: s.model.decoder.state_dict() for name, s in self._by_name.items()}

    def close(self) -> None:
        pass  # in-process models: nothing to release


class RemoteSpecialists:
    """Specialist servers by address; a specialist that delivers nothing is an error here (unlike serving, a
    training set cannot silently lose one agent's states)."""

    def __init__(self, endpoints: Mapping[str, str]) -> None:
        from swarm.model_server.serving.specialist_client import SpecialistClient

        self.names = list(endpoints)
        self._client = SpecialistClient(dict(endpoints))

    def states(self, name: str, texts: Sequence[str]) -> list[Tensor]:
        result = self._client.fetch({name: list(texts)})
        if name not in result.states:
            raise RuntimeError(f"specialist {name!r} delivered no states: {result.missing.get(name, 'unknown')}")
        return result.states[name]

    def decoders(self) -> dict[str, dict[str, Tensor]]:
        """Streamed from each server; a server of synthetic states has no decoder, which is an error here."""
        from safetensors.torch import load

        described = self._client.describe()
        empty = sorted(name for name, info in described.items() if not info.decoder_bytes)
        if empty:
            raise RuntimeError(f"specialist servers {empty} have no state decoder (synthetic states?)")
        return {name: load(self._client.decoder(name)) for name in described}

    def trained_tables(self) -> set[str]:
        """The tables any of the servers' specialists records as its training data (Describe)."""
        return {t for info in self._client.describe().values() for t in info.trained_tables}

    def close(self) -> None:
        self._client.close()


def cache_states(source: StateSource, name: str, texts: Sequence[str], batch_size: int = 128) -> Tensor:
    """States of one specialist for every column, (n_columns, L, H, K, V) float32, in `texts` order."""
    out: Tensor | None = None
    for start in tqdm(range(0, len(texts), batch_size), desc=f"states {name}", unit="batch", leave=False):
        # Kept on the host: the training loop moves each batch's rows to its device.
        stacked = torch.stack(source.states(name, texts[start:start + batch_size]), dim=1).float().cpu()
        if out is None:
            out = torch.empty((len(texts), *stacked.shape[1:]))
        out[start:start + len(stacked)] = stacked
    if out is None:
        raise ValueError("no columns to read states for")
    return out


# With agent dropout, each column of a batch is also withheld from every agent with this probability (on top of
# the batch's random subset): per-batch subsets alone left the robust primary 0.02-0.04 below a dedicated primary
# alone, since a validation-like column rarely trained without agents.
ROW_DROPOUT = 0.5


def cached_inputs(caches: Sequence[Tensor], agents: Sequence[int] | None = None,
                  agent_dropout_seed: int | None = None, honest: Sequence[bool] | None = None) -> ExtraInputs:
    """Primary inputs that read the agents' cached states: agent_states[l] is (N, B, H, K, V).

    `agents` fuses only those agents (indices into `caches`; empty: the primary alone). With `agent_dropout_seed`
    every batch fuses a random subset instead (its size uniform over 0..N, then its members uniform) and each of its
    columns is withheld from all of them with probability ROW_DROPOUT, reproducible from the seed and the batch's
    rows: a primary trained this way annotates well with whatever subset the orchestrator picks, none included.
    `honest` (per column) withholds every agent from the columns where it is False (see
    PrimaryModel.forward's `row_mask`).
    """
    chosen = list(range(len(caches))) if agents is None else list(agents)
    allowed = None if honest is None else torch.tensor(list(honest), dtype=torch.bool)
    if allowed is not None and caches and len(allowed) != len(caches[0]):
        raise ValueError(f"honest marks {len(allowed)} columns but the states cover {len(caches[0])}")

    def extra(index: Sequence[int]) -> dict:
        present = chosen
        row_mask = None if allowed is None else allowed[list(index)]
        if agent_dropout_seed is not None:
            rng = random.Random(agent_dropout_seed * 1_000_003 + hash(tuple(index)))
            present = sorted(rng.sample(chosen, rng.randint(0, len(chosen))))
            keep = torch.tensor([rng.random() >= ROW_DROPOUT for _ in index], dtype=torch.bool)
            row_mask = keep if row_mask is None else row_mask & keep
        if not present or (row_mask is not None and not row_mask.any()):
            return {}
        rows = torch.stack([caches[a][list(index)] for a in present])  # (N, B, L, H, K, V)
        extra = {"agent_states": list(rows.unbind(dim=2)), "agent_ids": present}
        return extra if row_mask is None else extra | {"row_mask": row_mask}

    return extra
