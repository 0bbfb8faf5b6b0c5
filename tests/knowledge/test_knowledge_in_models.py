"""Knowledge inside the recurrence: a specialist's backbone adds its sources' vectors to every cell it reads, the
vectors are those of the sources for the cell's text, and the choice of sources survives saving and loading."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.cell_vectors import store
from swarm.model_server.model.column_encoder import N_SPECIAL, ColumnEncoder
from swarm.model_server.model.knowledge import SOURCES, KnowledgeRows, knowledge_dim, vectors
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import DomainModel, Specialist, domains, save_dir
from swarm.model_server.model.tables import load_labels
from swarm.model_server.model.text import serialize_column

COLUMN = serialize_column(["Berlin", "Paris", "Madrid"], [["DE", "FR", "ES"]])


def test_rows_are_the_sources_vectors_of_the_cells_text() -> None:
    ids, mask = ColumnEncoder(32)([COLUMN])
    rows = (ids[mask] - N_SPECIAL)
    rows = rows[rows >= 0]
    table = KnowledgeRows(("places", "time"))
    got = table.rows(rows)
    texts = store().texts(rows.tolist())
    expected = torch.cat([vectors("places", texts), vectors("time", texts)], dim=1)
    torch.testing.assert_close(got, expected)
    city = SOURCES["places"].features.index("city")
    assert got[texts.index("Berlin"), city] == 1.0  # the fact is there, not just a shape
    assert table.dim == knowledge_dim(("places", "time")) == expected.shape[1]


def test_rows_filled_during_inference_can_be_filled_during_training() -> None:
    table = KnowledgeRows(("money",))
    early, _ = ColumnEncoder(32)([serialize_column(["12.99 €", "5 USD"])])
    late, _ = ColumnEncoder(32)([serialize_column(["7,50 £", "EUR 3"])])  # higher row ids than `early`
    with torch.inference_mode():
        table.rows(late.clamp(min=N_SPECIAL) - N_SPECIAL)  # evaluation first (as a CV's predictions are)
    got = table.rows(early.clamp(min=N_SPECIAL) - N_SPECIAL)  # then training reads rows not filled yet
    assert got.shape == (*early.shape, table.dim) and not got.is_inference()


def test_unknown_source_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown knowledge source"):
        knowledge_dim(("places", "horoscopes"))


def test_a_specialist_reads_its_knowledge_and_keeps_it_on_disk(tmp_path: Path) -> None:
    domain = domains()["geographic"]
    assert domain.knowledge == ("places",)
    torch.manual_seed(0)
    model = DomainModel(get_config("tiny"), domain.labels, domain.knowledge).eval()
    ids, mask = ColumnEncoder(32)([COLUMN])
    before = model.backbone(ids, mask).states
    assert model.backbone.knowledge_proj is not None
    with torch.no_grad():
        model.backbone.knowledge_proj.weight.mul_(3.0)
    after = model.backbone(ids, mask).states
    # The knowledge enters the recurrence: the states a specialist hands over carry it.
    assert all(not torch.allclose(a, b) for a, b in zip(after, before, strict=True))

    save_dir(tmp_path / "geo", "geographic", model, {"T1"})
    loaded = Specialist.load(tmp_path / "geo")
    assert loaded.model.backbone.knowledge == ("places",) and loaded.trained_tables == frozenset({"T1"})
    torch.testing.assert_close(loaded.predict([COLUMN]), model(ids, mask).softmax(-1))


def test_the_primary_reads_no_knowledge_unless_asked() -> None:
    labels = load_labels()
    assert PrimaryModel(get_config("tiny"), labels).backbone.knowledge_proj is None
    control = PrimaryModel(get_config("tiny"), labels, knowledge=("places", "money"))
    again = PrimaryModel.from_meta(control.meta())
    assert again.backbone.knowledge == ("places", "money")
    again.load_state_dict(control.state_dict())
