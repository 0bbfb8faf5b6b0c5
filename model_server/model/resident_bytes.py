"""Memory accounting: what a frozen specialist keeps resident, in bytes.

These figures feed the operator's spawn budget: `swarm memory` prints a specialist's resident bytes (weights, one
batch of activations and its knowledge sources' data), which go into a SpecialistPool's `residentBytes` (the
operator otherwise estimates from a parameter count).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from swarm.model_server.model.backbone import BackboneConfig


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def tensor_bytes(module: nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of every parameter and buffer (the frozen embedding table included), optionally as `dtype`."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * (dtype_bytes(dtype) if dtype is not None else t.element_size()) for t in tensors)


def state_bytes(cfg: BackboneConfig, batch: int, dtype: torch.dtype) -> int:
    """The per-layer (B, H, K, V) states one forward pass hands out."""
    return cfg.n_layers * batch * cfg.n_heads * cfg.head_k * cfg.head_v * dtype_bytes(dtype)


def inference_activation_bytes(cfg: BackboneConfig, batch: int, seq_len: int, dtype: torch.dtype) -> int:
    """Upper estimate of inference activations: the states of every layer, plus one layer's transient tensors
    (hidden, q/k/v, gates, MLP) alive at once, plus the chunked delta rule's per-chunk (64 x 64) matrices."""
    width = (cfg.d_model * 3 + cfg.n_heads * (2 * cfg.head_k + 3 * cfg.head_v) + 3 * cfg.mlp_hidden)
    chunk = 64
    per_layer = batch * seq_len * width + batch * cfg.n_heads * seq_len * (3 * chunk + cfg.head_k + cfg.head_v)
    return state_bytes(cfg, batch, dtype) + per_layer * max(dtype_bytes(dtype), 4)


@dataclass(frozen=True)
class ResidentEstimate:
    weights: int
    activations: int
    knowledge: int = 0  # host memory of the knowledge sources it reads (model_server/model/knowledge)

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.knowledge

    def to_dict(self) -> dict[str, int]:
        return asdict(self) | {"total": self.total}


def knowledge_resident_bytes(sources: Sequence[str]) -> int:
    """What loading these knowledge sources keeps resident in this process (each source's larger of its Python
    allocations and its RSS delta; a package two of them share counts once). Loads them: call it in a process
    that has not loaded them yet, as `swarm memory` does."""
    from swarm.model_server.model.knowledge import load_measured

    total = 0
    for name in sources:
        measured = load_measured(name)
        if measured is None:
            raise RuntimeError(f"knowledge source {name!r} was already loaded: its memory cannot be measured here")
        total += max(measured.traced, measured.rss_delta)
    return total


def specialist_resident_bytes(model: nn.Module, cfg: BackboneConfig, dtype: torch.dtype, batch: int,
                              seq_len: int | None = None, knowledge: Sequence[str] = ()) -> ResidentEstimate:
    """A frozen specialist (its whole model: backbone, readout, head): weights in `dtype`, no grads, no
    optimizer state, plus activations for one batch, plus the knowledge sources it reads (measured by loading
    them here)."""
    return ResidentEstimate(weights=tensor_bytes(model, dtype),
                            activations=inference_activation_bytes(cfg, batch, seq_len or cfg.max_len, dtype),
                            knowledge=knowledge_resident_bytes(knowledge))

