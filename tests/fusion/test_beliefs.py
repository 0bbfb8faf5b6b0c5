"""Specialists' beliefs travel in their states: a specialist predicts from its final states alone, and a primary
holding its state decoder reads the same beliefs out of the states it receives (locally or over gRPC)."""
from __future__ import annotations

import math

import pytest
import torch

from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import Specialist, untrained
from swarm.model_server.model.tables import load_labels
from swarm.model_server.serving.grpc_runtime import MiB
from swarm.model_server.serving.specialist_client import SpecialistClient, SpecialistFailure
from swarm.model_server.serving.specialist_server import ServerOptions, build_specialist_server
from swarm.trainer.training.state_sources import LocalSpecialists, RemoteSpecialists, cached_inputs

COLUMNS = ["Paris | Berlin | Rome", "2021-03-04 | 1999-12-31", "12.5 | 3 | 7.25", "Alice Smith | Bob Jones"]
NAMES = ["geographic", "temporal"]


@pytest.fixture(scope="module")
def by_name() -> dict[str, Specialist]:
    return {name: untrained(name, seed=i) for i, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def specialists(by_name: dict[str, Specialist]) -> LocalSpecialists:
    return LocalSpecialists(list(by_name.values()))


def _primary() -> PrimaryModel:
    torch.manual_seed(0)
    return PrimaryModel(get_config("tiny"), load_labels(), "gated", NAMES).eval()


def test_the_primary_reads_each_specialists_beliefs_from_its_states(specialists: LocalSpecialists,
                                                                    by_name: dict[str, Specialist]) -> None:
    primary = _primary()
    primary.load_decoders(specialists.decoders())
    labels = primary.labels
    for agent, name in enumerate(NAMES):
        spec = by_name[name]
        expected = spec.predict(COLUMNS).log()
        beliefs = primary.beliefs(agent, specialists.states(name, COLUMNS))
        index = [labels.index(label) for label in spec.labels]
        torch.testing.assert_close(beliefs[:, index], expected[:, :-1], rtol=1e-5, atol=1e-5)
        outside = [i for i in range(len(labels)) if i not in index]
        torch.testing.assert_close(beliefs[:, outside],
                                   (expected[:, -1:] - math.log(len(outside))).expand(-1, len(outside)),
                                   rtol=1e-5, atol=1e-5)
        # Spread over all labels it is still one distribution.
        torch.testing.assert_close(beliefs.logsumexp(-1), torch.zeros(len(COLUMNS)), rtol=0, atol=1e-5)


def test_belief_weights_start_at_zero_and_learn(specialists: LocalSpecialists,
                                                by_name: dict[str, Specialist]) -> None:
    primary = _primary().train()
    primary.load_decoders(specialists.decoders())
    ids, mask = by_name["geographic"].tokenizer(COLUMNS)
    states = [torch.stack(layer) for layer in zip(*(specialists.states(n, COLUMNS) for n in NAMES), strict=True)]
    torch.nn.functional.cross_entropy(primary(ids, mask, states, [0, 1]), torch.tensor([0, 1, 2, 3])).backward()
    assert primary.belief_weight.grad is not None and primary.belief_weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in primary.decoders.parameters())  # the decoders stay frozen


