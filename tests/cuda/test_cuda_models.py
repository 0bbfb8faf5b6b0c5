"""The models on CUDA agree with the same weights on CPU: the backbone (fla on CUDA, the chunked torch path on CPU)
and a fused primary, whose fusion must go through the Triton kernels on CUDA (the torch reference on CPU).

The model modules are imported inside the tests: collecting this file on a CPU machine (where every test here is
skipped) then never depends on them.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from cuda_helpers import assert_close_rel

from swarm.model_server.model import delta_rule as dr

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")
TEXTS = [  # serialized columns of different lengths: right padding in every batch row but the longest
    "Berlin | Paris | Springfield | Lyon | Kyoto [SEP] 2020-01-01 ; +49 30 123",
    "12.5 kg | 3 kg | 0.25 kg",
    "Monday, 3 March 2014 | 2014-03-04 | 5 Mar 2014 [SEP] Concert ; Opera ; Theatre | Cinema",
    "Ada Lovelace | Alan Turing | Grace Hopper | Edsger Dijkstra | Barbara Liskov | Donald Knuth",
    "[empty]",
    "EUR 12,00 | USD 9.99 | 1 200 JPY [SEP] Widget ; Gadget",
]
FP32_TOL = (1e-2, 5e-2)  # (rms, max) relative: fla's TF32 matmuls against float32 on CPU
BF16_TOL = (5e-2, 2.5e-1)  # bf16 autocast on CUDA against float32 on CPU


def _tokens(max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    from swarm.model_server.model.column_encoder import ColumnEncoder

    ids, mask = ColumnEncoder(max_len)(TEXTS)
    assert not mask.all(), "the batch should hold padding"
    return ids, mask


def _randomize_zero_parameters(model: torch.nn.Module) -> None:
    """Zero-initialised parts (readouts, state scales, belief weights, gate logits) would hide the paths under test."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.2)


def _spy(monkeypatch: pytest.MonkeyPatch, module, name: str) -> list:
    calls: list = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append([a.device.type if isinstance(a, torch.Tensor) else a for a in args[:1]])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("config", ["tiny", "small"])
def test_backbone_cuda_matches_cpu(fla_ready, monkeypatch: pytest.MonkeyPatch, config: str, with_state: bool) -> None:
    from swarm.model_server.model.backbone import Backbone, get_config

    cfg = get_config(config)
    cpu = Backbone(cfg).eval()
    gpu = copy.deepcopy(cpu).to(CUDA)
    ids, mask = _tokens(cfg.max_len)
    shape = (len(TEXTS), cfg.n_heads, cfg.head_k, cfg.head_v)
    init = [0.3 * torch.randn(shape) for _ in range(cfg.n_layers)] if with_state else None
    calls = _spy(monkeypatch, dr, "fla")
    with torch.no_grad():
        want = cpu(ids, mask, init)
        assert not calls, "the CPU backbone must take the chunked path"
        got = gpu(ids.to(CUDA), mask.to(CUDA), None if init is None else [s.to(CUDA) for s in init])
    assert len(calls) == cfg.n_layers, "the CUDA backbone must take the fla path"
    assert_close_rel("hidden (real tokens)", got.hidden[mask.to(CUDA)], want.hidden[mask], *FP32_TOL)
    assert_close_rel("pooled", got.pooled, want.pooled, *FP32_TOL)
    for layer, (s_got, s_want) in enumerate(zip(got.states, want.states, strict=True)):
        assert_close_rel(f"state {layer}", s_got, s_want, *FP32_TOL)


