"""Serving with a learnt orchestrator policy: the annotation API routes columns the way the policy says (wide
search), chains a further specialist for the columns it deepens (deep search), reports per column which specialists
were fused and how many deep steps it took, the table's critical steps and complexity; a specialist the policy picked
but that delivers nothing degrades to the primary's own answer; a policy trained for another primary is refused.

The policies here are untrained heads whose biases are set so that the plan is known in advance (one specialist,
then one more for every column): the test checks that serving follows the policy, not what a trained one learns.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import torch
from typer.testing import CliRunner

from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.manifest import PrimaryManifest
from swarm.model_server.model.orchestrator import OrchestratorPolicy, domain_masks_for, primary_fingerprint
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.tables import Table, load_labels
from swarm.model_server.model.weights import save_weights
from swarm.model_server.serving.annotation_server import AnnotationLimits, build_annotation_server, merge_stage
from swarm.model_server.serving.annotator import Stage
from swarm.model_server.serving.launcher import LocalSwarm
from swarm.model_server.serving.primary_annotator import NO_POLICY, PrimaryAnnotator
from swarm.model_server.serving.specialist_client import SpecialistClient
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

pytestmark = pytest.mark.timeout(180)

SPECIALISTS = ("temporal", "geographic", "numeric")  # the session swarm's (tests/grpc/conftest.py)

ROWS = [["2021-03-04", "Paris", "12.5 kg"], ["1999-12-31", "Rome", "3 kg"], ["2000-01-01", "Oslo", "7 kg"]]
FIRST, SECOND = "numeric", "temporal"  # the specialist the policy spawns, and the one it deepens with


def _primary(seed: int = 0, specialists: list[str] | None = None) -> PrimaryModel:
    torch.manual_seed(seed)
    return PrimaryModel(get_config("tiny"), load_labels(), "gated", specialists or list(SPECIALISTS)).eval()


def _policy(primary: PrimaryModel, deep: bool, everyone: bool = False) -> OrchestratorPolicy:
    """k = 1 (FIRST), every column routed to it; then SECOND for every column (if `deep`), or every remaining
    specialist at once (if `everyone`), then stop."""
    policy = OrchestratorPolicy(primary.specialists, domain_masks_for(primary), primary.cfg.d_model, max_deep=2)
    names = primary.specialists
    with torch.no_grad():
        for module in (policy.complexity_head, policy.route_head, policy.deep_head[-1]):
            module.weight.zero_()
        policy.complexity_head.bias.copy_(torch.tensor([0.0, 10.0] + [0.0] * (len(names) - 1)))
        policy.route_head.bias.copy_(torch.tensor([10.0 if n == FIRST else -10.0 for n in names]))
        stop = len(names) + 1  # after one action per specialist and "all of them"
        bias = torch.full((len(names) + 2,), -10.0)
        bias[stop] = 0.0
        if deep:
            bias[names.index(SECOND)] = 10.0
        if everyone:
            bias[len(names)] = 10.0
        policy.deep_head[-1].bias.copy_(bias)
    return policy.eval()


@pytest.fixture(scope="module")
def primary(swarm: LocalSwarm) -> PrimaryModel:
    return _primary(specialists=list(swarm.addresses))


@contextlib.contextmanager
def _serve(swarm: LocalSwarm, annotator: PrimaryAnnotator, client: SpecialistClient | None = None
           ) -> Iterator[apb_grpc.AnnotationServiceStub]:
    server = build_annotation_server(annotator, client or swarm.client,
                                     limits=AnnotationLimits(health_interval_s=0)).start()
    channel = grpc.insecure_channel(server.address)
    try:
        yield apb_grpc.AnnotationServiceStub(channel)
    finally:
        channel.close()
        server.stop(1.0)


def _table() -> apb.Table:
    return apb.Table(name="t", rows=[apb.Row(cells=row) for row in ROWS])


def test_wide_stage_follows_the_policy(swarm: LocalSwarm, primary: PrimaryModel) -> None:
    annotator = PrimaryAnnotator(primary, policy=_policy(primary, deep=False))
    with _serve(swarm, annotator) as stub:
        reply = stub.Annotate(_table(), timeout=60)
    assert [list(c.specialists) for c in reply.columns] == [[FIRST]] * 3
    assert [c.deep_steps for c in reply.columns] == [0, 0, 0]
    assert list(reply.specialists_used) == [FIRST]
    assert reply.deep_stages == 0
    assert reply.critical_steps == 2  # one stage: primary step + one specialist step
    assert reply.HasField("complexity")
    assert reply.complexity == pytest.approx(1 / len(primary.specialists), abs=1e-3)  # k = 1 of 3, with certainty


def test_deep_stage_chains_a_second_specialist(swarm: LocalSwarm, primary: PrimaryModel) -> None:
    annotator = PrimaryAnnotator(primary, policy=_policy(primary, deep=True))
    with _serve(swarm, annotator) as stub:
        reply = stub.Annotate(_table(), timeout=60)
    assert [list(c.specialists) for c in reply.columns] == [[FIRST, SECOND]] * 3  # in the order asked
    assert [c.deep_steps for c in reply.columns] == [1, 1, 1]
    assert reply.deep_stages == 1  # the second deep step stops: SECOND is used and the stop beats the rest
    assert reply.critical_steps == 4  # two stages of (primary + one specialist)
    assert sorted(reply.specialists_used) == sorted([FIRST, SECOND])


def test_a_deep_stage_can_ask_every_remaining_specialist_at_once(swarm: LocalSwarm, primary: PrimaryModel) -> None:
    annotator = PrimaryAnnotator(primary, policy=_policy(primary, deep=False, everyone=True))
    with _serve(swarm, annotator) as stub:
        reply = stub.Annotate(_table(), timeout=60)
    rest = [n for n in primary.specialists if n != FIRST]
    assert [list(c.specialists) for c in reply.columns] == [[FIRST, *rest]] * 3
    assert [c.deep_steps for c in reply.columns] == [1, 1, 1] and reply.deep_stages == 1
    assert reply.critical_steps == 4  # the remaining specialists run in parallel: one stage


def test_deep_search_respects_the_spawn_budget(swarm: LocalSwarm, primary: PrimaryModel) -> None:
    annotator = PrimaryAnnotator(primary, policy=_policy(primary, deep=True), budget=1)
    with _serve(swarm, annotator) as stub:
        reply = stub.Annotate(_table(), timeout=60)
    assert [list(c.specialists) for c in reply.columns] == [[FIRST]] * 3  # SECOND would be a second spawn
    assert reply.deep_stages == 0


def test_no_policy_routes_every_column_to_every_specialist(swarm: LocalSwarm, primary: PrimaryModel) -> None:
    with _serve(swarm, PrimaryAnnotator(primary)) as stub:
        reply = stub.Annotate(_table(), timeout=60)
    assert [sorted(c.specialists) for c in reply.columns] == [sorted(primary.specialists)] * 3
    assert not reply.HasField("complexity")


def test_a_lost_specialist_degrades_to_the_primarys_answer(primary: PrimaryModel) -> None:
    """The policy's only specialist is unreachable: every column gets the primary-alone label."""
    annotator = PrimaryAnnotator(primary, policy=_policy(primary, deep=False))
    alone = annotator.annotate(Table("t", tuple(zip(*ROWS, strict=True))), {}, {})
    client = SpecialistClient({FIRST: "127.0.0.1:1"}, timeout_s=5.0)
    try:
        server = build_annotation_server(annotator, client, limits=AnnotationLimits(health_interval_s=0)).start()
        with grpc.insecure_channel(server.address) as channel:
            reply = apb_grpc.AnnotationServiceStub(channel).Annotate(_table(), timeout=60)
        server.stop(1.0)
    finally:
        client.close()
    assert [c.label for c in reply.columns] == alone.labels
    assert [m.name for m in reply.specialists_missing] == [FIRST]
    assert [list(c.specialists) for c in reply.columns] == [[]] * 3
    assert reply.critical_steps == 1


