"""Policy files: saved and loaded against the same primary they round-trip; any other primary (other specialists,
or the same specialists with other weights) is refused with a clear message; a directory without a policy is a
FileNotFoundError. Also the domain masks the policy reads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.orchestrator import (
    POLICY_FILE,
    POLICY_META,
    OrchestratorPolicy,
    domain_masks_for,
    primary_fingerprint,
)
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import domains
from swarm.model_server.model.tables import load_labels

NAMES = ["geographic", "temporal"]


def _primary(names: list[str], seed: int = 0) -> PrimaryModel:
    torch.manual_seed(seed)
    return PrimaryModel(get_config("tiny"), load_labels(), "gated", names).eval()


def _saved(tmp_path: Path, primary: PrimaryModel) -> tuple[Path, OrchestratorPolicy]:
    torch.manual_seed(5)
    policy = OrchestratorPolicy(primary.specialists, domain_masks_for(primary), primary.cfg.d_model, hidden=16,
                                max_deep=3)
    with torch.no_grad():
        policy.route_head.bias.copy_(torch.tensor([0.25, -0.75]))  # not the initial value: a real round trip
    directory = tmp_path / "policy"
    policy.save(directory, primary_fingerprint(primary), {"note": "test"})
    return directory, policy


def test_save_then_load_against_the_same_primary_round_trips(tmp_path: Path) -> None:
    primary = _primary(NAMES)
    directory, policy = _saved(tmp_path, primary)
    assert (directory / POLICY_FILE).is_file()
    meta = json.loads((directory / POLICY_META).read_text(encoding="utf-8"))
    assert meta["specialists"] == NAMES and meta["max_deep"] == 3 and meta["hidden"] == 16
    assert meta["primary"] == primary_fingerprint(primary) and meta["note"] == "test"

    loaded = OrchestratorPolicy.load(directory, _primary(NAMES))  # an identical primary, built again
    assert not loaded.training
    assert loaded.specialists == NAMES and loaded.max_deep == 3
    want, got = policy.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert loaded.route_head.bias.tolist() == [0.25, -0.75]


def test_a_primary_with_other_specialists_is_refused(tmp_path: Path) -> None:
    directory, _ = _saved(tmp_path, _primary(NAMES))
    with pytest.raises(ValueError, match=r"routes to \['geographic', 'temporal'\].*fuses \['geographic', 'numeric'\]"):
        OrchestratorPolicy.load(directory, _primary(["geographic", "numeric"]))
    with pytest.raises(ValueError, match="routes to"):  # same domains, other order: other agent slots
        OrchestratorPolicy.load(directory, _primary(["temporal", "geographic"]))


def test_a_primary_with_other_weights_is_refused(tmp_path: Path) -> None:
    primary = _primary(NAMES, seed=0)
    directory, _ = _saved(tmp_path, primary)
    other = _primary(NAMES, seed=1)
    assert primary_fingerprint(other) != primary_fingerprint(primary)
    with pytest.raises(ValueError, match=f"trained against primary {primary_fingerprint(primary)}, not this one "
                                         rf"\({primary_fingerprint(other)}\)"):
        OrchestratorPolicy.load(directory, other)


def test_the_fingerprint_follows_the_first_layer_weights() -> None:
    primary = _primary(NAMES)
    before = primary_fingerprint(primary)
    assert primary_fingerprint(_primary(NAMES)) == before  # deterministic
    with torch.no_grad():
        primary.backbone.layers[0].norm_mix.weight.add_(1e-3)
    assert primary_fingerprint(primary) != before


def test_missing_or_foreign_policy_files(tmp_path: Path) -> None:
    primary = _primary(NAMES)
    with pytest.raises(FileNotFoundError, match=f"{POLICY_META} missing"):
        OrchestratorPolicy.load(tmp_path, primary)
    directory, _ = _saved(tmp_path, primary)
    (directory / POLICY_META).unlink()
    with pytest.raises(FileNotFoundError, match="no orchestrator policy"):
        OrchestratorPolicy.load(directory, primary)
    (directory / POLICY_META).write_text(json.dumps({"kind": "primary"}), encoding="utf-8")
    with pytest.raises(ValueError, match="not an orchestrator policy"):
        OrchestratorPolicy.load(directory, primary)


def test_domain_masks_cover_each_specialists_labels() -> None:
    primary = _primary(NAMES)
    masks = domain_masks_for(primary)
    assert masks.shape == (2, len(primary.labels)) and masks.dtype == torch.bool
    for row, name in enumerate(NAMES):
        want = {label for label in domains()[name].labels if label in primary.labels}
        assert {primary.labels[i] for i in masks[row].nonzero().flatten().tolist()} == want
        assert want


def test_a_policy_needs_specialists_and_matching_masks() -> None:
    with pytest.raises(ValueError, match="at least one specialist"):
        OrchestratorPolicy([], torch.zeros(0, 3, dtype=torch.bool), d_model=4)
    with pytest.raises(ValueError, match=r"n_specialists=2"):
        OrchestratorPolicy(["a", "b"], torch.zeros(3, 3, dtype=torch.bool), d_model=4)
