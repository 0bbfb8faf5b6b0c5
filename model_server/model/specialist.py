"""Specialists: a backbone fine-tuned on one label domain, then frozen, that hands out its recurrent states.

A specialist directory holds `model.safetensors` (the backbone and its state decoder) and `specialist.json`
(name, config, domain labels). At use time it is frozen: no gradients, no optimizer state, inference mode.
"""
from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from swarm.model_server.model.backbone import Backbone, BackboneConfig, get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.devices import autocast, resolve_device
from swarm.model_server.model.manifest import SpecialistManifest
from swarm.model_server.model.readout import StateReadout

OTHER = "[other]"
_DOMAINS_FILE = Path(__file__).parents[1] / "domains.yaml"  # swarm/model_server/domains.yaml, package data


@dataclass(frozen=True)
class Domain:
    name: str
    description: str
    labels: tuple[str, ...]
    knowledge: tuple[str, ...] = ()  # knowledge sources its specialist reads (model_server/model/knowledge)


@functools.lru_cache(maxsize=1)
def domains() -> dict[str, Domain]:
    """The domain → labels mapping of `domains.yaml`, in file order."""
    raw = yaml.safe_load(_DOMAINS_FILE.read_text(encoding="utf-8"))
    return {name: Domain(name, spec["description"], tuple(spec["labels"]), tuple(spec.get("knowledge", ())))
            for name, spec in raw.items()}


def domain_of(name: str) -> Domain:
    """The domain of specialist `name`: a domain's name, or "<domain>@<k>" for replica k of it (scale tests and
    benchmarks run more specialists than there are domains)."""
    domain, _, replica = name.partition("@")
    if domain not in domains() or (replica and not replica.isdigit()):
        raise ValueError(f"unknown specialist {name!r}; known: {sorted(domains())} (or DOMAIN@K replicas)")
    return domains()[domain]


class StateDecoder(nn.Module):
    """What a specialist believes about a column, from its final states alone: static learnt queries read the
    states, and a head turns the reads into logits over the domain's labels and `[other]`.

    A specialist is trained through this decoder, so everything it knows about a column is in the states it hands
    over; the primary holds a frozen copy of each specialist's decoder to read the states it receives.
    """

    # Reads per layer and head: enough for ~512 read values on small configs (tiny: 4), one on large ones, where
    # L*H*V reads are already plenty and the projection to d_model dominates the decoder's size.
    READ_VALUES = 512

    def __init__(self, cfg: BackboneConfig, n_outputs: int) -> None:
        super().__init__()
        self.summary = nn.Parameter(0.1 * torch.randn(cfg.d_model))
        queries = max(1, self.READ_VALUES // (cfg.n_layers * cfg.n_heads * cfg.head_v))
        self.readout = StateReadout(cfg, queries=queries)
        self.head = nn.Linear(cfg.d_model, n_outputs)

    def features(self, states: list[Tensor]) -> Tensor:
        """What the head reads: the static queries' reads of `states[l]` (B, H, K, V), as (B, d_model)."""
        summary = self.summary.expand(states[0].shape[0], -1)
        return F.gelu(self.readout(states, summary))

    def forward(self, states: list[Tensor]) -> Tensor:
        """`states[l]` (B, H, K, V) -> logits (B, n_outputs)."""
        return self.head(self.features(states))


class DomainModel(nn.Module):
    """Backbone plus a state decoder over the domain's labels and `[other]`: what a specialist is trained as."""

    def __init__(self, cfg: BackboneConfig, labels: Sequence[str], knowledge: Sequence[str] = ()) -> None:
        super().__init__()
        self.labels = [*labels, OTHER]
        self.backbone = Backbone(cfg, knowledge)
        self.decoder = StateDecoder(cfg, len(self.labels))

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.decoder(self.backbone(ids, mask).states)


class Specialist:
    """A frozen domain model. `extract_states(columns)` returns the per-layer (B, H, K, V) final states."""

    def __init__(self, name: str, model: DomainModel, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", trained_tables: frozenset[str] = frozenset()) -> None:
        self.name = name
        # The tables whose columns it was fine-tuned on: a primary learns to trust it only on others (honest fusion).
        self.trained_tables = trained_tables
        self.device = resolve_device(device)
        self.model = model.eval().requires_grad_(False).to(device=self.device, dtype=dtype)
        self.dtype = dtype
        self.tokenizer = ColumnEncoder(model.backbone.cfg.max_len)

    @property
    def config(self) -> BackboneConfig:
        return self.model.backbone.cfg

    @property
    def labels(self) -> list[str]:
        return self.model.labels[:-1]

    @torch.inference_mode()
    def extract_states(self, columns: Sequence[str], initial_states: Sequence[Tensor] | None = None
                       ) -> list[Tensor]:
        """States that this specialist's recurrence produced on the serialized columns, one (B,H,K,V) per layer;
        `initial_states` (one (B,H,K,V) per layer, e.g. another specialist's on the same columns) start it from
        there instead of from zero."""
        ids, mask = self.tokenizer(columns)
        initial = None if initial_states is None else [s.to(self.device) for s in initial_states]
        with autocast(self.device):
            return self.model.backbone(ids.to(self.device), mask.to(self.device), initial).states

    @torch.inference_mode()
    def predict(self, columns: Sequence[str]) -> Tensor:
        ids, mask = self.tokenizer(columns)
        with autocast(self.device):
            return self.model(ids.to(self.device), mask.to(self.device)).float().softmax(-1).cpu()

    def decoder_bytes(self) -> bytes:
        """The state decoder's weights as safetensors (float32): what a primary needs to read these states."""
        from safetensors.torch import save

        return save({k: v.detach().float().cpu().contiguous() for k, v in self.model.decoder.state_dict().items()})

    def save(self, directory: Path) -> None:
        save_dir(directory, self.name, self.model, self.trained_tables)

    @classmethod
    def load(cls, directory: Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
             ) -> Specialist:
        name, model = load_dir(Path(directory))
        return cls(name, model, dtype, device, trained_tables(Path(directory)))


def specialist_dir(path: Path, name: str) -> Path:
    """`path` when it is a specialist directory, else the one named `name` in it (a folder of specialists, as a
    SpecialistPool's `model` may be)."""
    path = Path(path)
    return path if SpecialistManifest.is_in(path) else path / name


def save_dir(directory: Path, name: str, model: DomainModel, trained_on: Collection[str] = ()) -> None:
    """`trained_on`: the tables whose columns the specialist was fine-tuned on (kept in specialist.json)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, directory / "model.safetensors")
    SpecialistManifest(name=name, config=model.backbone.cfg.name, labels=model.labels[:-1],
                       knowledge=list(model.backbone.knowledge), trained_tables=sorted(trained_on)).save(directory)


def trained_tables(directory: Path) -> frozenset[str]:
    """The tables a saved specialist records as its training data (empty for one saved before it recorded them)."""
    return frozenset(SpecialistManifest.load(directory).trained_tables)


def load_dir(directory: Path) -> tuple[str, DomainModel]:
    manifest = SpecialistManifest.load(directory)
    model = DomainModel(get_config(manifest.config), manifest.labels, manifest.knowledge)
    model.load_state_dict(load_file(directory / "model.safetensors"))
    return manifest.name, model


def untrained(name: str, config: str = "tiny", seed: int = 0) -> Specialist:
    """A specialist with freshly initialised weights over its domain: for tests and smoke runs only."""
    torch.manual_seed(seed)
    return Specialist(name, DomainModel(get_config(config), domains()[name].labels))