def test_merge_stage_keeps_rows_aligned_with_columns() -> None:
    layer = [torch.arange(2.0)[:, None]]  # rows 0, 1
    states = {"a": layer}
    merged = {"a": [0, 2]}
    reasons: dict[str, str] = {}
    merge_stage(states, merged, reasons, {"a": [1], "b": [0]}, {"a": [torch.tensor([[7.0]])]}, {"b": "gone"})
    assert merged == {"a": [0, 2, 1], "b": [0]}
    assert states["a"][0].squeeze(-1).tolist() == [0.0, 1.0, 7.0]
    assert reasons == {"b": "gone"} and "b" not in states


def _save(primary: PrimaryModel, directory: Path, policy: OrchestratorPolicy) -> Path:
    model_dir = directory / "model"
    save_weights(model_dir, primary, PrimaryManifest(**primary.meta()))
    policy.save(model_dir / "orchestrator", primary_fingerprint(primary))
    return model_dir


def test_load_finds_the_policy_beside_the_primary(tmp_path: Path, primary: PrimaryModel) -> None:
    model_dir = _save(primary, tmp_path, _policy(primary, deep=False))
    assert PrimaryAnnotator.load(model_dir).policy is not None
    assert PrimaryAnnotator.load(model_dir, policy=NO_POLICY).policy is None


