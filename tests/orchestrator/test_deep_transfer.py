"""A deep step's second specialist started from the first's states (trainer/experiments/deep_transfer): the chained
states are the second's recurrence from those states, and every variant the measurement compares is what the primary
answers when it fuses exactly those states."""
from __future__ import annotations

import pytest
import torch

from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import Specialist, untrained
from swarm.model_server.model.tables import load_labels
from swarm.trainer.data.columns import ColumnExample
from swarm.trainer.experiments.deep_transfer import VARIANTS, chained_states, deep_transfer, pair_correct
from swarm.trainer.training.state_sources import LocalSpecialists, cache_states, cached_inputs
from swarm.trainer.training.train import encode, predict

NAMES = ["geographic", "temporal", "numeric"]
TEXTS = ["Paris | Berlin | Rome", "2021-03-04 | 1999-12-31", "12.5 | 3 | 7.25", "Alice Smith | Bob Jones",
         "EUR 12 | USD 3", "Monday | Friday"]


@pytest.fixture(scope="module")
def specialists() -> list[Specialist]:
    return [untrained(name, seed=i) for i, name in enumerate(NAMES)]


@pytest.fixture(scope="module")
def primary(specialists: list[Specialist]) -> PrimaryModel:
    torch.manual_seed(0)
    model = PrimaryModel(get_config("tiny"), load_labels(), "gated", NAMES).eval()
    model.load_decoders(LocalSpecialists(specialists).decoders())
    return model


def _own(specialists: list[Specialist]) -> list[torch.Tensor]:
    source = LocalSpecialists(specialists)
    return [cache_states(source, s.name, TEXTS) for s in specialists]


def _examples() -> list[ColumnExample]:
    return [ColumnExample(text, i % 7, f"t{i // 2}", i % 2) for i, text in enumerate(TEXTS)]


def test_chained_states_start_the_second_recurrence_from_the_first(specialists: list[Specialist]) -> None:
    own = _own(specialists)
    from_zero = chained_states(specialists[1], TEXTS, torch.zeros_like(own[0]), batch_size=4)
    torch.testing.assert_close(from_zero, own[1], rtol=1e-5, atol=1e-5)  # a zero start is no start
    chained = chained_states(specialists[1], TEXTS, own[0], batch_size=4)
    assert chained.shape == own[1].shape
    assert not torch.allclose(chained, own[1], atol=1e-3)
    # one column at a time gives the same rows: each column starts from its own first states
    single = torch.cat([chained_states(specialists[1], [t], own[0][i:i + 1]) for i, t in enumerate(TEXTS)])
    torch.testing.assert_close(single, chained, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="5 rows of first-specialist states for 6 columns"):
        chained_states(specialists[1], TEXTS, own[0][:5])


def test_each_variant_is_the_primary_with_exactly_those_states(specialists: list[Specialist],
                                                               primary: PrimaryModel) -> None:
    examples = _examples()
    own = _own(specialists)
    got = pair_correct(primary, examples, own, specialists)
    assert set(got) == set(VARIANTS)
    assert all(v.shape == (6, len(TEXTS)) for v in got.values())  # 3·2 ordered pairs
    data = encode(TEXTS, [e.label for e in examples], ColumnEncoder(primary.cfg.max_len))

    def right(stack: list[torch.Tensor], agents: list[int]) -> torch.Tensor:
        return predict(primary, data, cached_inputs(stack, agents=agents)).argmax(-1) == data.labels

    row = 3  # pairs in permutation order: (0,1) (0,2) (1,0) (1,2) (2,0) (2,1)
    i, j = 1, 2
    chained = list(own)
    chained[j] = chained_states(specialists[j], TEXTS, own[i])
    assert torch.equal(got["first"][row], right(own, [i]))
    assert torch.equal(got["second"][row], right(own, [j]))
    assert torch.equal(got["union"][row], right(own, [i, j]))
    assert torch.equal(got["chained"][row], right(chained, [i, j]))
    assert torch.equal(got["handoff"][row], right(chained, [j]))


def test_deep_transfer_pools_folds_in_example_order(specialists: list[Specialist], primary: PrimaryModel) -> None:
    examples = _examples()
    own = _own(specialists)
    folds = [[0, 1, 4], [2, 3, 5]]
    states = {s.name: c for s, c in zip(specialists, own, strict=True)}
    result = deep_transfer([primary, primary], examples, folds, states, specialists)
    whole = pair_correct(primary, examples, own, specialists)
    for variant in VARIANTS:
        assert result[variant] == pytest.approx(float(whole[variant].float().mean()), abs=1e-6)
