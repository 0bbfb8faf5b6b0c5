"""The typed manifests of a model directory (model_server/model/manifest.py): files written the old way (a literal
dict, json.dumps indent 2) load unchanged, what is written is byte for byte what the old writers wrote, and keys
this code does not know are kept."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.manifest import PRIMARY_MANIFEST, SPECIALIST_MANIFEST, PrimaryManifest, SpecialistManifest
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import DomainModel, domains, load_dir, save_dir, specialist_dir, trained_tables
from swarm.model_server.model.tables import load_labels
from swarm.model_server.model.weights import save_weights

# model.json as `swarm release` wrote it before the manifest was typed (PrimaryModel.meta() | {...}).
OLD_RELEASE = {
    "kind": "primary", "config": "tiny", "labels": ["Date", "Time", "Text"], "fusion_mode": "weighted_sum",
    "specialists": ["temporal", "geographic"], "knowledge": [],
    "majority_label": "Text", "train_columns": 12, "honest_fusion": True, "fusion_columns": 5,
    "agent_dropout": False, "release": "abc123",
    "specialist_dirs": ["../specialists/temporal", "../specialists/geographic"],
}
OLD_SPECIALIST = {"name": "temporal", "config": "tiny", "labels": ["Date", "Time"], "knowledge": [],
                  "trained_tables": ["a.json", "b.json"]}


def _write_old(path: Path, meta: dict) -> str:
    text = json.dumps(meta, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


def test_an_old_primary_manifest_loads_and_saves_back_byte_for_byte(tmp_path: Path) -> None:
    model_dir = tmp_path / "run" / "model"
    text = _write_old(model_dir / PRIMARY_MANIFEST, OLD_RELEASE)
    manifest = PrimaryManifest.load(model_dir)
    assert manifest.majority_label == "Text" and manifest.honest_fusion and manifest.release == "abc123"
    assert manifest.resolve_specialist_dirs(model_dir) == [(tmp_path / "run" / "specialists" / n).resolve()
                                                          for n in ("temporal", "geographic")]
    again = tmp_path / "again"
    manifest.save(again)
    assert (again / PRIMARY_MANIFEST).read_text(encoding="utf-8") == text


def test_a_primary_manifest_written_by_a_writer_is_what_the_old_writer_wrote(tmp_path: Path) -> None:
    model = PrimaryModel(get_config("tiny"), load_labels(), "weighted_sum", ["temporal", "geographic"])
    model_dir = tmp_path / "run" / "model"
    dirs = [tmp_path / "run" / "specialists" / n for n in ("temporal", "geographic")]
    manifest = PrimaryManifest.of(model.meta(), model_dir, dirs, majority_label="Text", train_columns=12,
                                  honest_fusion=True, fusion_columns=5, agent_dropout=False, release="abc123")
    save_weights(model_dir, model, manifest)
    old = model.meta() | {  # what trainer/release.py wrote before
        "majority_label": "Text", "train_columns": 12, "honest_fusion": True, "fusion_columns": 5,
        "agent_dropout": False, "release": "abc123", "specialist_dirs": [os.path.relpath(d, model_dir) for d in dirs]}
    assert (model_dir / PRIMARY_MANIFEST).read_text(encoding="utf-8") == json.dumps(old, indent=2)
    loaded, read = PrimaryModel.load(model_dir)
    assert read == manifest and loaded.specialists == ["temporal", "geographic"]
    assert read.resolve_specialist_dirs(model_dir) == [d.resolve() for d in dirs]


def test_only_the_given_keys_are_written_and_unknown_keys_are_kept(tmp_path: Path) -> None:
    # The bare meta (no training record) stays bare: nothing defaulted is added on save.
    model = PrimaryModel(get_config("tiny"), ["Date", "Text"])
    PrimaryManifest(**model.meta()).save(tmp_path / "bare")
    assert json.loads((tmp_path / "bare" / PRIMARY_MANIFEST).read_text()) == model.meta()
    # Older or newer files may carry keys this code does not know: accepted, kept, written back.
    _write_old(tmp_path / "newer" / PRIMARY_MANIFEST, model.meta() | {"trained_on": "x", "future": {"a": [1]}})
    manifest = PrimaryManifest.load(tmp_path / "newer")
    assert manifest.specialist_dirs == [] and manifest.majority_label is None
    manifest.save(tmp_path / "back")
    assert json.loads((tmp_path / "back" / PRIMARY_MANIFEST).read_text())["future"] == {"a": [1]}


def test_a_directory_that_is_not_a_primary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model.json"):
        PrimaryManifest.load(tmp_path)
    _write_old(tmp_path / PRIMARY_MANIFEST, {"kind": "orchestrator", "specialists": []})
    with pytest.raises(ValueError, match="not a primary model"):
        PrimaryManifest.load(tmp_path)


def test_an_old_specialist_manifest_loads_and_a_saved_one_is_byte_identical(tmp_path: Path) -> None:
    text = _write_old(tmp_path / "old" / SPECIALIST_MANIFEST, OLD_SPECIALIST)
    manifest = SpecialistManifest.load(tmp_path / "old")
    assert manifest.name == "temporal" and trained_tables(tmp_path / "old") == {"a.json", "b.json"}
    assert SpecialistManifest.is_in(tmp_path / "old") and not SpecialistManifest.is_in(tmp_path)
    assert specialist_dir(tmp_path / "old", "geo") == tmp_path / "old"
    manifest.save(tmp_path / "again")
    assert (tmp_path / "again" / SPECIALIST_MANIFEST).read_text(encoding="utf-8") == text
    # One saved before it recorded its tables.
    _write_old(tmp_path / "older" / SPECIALIST_MANIFEST, {k: v for k, v in OLD_SPECIALIST.items()
                                                           if k not in ("knowledge", "trained_tables")})
    assert trained_tables(tmp_path / "older") == frozenset()


def test_a_saved_specialist_writes_what_the_old_writer_wrote(tmp_path: Path) -> None:
    domain = domains()["temporal"]
    torch.manual_seed(0)
    model = DomainModel(get_config("tiny"), domain.labels, domain.knowledge)
    save_dir(tmp_path, "temporal", model, {"t2.json", "t1.json"})
    old = {"name": "temporal", "config": "tiny", "labels": model.labels[:-1], "knowledge": list(domain.knowledge),
           "trained_tables": ["t1.json", "t2.json"]}
    assert (tmp_path / SPECIALIST_MANIFEST).read_text(encoding="utf-8") == json.dumps(old, indent=2)
    name, loaded = load_dir(tmp_path)
    assert name == "temporal" and loaded.labels == model.labels