def test_a_policy_for_another_primary_is_refused(tmp_path: Path, primary: PrimaryModel) -> None:
    other = _primary(seed=1)
    model_dir = tmp_path / "model"
    save_weights(model_dir, other, PrimaryManifest(**other.meta()))
    _policy(primary, deep=False).save(tmp_path / "policy", primary_fingerprint(primary))
    with pytest.raises(ValueError, match="trained against primary"):
        PrimaryAnnotator.load(model_dir, policy=tmp_path / "policy")
    from swarm.trainer.commands.cli import _register_all, app

    _register_all()
    result = CliRunner().invoke(app, ["up", "--run-dir", str(tmp_path), "--policy", str(tmp_path / "policy"),
                                      "--port", "0"])
    assert result.exit_code != 0
    assert "trained against primary" in result.output


def test_one_table_runs_the_first_layer_once_and_the_primary_once_per_state_set() -> None:
    """route, next_stage (which stops here) and annotate of one table share the wide plan and the last fusion."""
    primary = _primary(specialists=list(SPECIALISTS))
    annotator = PrimaryAnnotator(primary, policy=_policy(primary, deep=False))
    calls = {"first_layer": 0, "forward": 0}
    first_layer, forward = primary.backbone.first_layer, primary.forward

    def counted(name: str, fn: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    primary.backbone.first_layer = counted("first_layer", first_layer)  # type: ignore[method-assign]
    primary.forward = counted("forward", forward)  # type: ignore[method-assign]
    table = Table("t", tuple(zip(*ROWS, strict=True)))
    routing = annotator.route(table)
    assert routing[FIRST] == [0, 1, 2]
    cfg = primary.cfg
    states = {FIRST: [torch.randn(3, cfg.n_heads, cfg.head_k, cfg.head_v) for _ in range(cfg.n_layers)]}
    stages = [Stage(routing, {FIRST: 1})]
    assert annotator.next_stage(table, states, routing, stages) == {}
    result = annotator.annotate(table, states, routing, stages)
    assert calls == {"first_layer": 1, "forward": 1}
    assert result.column_specialists == [[FIRST]] * 3 and result.complexity is not None
    # new states (another request's) are fused again
    annotator.annotate(table, {FIRST: [s.clone() for s in states[FIRST]]}, routing, stages)
    assert calls["forward"] == 2
    # told to forget, the same request is computed afresh (what a benchmark timing repeated calls needs)
    annotator.forget()
    annotator.annotate(table, states, routing, stages)
    assert calls == {"first_layer": 2, "forward": 3}
