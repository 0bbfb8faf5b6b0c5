"""The cell-vector store (issue #29): bounded (LRU) in serving processes with held rows never evicted or reused,
the disk cache read lazily, no client data at rest unless a private directory is named (0700/0600), encoding
outside the lock (a cached lookup never waits for MiniLM; one encoding per text however many ask), and the
training store's behaviour kept (unbounded, stable ids, written to the shared cache). MiniLM is replaced by a
deterministic stand-in so that encodings can be counted and timed."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from swarm.model_server.model.cell_vectors import DIM, CellVectorStore, EncodingAbandoned, configure_serving, normalize
from swarm.model_server.serving.admission import encoding_cost

pytestmark = pytest.mark.timeout(60)


class FakeEncoder(CellVectorStore):
    """MiniLM stand-in: a unit vector per text derived from its hash, `delay_s` per text, every text counted."""

    def __init__(self, *args: object, delay_s: float = 0.0, gate: threading.Event | None = None,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.delay_s = delay_s
        self.gate = gate
        self.calls: list[list[str]] = []

    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay_s * len(texts))
        return torch.stack([vector(t) for t in texts]).half().float()


def vector(text: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(hash(text) % (2**31))
    return torch.nn.functional.normalize(torch.randn(DIM, generator=g), dim=0)


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_the_training_store_is_unbounded_stable_and_written_to_the_shared_cache(tmp_path: Path) -> None:
    first = FakeEncoder(tmp_path)
    ids = first.ids(["Berlin", " Berlin ", "Paris"])
    assert ids[0] == ids[1] != ids[2] and len(files(tmp_path)) == 2  # one shard: vectors and texts
    again = FakeEncoder(tmp_path)
    assert again.ids(["Paris", "Berlin"]) == [ids[2], ids[0]] and again.calls == []  # read, in shard order
    assert again.capacity is None


def test_a_serving_store_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    evicted: list[int] = []
    cells = FakeEncoder(None, write_dir=False)
    configure_serving(10, on_evict=[evicted.extend], target=cells)
    first = cells.ids([f"a{i}" for i in range(10)])
    cells.ids(["a0", "a1"])  # used again: now the most recent
    cells.ids([f"b{i}" for i in range(3)])
    assert len(cells) <= 10 and cells.evicted == len(evicted) > 0
    assert "a0" in cells._index and "a1" in cells._index and "a2" not in cells._index
    reused = set(evicted) & set(cells.ids([f"b{i}" for i in range(3)]))
    assert reused, "evicted rows are reused: memory stays bounded"
    assert all(cells.texts([row])[0] == text for text, row in cells._index.items())
    assert set(first[:2]) <= set(cells._index.values())


def test_held_rows_are_never_evicted_or_reused(tmp_path: Path) -> None:
    cells = FakeEncoder(None, write_dir=False)
    configure_serving(8, target=cells)
    with cells.hold([f"held{i}" for i in range(6)]) as held:
        table = cells.table(torch.device("cpu"))
        before = table[held.slots].clone()
        for round_ in range(5):  # far more than the capacity goes through the store meanwhile
            cells.ids([f"other{round_}-{i}" for i in range(8)])
        assert [cells.texts([row])[0] for row in held.slots] == [f"held{i}" for i in range(6)]
        torch.testing.assert_close(cells.table(torch.device("cpu"))[held.slots], before)
    cells.ids([f"late{i}" for i in range(8)])  # released: now they may go
    assert not all(f"held{i}" in cells._index for i in range(6))


def test_a_serving_store_writes_nothing_unless_given_a_private_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    trained = FakeEncoder(shared)
    trained.ids(["training cell"])  # the bundled/pre-computed cache a serving process reads
    written = files(shared)
    served = FakeEncoder(shared)
    configure_serving(100, target=served)
    served.ids(["a client's secret cell", "training cell"])
    assert files(shared) == written and served.calls == [["a client's secret cell"]]

    keep = tmp_path / "keep"
    kept = FakeEncoder(shared)
    configure_serving(100, keep_dir=keep, target=kept)
    kept.ids(["a client's kept cell"])
    assert stat.S_IMODE(keep.stat().st_mode) == 0o700
    assert files(keep) and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files(keep))
    assert files(shared) == written
    again = FakeEncoder(shared)
    configure_serving(100, keep_dir=keep, target=again)
    assert again.unseen(["a client's kept cell"]) == []  # the private directory is read back


def test_the_disk_cache_is_read_lazily_one_vector_at_a_time(tmp_path: Path) -> None:
    FakeEncoder(tmp_path).ids([f"cell {i}" for i in range(200)])
    served = FakeEncoder(tmp_path)
    configure_serving(1000, target=served)
    assert len(served) == 0  # nothing loaded until asked
    assert served.unseen(["cell 7", "new"]) == ["new"] and len(served) == 0  # indexed, still nothing loaded
    row = served.ids(["cell 7"])[0]
    assert len(served) == 1 and served.calls == []
    torch.testing.assert_close(served.table(torch.device("cpu"))[row].float(), vector("cell 7"), atol=1e-3, rtol=0)


def test_a_lookup_does_not_wait_for_an_encoding(tmp_path: Path) -> None:
    gate = threading.Event()
    cells = FakeEncoder(None, write_dir=False, gate=gate)
    configure_serving(1000, target=cells)
    gate.set()
    cells.ids(["cached"])
    gate.clear()
    slow = threading.Thread(target=cells.ids, args=(["novel"],))
    slow.start()
    while not cells.calls or cells.calls[-1] != ["novel"]:
        time.sleep(0.01)
    started = time.perf_counter()
    with cells.hold(["cached"]):  # while MiniLM is busy with another request's text
        pass
    assert time.perf_counter() - started < 0.5
    assert slow.is_alive()
    gate.set()
    slow.join(5)


def test_a_text_asked_for_by_many_is_encoded_once(tmp_path: Path) -> None:
    cells = FakeEncoder(None, write_dir=False, delay_s=0.05)
    configure_serving(1000, target=cells)
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append(cells.ids(["shared a", "shared b"])))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 4 and all(r == results[0] for r in results)
    assert sorted(t for call in cells.calls for t in call) == ["shared a", "shared b"]


def test_encoding_stops_when_the_caller_stops(tmp_path: Path) -> None:
    cells = FakeEncoder(None, write_dir=False, delay_s=0.01)
    configure_serving(1000, target=cells)
    deadline = time.monotonic() + 0.2
    with pytest.raises(EncodingAbandoned):
        cells.hold([f"long {i}" for i in range(400)], should_stop=lambda: time.monotonic() > deadline, chunk=8)
    encoded = sum(len(c) for c in cells.calls)
    assert encoded <= 0.2 / 0.01 + 2 * 8, f"{encoded} texts encoded for a caller that stopped"
    assert cells.stats()["held"] == 0


def test_sent_vectors_are_used_instead_of_encoding(tmp_path: Path) -> None:
    cells = FakeEncoder(None, write_dir=False)
    configure_serving(1000, target=cells)
    keys = [normalize("  Sent   cell "), "other sent"]
    vectors = torch.stack([vector("x"), vector("y")])
    with cells.hold(["Sent cell", "not sent"], (keys, vectors)) as held:
        assert held.encoded == 1 and cells.calls == [["not sent"]]
        torch.testing.assert_close(cells.table(torch.device("cpu"))[held.slots[0]].float(), vector("x"),
                                   atol=1e-3, rtol=0)
    assert "other sent" not in cells._index  # vectors of texts the request does not read are not kept


def test_encoding_is_priced_by_its_largest_batch_and_its_tokens() -> None:
    short = encoding_cost(["ab"] * 100, columns=5, batch=64)
    long = encoding_cost(["x" * 250] * 100, columns=5, batch=64)
    assert long.bytes > short.bytes and long.token_passes == 100 * 252 > short.token_passes == 100 * 4
    assert encoding_cost(["x" * 250] * 100, 5, batch=8).bytes < long.bytes  # smaller batches, less memory


def test_eviction_listeners_hear_outside_the_lock_before_rows_are_reused() -> None:
    """A listener may call back into the store (knowledge rows read texts under a lock of their own), and no row
    is handed to another text before every listener has heard of its eviction."""
    cells = FakeEncoder(None, write_dir=False)
    configure_serving(10, target=cells)
    heard: list[tuple[list[int], list[str]]] = []

    def listener(rows: list[int]) -> None:
        heard.append((list(rows), cells.texts(rows)))  # takes the store's lock: deadlocks if called under it

    cells.on_evict(listener)
    cells.ids([f"a{i}" for i in range(10)])
    cells.ids([f"b{i}" for i in range(5)])
    assert heard and all(texts == [""] * len(rows) for rows, texts in heard)  # evicted, not yet reused
    assert set(cells.ids([f"c{i}" for i in range(3)])) & {r for rows, _ in heard for r in rows}  # reused after