def test_backbone_trains_under_bf16_autocast(fla_backward_ready, monkeypatch: pytest.MonkeyPatch) -> None:
    """The training step's precision on CUDA: bf16 autocast, fla fed one bf16 dtype, gradients close to CPU's."""
    from swarm.model_server.model.backbone import Backbone, get_config
    from swarm.model_server.model.devices import autocast

    cfg = get_config("small")
    cpu = Backbone(cfg).train()
    gpu = copy.deepcopy(cpu).to(CUDA)
    ids, mask = _tokens(cfg.max_len)
    dtypes = []
    real = dr.fla

    def spy(q, k, v, *rest):
        dtypes.append(dr.fla_dtype(q, k, v))
        return real(q, k, v, *rest)

    monkeypatch.setattr(dr, "fla", spy)
    want = cpu(ids, mask)
    (want.pooled.square().mean() + sum(s.square().mean() for s in want.states)).backward()
    with autocast(CUDA):
        got = gpu(ids.to(CUDA), mask.to(CUDA))
        loss = got.pooled.float().square().mean() + sum(s.float().square().mean() for s in got.states)
    loss.backward()
    assert dtypes == [torch.bfloat16] * cfg.n_layers
    assert_close_rel("pooled", got.pooled.float(), want.pooled, *BF16_TOL)
    for name, p in gpu.named_parameters():
        q = dict(cpu.named_parameters())[name]
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.startswith("layers.") and name.endswith(("qkv.weight", "mlp_in.weight")):
            assert_close_rel(f"grad {name}", p.grad, q.grad, 1e-1, 5e-1)


@pytest.mark.parametrize("mode", ["gated", "weighted_sum"])
def test_fused_primary_runs_the_triton_kernels_on_cuda(fla_ready, kernels, monkeypatch: pytest.MonkeyPatch,
                                                      mode: str) -> None:
    from swarm.model_server.model.backbone import get_config
    from swarm.model_server.model.primary import PrimaryModel
    from swarm.model_server.model.tables import load_labels

    cfg = get_config("tiny")
    cpu = PrimaryModel(cfg, load_labels(), mode, ["temporal", "numeric"]).eval()
    _randomize_zero_parameters(cpu)
    gpu = copy.deepcopy(cpu).to(CUDA)
    ids, mask = _tokens(cfg.max_len)
    shape = (2, len(TEXTS), cfg.n_heads, cfg.head_k, cfg.head_v)
    states = [torch.randn(shape) for _ in range(cfg.n_layers)]
    labels = torch.arange(len(TEXTS)) % len(cpu.labels)

    want = cpu(ids, mask, states, [0, 1])
    F.cross_entropy(want, labels).backward()

    entry = _spy(monkeypatch, kernels, "gated_triton" if mode == "gated" else "weighted_sum_triton")
    forward = _spy(monkeypatch, kernels, "fuse_forward")
    backward = _spy(monkeypatch, kernels, "fuse_backward")
    got = gpu(ids.to(CUDA), mask.to(CUDA), [s.to(CUDA) for s in states], [0, 1])
    assert len(entry) == len(forward) == cfg.n_layers, "the CUDA fusion must go through the Triton kernels"
    assert all(call == ["cuda"] for call in forward)
    assert_close_rel("logits", got, want, *FP32_TOL)

    F.cross_entropy(got, labels.to(CUDA)).backward()
    assert len(backward) == cfg.n_layers
    params = dict(cpu.named_parameters())
    for name, p in gpu.named_parameters():
        if name.startswith("fusion.") or name in ("state_scale", "belief_weight"):
            assert_close_rel(f"grad {name}", p.grad, params[name].grad, 3e-2, 1.5e-1)


def test_fused_primary_under_autocast_with_bf16_states(fla_ready, kernels, monkeypatch: pytest.MonkeyPatch) -> None:
    """As served on a GPU: bf16 specialist states, bf16 autocast; the kernels still run and agree with CPU fp32."""
    from swarm.model_server.model.backbone import get_config
    from swarm.model_server.model.devices import autocast
    from swarm.model_server.model.primary import PrimaryModel
    from swarm.model_server.model.tables import load_labels

    cfg = get_config("tiny")
    cpu = PrimaryModel(cfg, load_labels(), "gated", ["temporal", "numeric"]).eval()
    _randomize_zero_parameters(cpu)
    gpu = copy.deepcopy(cpu).to(CUDA)
    ids, mask = _tokens(cfg.max_len)
    states = [torch.randn(2, len(TEXTS), cfg.n_heads, cfg.head_k, cfg.head_v).bfloat16() for _ in range(cfg.n_layers)]
    with torch.no_grad():
        want = cpu(ids, mask, [s.float() for s in states], [0, 1])
        forward = _spy(monkeypatch, kernels, "fuse_forward")
        with autocast(CUDA):
            got = gpu(ids.to(CUDA), mask.to(CUDA), [s.to(CUDA) for s in states], [0, 1])
    assert len(forward) == cfg.n_layers
    assert_close_rel("logits", got.float(), want, *BF16_TOL)
