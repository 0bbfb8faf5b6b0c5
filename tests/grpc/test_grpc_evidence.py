"""Evidence for the user: a specialist with knowledge sources says, per column, what they found, and the annotation
reply carries it for the columns that specialist's states were fused into (real specialist process on loopback)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from swarm.client import Annotator
from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.knowledge.evidence import MAX_COLUMN_EVIDENCE_CHARS, column_evidence
from swarm.model_server.model.specialist import DomainModel, domains, save_dir
from swarm.model_server.serving.launcher import start_local_swarm
from swarm.model_server.serving.primary_annotator import PrimaryAnnotator


def test_column_evidence_keeps_what_was_recognised() -> None:
    line = column_evidence(("places", "time"), ["Berlin", "Hamburg", "München"])
    assert line.startswith("places: 3/3 city") and "DE" in line and "time" not in line
    assert column_evidence(("places",), ["zzqx", "vvbn"]) == ""
    assert column_evidence((), ["Berlin"]) == ""
    assert len(column_evidence(("places", "time", "money"), ["Berlin 2020-01-01 12 €"] * 3)) <= \
        MAX_COLUMN_EVIDENCE_CHARS


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_reply_says_what_each_fused_specialists_sources_found(tmp_path: Path) -> None:
    domain = domains()["geographic"]
    torch.manual_seed(0)
    save_dir(tmp_path / "geographic", "geographic", DomainModel(get_config("tiny"), domain.labels, domain.knowledge))
    annotator = PrimaryAnnotator.untrained(["geographic"])
    with start_local_swarm([tmp_path / "geographic"], annotator=annotator, torch_threads=1, device="cpu") as swarm, \
            Annotator(swarm.annotation_address, timeout_s=120) as client:
        reply = client.annotate([["Berlin", "zzqx"], ["Hamburg", "vvbn"], ["Paris", "qqwp"]])
    city, noise = reply.columns
    assert city.specialists == ("geographic",) and len(city.evidence) == 1
    assert city.evidence[0].startswith("geographic: places: 3/3 city"), city.evidence
    assert noise.specialists == ("geographic",) and noise.evidence == ()  # nothing recognised: no line