def test_rows_with_the_agents_withheld_read_as_the_primary_alone(specialists: LocalSpecialists,
                                                                  by_name: dict[str, Specialist]) -> None:
    """Training withholds the specialists on the columns they were trained on (row_mask False): those rows must get
    exactly the primary-alone logits, the others exactly the fused ones, whatever the fusion parameters hold."""
    primary = _primary()
    primary.load_decoders(specialists.decoders())
    with torch.no_grad():  # away from the zero start, where fused and alone would agree anyway
        for p in (primary.state_scale, primary.belief_weight, primary.fused_readout.out.weight,
                  primary.fused_readout.out.bias):
            p.normal_(0, 0.5)
    ids, mask = by_name["geographic"].tokenizer(COLUMNS)
    states = [torch.stack(layer) for layer in zip(*(specialists.states(n, COLUMNS) for n in NAMES), strict=True)]
    alone = primary(ids, mask)
    fused = primary(ids, mask, states, [0, 1])
    assert not torch.allclose(alone, fused, atol=1e-3)
    row_mask = torch.tensor([True, False, True, False])
    mixed = primary(ids, mask, states, [0, 1], row_mask=row_mask)
    torch.testing.assert_close(mixed[row_mask], fused[row_mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[~row_mask], alone[~row_mask], rtol=1e-5, atol=1e-5)


def test_honest_inputs_withhold_the_agents_per_column() -> None:
    caches = [torch.randn(4, 2, 2, 3, 3), torch.randn(4, 2, 2, 3, 3)]
    extra = cached_inputs(caches, honest=[True, False, False, True])
    batch = extra([0, 1, 3])
    assert batch["row_mask"].tolist() == [True, False, True]
    torch.testing.assert_close(batch["agent_states"][0][1], caches[1][[0, 1, 3], 0])
    assert extra([1, 2]) == {}  # no column of the batch may read them: the batch runs as the primary alone
    with pytest.raises(ValueError, match="honest marks 3 columns but the states cover 4"):
        cached_inputs(caches, honest=[True, False, True])


def test_agent_dropout_draws_a_subset_per_batch_and_withholds_columns_per_row() -> None:
    caches = [torch.randn(64, 2, 2, 3, 3) for _ in range(3)]
    honest = [i % 4 != 0 for i in range(64)]  # every fourth column: a specialist's own training column
    extra = cached_inputs(caches, agent_dropout_seed=7, honest=honest)
    sizes, withheld, rows = set(), 0, 0
    for start in range(0, 64, 8):
        index = list(range(start, start + 8))
        batch = extra(index)
        again = extra(index)  # reproducible from the seed and the rows
        if not batch:
            assert again == {}
            continue
        assert again["agent_ids"] == batch["agent_ids"] and torch.equal(again["row_mask"], batch["row_mask"])
        sizes.add(len(batch["agent_ids"]))
        mask = batch["row_mask"]
        assert not mask[[i % 4 == 0 for i in index]].any()  # honest columns stay withheld
        withheld += int((~mask[[i % 4 != 0 for i in index]]).sum())
        rows += sum(i % 4 != 0 for i in index)
    assert len(sizes) > 1  # subsets of different sizes across batches
    assert 0 < withheld < rows  # some allowed columns withheld per row, not all


def test_a_primary_refuses_decoders_of_other_specialists(specialists: LocalSpecialists) -> None:
    with pytest.raises(ValueError, match="temporal"):
        _primary().load_decoders({"geographic": specialists.decoders()["geographic"]})
    with pytest.raises(ValueError, match="unknown specialist 'astrology'"):
        PrimaryModel(get_config("tiny"), load_labels(), "gated", ["astrology"])
    replicas = PrimaryModel(get_config("tiny"), load_labels(), "gated", ["temporal", "temporal@1"])
    assert len(replicas.decoders) == 2


@pytest.mark.timeout(90)
def test_remote_specialists_stream_their_decoders_in_chunks(specialists: LocalSpecialists,
                                                            by_name: dict[str, Specialist]) -> None:
    """Decoders larger than the servers' message limit arrive whole, in chunks under it."""
    limit = MiB // 4
    assert all(len(by_name[name].decoder_bytes()) > limit for name in NAMES)
    options = ServerOptions(max_message_bytes=limit, chunk_bytes=limit // 3)
    servers = {name: build_specialist_server(by_name[name], options=options).start() for name in NAMES}
    try:
        remote = RemoteSpecialists({name: server.address for name, server in servers.items()})
        try:
            fetched = remote.decoders()
        finally:
            remote.close()
    finally:
        for server in servers.values():
            server.stop(0)
    local = specialists.decoders()
    assert sorted(fetched) == sorted(NAMES)
    for name in NAMES:
        assert fetched[name].keys() == local[name].keys()
        for key, value in local[name].items():
            torch.testing.assert_close(fetched[name][key], value, rtol=0, atol=0)


class _StatesWithoutDecoder:
    """A state producer without a decoder, as the benchmark's synthetic-states server is."""

    name = "temporal"
    dtype = torch.float32

    def extract_states(self, columns: list[str]) -> list[torch.Tensor]:
        cfg = get_config("tiny")
        return [torch.zeros(len(columns), cfg.n_heads, cfg.head_k, cfg.head_v) for _ in range(cfg.n_layers)]


@pytest.mark.timeout(90)
def test_a_server_of_synthetic_states_has_no_decoder_to_train_with() -> None:
    server = build_specialist_server(_StatesWithoutDecoder()).start()
    remote = RemoteSpecialists({"temporal": server.address})
    client = SpecialistClient({"temporal": server.address})
    try:
        with pytest.raises(RuntimeError, match=r"\['temporal'\] have no state decoder"):
            remote.decoders()
        with pytest.raises(SpecialistFailure, match=r"FAILED_PRECONDITION: .* serves synthetic states"):
            client.decoder("temporal")
    finally:
        client.close()
        remote.close()
        server.stop(0)
        server.stop(0)


@pytest.mark.parametrize("agents", [[0], [1], [0, 1], [1, 0]], ids=["geo", "temporal", "both", "reversed"])
def test_the_batched_belief_decoding_matches_one_decoder_after_another(
        specialists: LocalSpecialists, agents: list[int]) -> None:
    """`belief_logits` (every agent's decoder in one batched op; heads of different widths padded) against the
    reference: sum over agents of belief_weight[agent] * beliefs(agent, its states); values and gradients."""
    primary = _primary()
    primary.load_decoders(specialists.decoders())
    assert primary.belief_weight is not None
    with torch.no_grad():
        primary.belief_weight.normal_(0, 1.0)
    per_agent = [specialists.states(NAMES[a], COLUMNS) for a in agents]
    states = [torch.stack(layer) for layer in zip(*per_agent, strict=True)]
    batched = primary.belief_logits(agents, states)
    reference = sum(primary.belief_weight[a] * primary.beliefs(a, s) for a, s in zip(agents, per_agent, strict=True))
    assert isinstance(reference, torch.Tensor)
    torch.testing.assert_close(batched, reference, rtol=1e-5, atol=1e-5)
    (grad_b,) = torch.autograd.grad(batched.square().sum(), primary.belief_weight)
    (grad_r,) = torch.autograd.grad(reference.square().sum(), primary.belief_weight)
    torch.testing.assert_close(grad_b, grad_r, rtol=1e-5, atol=1e-5)


def test_the_stacked_decoders_are_rebuilt_when_a_decoder_changes(specialists: LocalSpecialists) -> None:
    """Served primaries (inference mode) keep the decoders stacked between calls: a load or any other write to a
    decoder's weights must show in the next call."""
    primary = _primary()
    primary.load_decoders(specialists.decoders())
    assert primary.belief_weight is not None
    with torch.no_grad():
        primary.belief_weight.normal_(0, 1.0)
    per_agent = [specialists.states(name, COLUMNS) for name in NAMES]
    states = [torch.stack(layer) for layer in zip(*per_agent, strict=True)]

    def reference() -> torch.Tensor:
        return sum(primary.belief_weight[a] * primary.beliefs(a, s) for a, s in enumerate(per_agent))  # type: ignore[return-value, index]

    with torch.inference_mode():
        first = primary.belief_logits([0, 1], states)
        torch.testing.assert_close(first, reference(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(primary.belief_logits([1], [layer[1:] for layer in states]),
                                   primary.belief_weight[1] * primary.beliefs(1, per_agent[1]), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        primary.decoders[1].head.bias.add_(3.0 * torch.randn_like(primary.decoders[1].head.bias))
    with torch.inference_mode():
        second = primary.belief_logits([0, 1], states)
        assert not torch.allclose(first, second)
        torch.testing.assert_close(second, reference(), rtol=1e-5, atol=1e-5)
