"""Small SOTAB-format datasets that the tests write themselves (helpers; fixtures are in conftest.py)."""
from __future__ import annotations

import random
from pathlib import Path

from swarm.model_server.model.tables import Table
from swarm.trainer.data.sotab import ColumnRef, write_split

REAL_DATA = Path(__file__).resolve().parents[1] / "data" / "sotab-v2-sample"

_CITIES = ["Berlin", "Paris", "Springfield", "Madrid", "Rome", "Lisbon", "Vienna", "Oslo"]
_DATES = ["2020-07-10", "2019-01-02", "2021-12-31", "2018-05-05", "2022-03-14"]
_PHONES = ["+49 30 1234567", "(555) 123-4567", "+33 1 23 45 67 89", "020 7946 0958"]


def make_table(name: str, rng: random.Random, rows: int = 5) -> Table:
    cols = (
        tuple(rng.choice(_CITIES) for _ in range(rows)),
        tuple(rng.choice(_DATES) for _ in range(rows)),
        tuple(rng.choice(_PHONES) for _ in range(rows)),
    )
    return Table(name=name, columns=cols)


def write_fixture_split(root: Path, split: str, n_tables: int, seed: int) -> Path:
    rng = random.Random(seed)
    tables = [make_table(f"T{seed}_{i}.json.gz", rng) for i in range(n_tables)]
    refs = [ColumnRef(t.name, j, label) for t in tables
            for j, label in enumerate(["addressLocality", "Date", "telephone"])]
    write_split(root / split, tables, refs, f"sotab_v2_cta_{split}_set.csv")
    return root / split


DOMAIN_COLUMNS = {  # one label of each specialist domain, so that every specialist has columns to train on
    "addressLocality": ["Berlin", "Paris", "Springfield", "Madrid", "Rome", "Lisbon"],
    "Date": ["2020-07-10", "2019-01-02", "2021-12-31", "2018-05-05"],
    "telephone": ["+49 30 1234567", "(555) 123-4567", "+33 1 23 45 67 89", "020 7946 0958"],
    "Person/name": ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"],
    "Product/name": ["Blue Kettle 1.7 l", "Steel Fork Set", "Oak Desk Lamp", "Wool Scarf"],
    "weight": ["1.5 kg", "200 g", "3 lb", "12 oz"],
    "price": ["$12.99", "€8,50", "£3.20", "$199.00"],
    "Organization": ["Acme Corp", "Globex GmbH", "Initech Ltd", "Umbrella Inc."],
    "Book/name": ["Moby Dick", "War and Peace", "Dune", "Emma"],
}


def write_domain_split(root: Path, split: str, n_tables: int, seed: int) -> None:
    """`n_tables` tables of one column per DOMAIN_COLUMNS label (every specialist has columns to train on)."""
    rng = random.Random(seed)
    tables, refs = [], []
    for i in range(n_tables):
        name = f"S{seed}_{i}.json.gz"
        tables.append(Table(name, tuple(tuple(rng.choice(v) for _ in range(4)) for v in DOMAIN_COLUMNS.values())))
        refs += [ColumnRef(name, j, label) for j, label in enumerate(DOMAIN_COLUMNS)]
    write_split(root / split, tables, refs, f"sotab_v2_cta_{split}_set.csv")
