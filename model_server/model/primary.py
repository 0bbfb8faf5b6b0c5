"""The primary: the trainable annotator that reads a column and classifies it into one of the SOTAB labels.

Specialist states reach it three ways, all zero-initialised so that a fused primary starts exactly as the primary
alone:
1. beliefs: each specialist's states are read by a frozen copy of that specialist's own state decoder (loaded with
   `load_decoders`), giving its log-probabilities over its domain's labels; they are added to the primary's logits
   with learnt per-(agent, label) weights. This is the path that carries most of what specialists know beyond the
   primary (see reports/fusion.md);
2. fused (StateFusion: weighted_sum, gated, concat_project) into each layer's initial state, scaled per layer and head;
3. the fused states are also read by a state readout beside the readout of the primary's own final states.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from swarm.model_server.model.backbone import Backbone, BackboneConfig, get_config
from swarm.model_server.model.manifest import PrimaryManifest
from swarm.model_server.model.readout import StateReadout
from swarm.model_server.model.specialist import StateDecoder, domain_of
from swarm.model_server.model.weights import WEIGHTS_FILE

# The belief weights start at zero; this gain is their learning-rate multiplier under Adam (whose steps are ~lr in
# parameter units), so that they reach weights of order 1 within a few hundred steps.
BELIEF_GAIN = 5.0


@dataclass(frozen=True)
class _StackedDecoders:
    """Every agent's frozen state decoder as stacked tensors (index 0: the agent)."""

    params: list[Tensor]  # the decoders' parameters they were built from, and their versions then
    versions: list[int]
    queries: Tensor  # (N, L, H, Q, K), normalized
    out_w: Tensor  # (N, d, L*H*Q*V)
    out_b: Tensor  # (N, d)
    head_w: Tensor  # (N, widest, d), zero-padded
    head_b: Tensor  # (N, widest), -inf-padded
    widths: list[int]


class PrimaryModel(nn.Module):
    def __init__(self, cfg: BackboneConfig, labels: Sequence[str], fusion_mode: str | None = None,
                 specialists: Sequence[str] = (), dropout: float = 0.1, knowledge: Sequence[str] = ()) -> None:
        super().__init__()
        self.labels = list(labels)
        self.specialists = list(specialists)
        self.fusion_mode = fusion_mode if specialists else None
        # The released primary reads no knowledge source (its specialists do); a primary reading them itself is the
        # accuracy report's control row.
        self.backbone = Backbone(cfg, knowledge)
        self.readout = StateReadout(cfg)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cfg.d_model, len(self.labels)))
        self.fusion: nn.Module | None = None
        self.fused_readout: StateReadout | None = None
        self.decoders = nn.ModuleList()
        self._belief_index: list[Tensor] = []
        self._stacked: _StackedDecoders | None = None
        # Zero at the start: a fused primary begins as the primary alone, its pre-trained features undisturbed,
        # and learns per layer and head how much of the specialists' memory to let in.
        self.state_scale: nn.Parameter | None = None
        self.belief_weight: nn.Parameter | None = None
        if self.fusion_mode:
            self.state_scale = nn.Parameter(torch.zeros(cfg.n_layers, cfg.n_heads))
            self.fused_readout = StateReadout(cfg)
            from swarm.model_server.model.fusion.module import StateFusion

            self.fusion = StateFusion(self.fusion_mode, n_agents=len(self.specialists), n_layers=cfg.n_layers,
                                      n_heads=cfg.n_heads, head_k=cfg.head_k, head_v=cfg.head_v,
                                      query_dim=cfg.d_model)
            self._init_beliefs(cfg)

    def _init_beliefs(self, cfg: BackboneConfig) -> None:
        index = {label: i for i, label in enumerate(self.labels)}
        for name in self.specialists:
            domain_labels = domain_of(name).labels
            self.decoders.append(StateDecoder(cfg, len(domain_labels) + 1).requires_grad_(False))
            self._belief_index.append(torch.tensor([index[label] for label in domain_labels]))
        self.belief_weight = nn.Parameter(torch.zeros(len(self.specialists), len(self.labels)))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> PrimaryModel:
        self._stacked = None  # a device or dtype move makes new parameter tensors
        return super()._apply(fn, recurse)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self._stacked = None  # `assign=True` replaces the parameters themselves
        return super().load_state_dict(*args, **kwargs)

    @property
    def cfg(self) -> BackboneConfig:
        return self.backbone.cfg

    def meta(self) -> dict:
        return {"kind": "primary", "config": self.cfg.name, "labels": self.labels,
                "fusion_mode": self.fusion_mode, "specialists": self.specialists,
                "knowledge": list(self.backbone.knowledge)}

    @classmethod
    def from_meta(cls, meta: dict) -> PrimaryModel:
        return cls(get_config(meta["config"]), meta["labels"], meta.get("fusion_mode"), meta.get("specialists", ()),
                   knowledge=meta.get("knowledge", ()))

    @classmethod
    def load(cls, model_dir: Path) -> tuple[PrimaryModel, PrimaryManifest]:
        """A trained primary (model.safetensors + model.json) in eval mode, with its manifest."""
        manifest = PrimaryManifest.load(Path(model_dir))
        model = cls.from_meta(manifest.model_dump())
        model.load_state_dict(load_file(Path(model_dir) / WEIGHTS_FILE))
        return model.eval(), manifest

    def load_decoders(self, decoders: Mapping[str, Mapping[str, Tensor]]) -> None:
        """Copy (frozen) the state decoder weights of the specialists this primary fuses, by specialist name
        (a StateSource's `decoders()`)."""
        missing = [name for name in self.specialists if name not in decoders]
        if missing:
            raise ValueError(f"no state decoder given for specialists {missing}")
        for decoder, name in zip(self.decoders, self.specialists, strict=True):
            decoder.load_state_dict(decoders[name])

    def beliefs(self, agent: int, states: list[Tensor]) -> Tensor:
        """Specialist `agent`'s log-probabilities spread over all labels (B, labels): its domain's labels get theirs,
        the others share its `[other]` probability evenly."""
        log_probs = self.decoders[agent]([s.float() for s in states]).log_softmax(-1)
        index = self._belief_index[agent].to(log_probs.device)
        outside = log_probs[:, -1:] - math.log(max(1, len(self.labels) - len(index)))
        spread = outside.expand(-1, len(self.labels)).clone()
        spread[:, index] = log_probs[:, :-1]
        return spread

    def _stacked_decoders(self) -> _StackedDecoders:
        """Every agent's decoder stacked for one batched op, kept while their weights stay the same (the decoders
        are frozen: rebuilt after a load, a device move, or an in-place write to their parameters)."""
        cached = self._stacked
        if (cached is not None and not torch.is_grad_enabled()
                and all(p._version == v for p, v in zip(cached.params, cached.versions, strict=True))):
            return cached
        decoders = [cast(StateDecoder, d) for d in self.decoders]
        params: list[Tensor] = [p for d in decoders for p in d.parameters()]
        first = decoders[0].readout
        summary = torch.stack([d.summary for d in decoders])
        query_w = torch.stack([d.readout.query.weight for d in decoders])
        query_b = torch.stack([d.readout.query.bias for d in decoders])
        # Each decoder's queries come from its own static summary vector: (N, L, H, Q, K).
        queries = torch.baddbmm(query_b[:, None], summary[:, None], query_w.transpose(1, 2))[:, 0]
        queries = F.normalize(queries.view(len(decoders), *first.shape), dim=-1)
        # Heads differ in width (a domain's labels + `[other]`): padded to the widest, the padding at -inf.
        widths = [d.head.out_features for d in decoders]
        head_w = summary.new_zeros(len(decoders), max(widths), summary.shape[-1])
        head_b = summary.new_full((len(decoders), max(widths)), float("-inf"))
        for i, d in enumerate(decoders):
            head_w[i, : widths[i]] = d.head.weight
            head_b[i, : widths[i]] = d.head.bias
        stacked = _StackedDecoders(
            params, [p._version for p in params], queries, torch.stack([d.readout.out.weight for d in decoders]),
            torch.stack([d.readout.out.bias for d in decoders]), head_w, head_b, widths,
        )
        if not torch.is_grad_enabled():  # a tensor built under autograd holds its graph: not kept
            self._stacked = stacked
        return stacked

    def belief_logits(self, agent_ids: Sequence[int], agent_states: list[Tensor]) -> Tensor:
        """sum over the agents of belief_weight[agent] * beliefs(agent, ...), (B, labels), with every agent's frozen
        decoder run in one batched op per step instead of one agent after another (`beliefs` is the reference it
        is tested against). `agent_states[l]` is (N, B, H, K, V), slot i holding agent `agent_ids[i]`."""
        assert self.belief_weight is not None
        every = self._stacked_decoders()
        agent_ids = list(agent_ids)
        if agent_ids == list(range(len(self.decoders))):
            queries, out_w, out_b, head_w, head_b = every.queries, every.out_w, every.out_b, every.head_w, every.head_b
        else:
            pick = torch.tensor(agent_ids, device=every.queries.device)
            queries, out_w, out_b, head_w, head_b = (
                t.index_select(0, pick) for t in (every.queries, every.out_w, every.out_b, every.head_w, every.head_b))
        widths = [every.widths[a] for a in agent_ids]
        states = torch.stack(agent_states, dim=2).float()  # (N, B, L, H, K, V)
        reads = torch.einsum("nlhqk,nblhkv->nblhqv", queries, states).flatten(2)  # (N, B, L*H*Q*V)
        features = F.gelu(torch.baddbmm(out_b[:, None], reads, out_w.transpose(1, 2)))  # (N, B, d)
        log_probs = torch.baddbmm(head_b[:, None], features, head_w.transpose(1, 2)).log_softmax(-1)
        n_labels = len(self.labels)
        total = features.new_zeros(features.shape[1], n_labels)
        for i, agent in enumerate(agent_ids):
            index = self._belief_index[agent].to(total.device)
            weight = self.belief_weight[agent]
            outside = log_probs[i, :, widths[i] - 1 : widths[i]] - math.log(max(1, n_labels - len(index)))
            # spread = outside everywhere, the domain's own log-probabilities on its labels; weighted and summed.
            total = total + outside * weight
            total = total.index_add(1, index, (log_probs[i, :, : widths[i] - 1] - outside) * weight[index])
        return total

    def fuse(self, ids: Tensor, mask: Tensor, agent_states: list[Tensor] | None,
             agent_ids: Sequence[int] | None, embedded: Tensor | None = None) -> list[Tensor] | None:
        """Fused per-layer (B, H, K, V) specialist states, or None when no specialist state is available.
        `embedded`: `backbone.embed(ids)` when already computed."""
        if self.fusion is None or agent_states is None or not agent_ids:
            return None
        weights = mask.to(torch.float32)[..., None]
        embedded = self.backbone.embed(ids) if embedded is None else embedded
        query = (embedded * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.fusion(agent_states, query, agent_ids=list(agent_ids))

    def forward(self, ids: Tensor, mask: Tensor, agent_states: list[Tensor] | None = None,
                agent_ids: Sequence[int] | None = None, row_mask: Tensor | None = None) -> Tensor:
        """Logits (B, labels). `agent_states[l]` is (N, B, H, K, V): layer l of the N agents in `agent_ids`.
        `row_mask` (B,) withholds the agents from the rows where it is False: those rows read as the primary alone
        (training withholds them on columns the specialists were trained on, whose beliefs are too good to trust)."""
        embedded = self.backbone.embed(ids)  # read by the fusion query and the backbone
        fused = self.fuse(ids, mask, agent_states, agent_ids, embedded)
        keep = None if fused is None or row_mask is None else row_mask.to(torch.float32)[:, None]  # (B, 1)
        if fused is not None and keep is not None:
            fused = [state * keep[..., None, None].to(state.dtype) for state in fused]
        initial: list[Tensor] | None = None
        if fused is not None:
            assert self.state_scale is not None  # fuse() returns states only when this primary fuses
            initial = [state * scale[None, :, None, None] for state, scale in zip(fused, self.state_scale, strict=True)]
        out = self.backbone(ids, mask, initial, embedded=embedded)
        features = out.pooled + self.readout(out.states, out.pooled)
        if fused is not None:
            assert self.fused_readout is not None
            read = self.fused_readout(fused, out.pooled)
            features = features + (read if keep is None else read * keep.to(read.dtype))
        logits = self.head(features)
        if fused is not None:
            assert self.belief_weight is not None and agent_states is not None and agent_ids is not None
            belief = self.belief_logits(agent_ids, agent_states).to(logits.dtype)
            if keep is not None:
                belief = belief * keep.to(belief.dtype)
            logits = logits + BELIEF_GAIN * belief
        return logits
