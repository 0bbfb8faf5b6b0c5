"""`swarm demo` (`make demo`): the product's main job on the bundled data, end to end, in minutes.

1. `swarm release` on the training splits (trainer/release.py): five specialists on the expert tables, the primary
   with honest fusion, the orchestrator policy on held-out policy tables; reused when RUN_DIR already holds it;
2. the swarm is started on loopback as `swarm up` starts it (specialist processes streaming states over gRPC, the
   annotation API in front), and every validation table (never trained on) goes through `swarm.client`, one table
   per call;
3. the same model is scored in process on the same tables (same policy, same stages, no transport) and without its
   specialists (the primary alone: the same primary, no states fused), so the served score can be checked;
4. a short table is printed and reports/demo.{json,md,png} written (a user's own run: not committed); RUN_DIR is
   left ready for `swarm up --run-dir RUN_DIR`.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from swarm.model_server.model.manifest import PRIMARY_MANIFEST
from swarm.model_server.model.tables import Table
from swarm.model_server.serving.annotator import AnnotationResult, Routing, SpecialistStates, Stage
from swarm.trainer import reports
from swarm.trainer.data.sotab import load_dataset
from swarm.trainer.release import ReleaseConfig, build_release

if TYPE_CHECKING:
    from swarm.model_server.serving.primary_annotator import PrimaryAnnotator
    from swarm.trainer.training.state_sources import LocalSpecialists

DEMO_REPORT = "demo"
HELD_OUT_SPLIT = "validation"


class DemoConfig(BaseModel):
    """`swarm demo`: the release to build (or reuse) and the held-out split it is scored on."""

    release: ReleaseConfig
    # must not be one the release learnt from
    split: str = Field(HELD_OUT_SPLIT, description="The split annotated through the served swarm (never trained on).")
    reports_dir: Path = Field(Path("reports"), description="Where demo.json, demo.md and demo.png go.")


def served_primary(run_dir: Path) -> Path:
    """The primary a run directory serves: RUN_DIR/model (a release, `swarm demo`, `swarm train`)."""
    model_dir = Path(run_dir) / "model"
    if (model_dir / PRIMARY_MANIFEST).is_file():
        return model_dir
    raise FileNotFoundError(f"{run_dir}: no trained primary in {model_dir}; run `swarm release` (or `make demo`) "
                            "first")


def annotate_in_process(annotator: PrimaryAnnotator, specialists: LocalSpecialists, table: Table
                        ) -> AnnotationResult:
    """What the annotation server computes for one table, without transport: route, read each stage's states from
    the in-process specialists (LocalSpecialists), ask for deep stages, fuse and label."""
    from swarm.model_server.serving.annotation_server import merge_stage

    texts = annotator.serialize(table)
    states: SpecialistStates = {}
    merged: Routing = {}
    stages: list[Stage] = []
    stage = {name: cols for name, cols in annotator.route(table).items() if cols}
    while stage:
        delivered = {name: specialists.states(name, [texts[i] for i in cols]) for name, cols in stage.items()}
        merge_stage(states, merged, {}, stage, delivered, {})
        stages.append(Stage(stage, {name: 1 for name in stage}))
        stage = {name: cols for name, cols in annotator.next_stage(table, states, merged, stages).items() if cols}
    return annotator.annotate(table, states, merged, stages)


def run_demo(cfg: DemoConfig) -> dict:
    from swarm.client import Annotator
    from swarm.model_server.model.devices import resolve_device
    from swarm.model_server.serving.primary_annotator import PrimaryAnnotator
    from swarm.trainer.commands.annotation_run import annotation_endpoint, percentile, score_predictions, table_rows
    from swarm.trainer.training.state_sources import LocalSpecialists

    started = time.time()
    splits = load_dataset(cfg.release.data)
    if cfg.split not in splits:
        raise ValueError(f"{cfg.release.data}: no {cfg.split!r} split to annotate (found {sorted(splits)})")
    if cfg.split in cfg.release.splits:
        raise ValueError(f"the release learns from {cfg.split!r}: annotate a split it never saw")
    held_out = splits[cfg.split]
    release = build_release(cfg.release)
    model_dir = served_primary(cfg.release.run_dir)
    tables = list(held_out.tables.items())

    # In process: the same model, policy and stages, no transport; and the primary alone (no states fused).
    annotator = PrimaryAnnotator.load(model_dir, resolve_device(cfg.release.device))
    specialists = LocalSpecialists.from_dirs(annotator.manifest.resolve_specialist_dirs(model_dir), cfg.release.device)
    in_process: dict[tuple[str, int], str] = {}
    alone: dict[tuple[str, int], str] = {}
    for name, table in tqdm(tables, desc="in process", unit="table"):
        annotated = annotate_in_process(annotator, specialists, table)
        in_process |= {(name, j): label for j, label in enumerate(annotated.labels)}
        alone_result = annotator.annotate(table, {}, {})
        alone |= {(name, j): label for j, label in enumerate(alone_result.labels)}
    del specialists

    # Served: `swarm up`'s swarm on loopback, one table per call through the client.
    served: dict[tuple[str, int], str] = {}
    latencies: list[float] = []
    calls = columns = 0
    missing: set[str] = set()
    with annotation_endpoint(model_dir, device=cfg.release.device) as address, \
            Annotator(address, timeout_s=120) as client:
        client.annotate(table_rows(tables[0][1]))  # warm-up: first-call set-up is not a table's latency
        serve_start = time.perf_counter()
        for i, (name, table) in enumerate(tqdm(tables, desc="served (gRPC)", unit="table")):
            t0 = time.perf_counter()
            reply = client.annotate(table_rows(table), request_id=f"demo-{i}")
            latencies.append((time.perf_counter() - t0) * 1e3)
            served |= {(name, c.column): c.label for c in reply.columns}
            calls += sum(len(c.specialists) for c in reply.columns)
            columns += len(reply.columns)
            missing |= {m.name for m in reply.specialists_missing}
        serve_seconds = time.perf_counter() - serve_start

    scores = {"served": score_predictions(held_out, served), "in_process": score_predictions(held_out, in_process),
              "primary_alone": score_predictions(held_out, alone)}
    agree = sum(served[k] == in_process[k] for k in served) / max(1, len(served))
    result = {
        "data": str(cfg.release.data), "split": cfg.split, "tables": len(tables),
        "labelled_columns": sum(r.label is not None for r in held_out.columns),
        "release": release, "model_dir": str(model_dir),
        "scores": {k: {"micro_f1": s.micro_f1, "macro_f1": s.macro_f1} for k, s in scores.items()},
        "per_class_f1": {"served": scores["served"].per_class, "primary_alone": scores["primary_alone"].per_class},
        "served_agrees_with_in_process": agree,
        "specialists_per_column": calls / max(1, columns),
        "specialists_missing": sorted(missing),
        "tables_per_s": len(tables) / serve_seconds,
        "latency_p50_ms": statistics.median(latencies), "latency_p99_ms": percentile(latencies, 0.99),
        "seconds": round(time.time() - started, 1),
    }
    write_demo_reports(result, cfg.reports_dir)
    return result


def demo_markdown(result: dict) -> str:
    s = result["scores"]
    rows = [
        ["primary alone (same model, no specialists; in process)", s["primary_alone"]["micro_f1"],
         s["primary_alone"]["macro_f1"], "0", "", "", ""],
        ["swarm, in process", s["in_process"]["micro_f1"], s["in_process"]["macro_f1"], "", "", "", ""],
        ["**swarm, served over gRPC** (`swarm up`, `swarm.client`)", s["served"]["micro_f1"], s["served"]["macro_f1"],
         f"{result['specialists_per_column']:.2f}", f"{result['tables_per_s']:.1f}",
         f"{result['latency_p50_ms']:.0f}", f"{result['latency_p99_ms']:.0f}"],
    ]
    release = result["release"]
    return (
        f"{result['tables']} {result['split']} tables ({result['labelled_columns']} labelled columns) the swarm never "
        f"trained on, from `{result['data']}`; release: {len(release['specialists'])} specialists on "
        f"{release['tables']['expert']} expert tables, the primary on {release['columns']['primary']} columns "
        f"(fusion learnt on {release['columns']['fusion']} columns of {release['tables']['fusion']} tables the "
        f"specialists never saw), the policy on {release['columns']['policy']} columns of "
        f"{release['tables']['policy']} held-out tables.\n\n"
        + reports.markdown_table(["model", "micro-F1", "macro-F1", "specialists / column", "tables/s",
                                  "p50 ms", "p99 ms"], rows)
        + f"\nServed labels equal the in-process ones on {result['served_agrees_with_in_process']:.1%} of columns; "
        f"specialists missing: {', '.join(result['specialists_missing']) or 'none'}; one client, one table per call; "
        f"{result['seconds']:.0f} s in all.\n")


def write_demo_reports(result: dict, reports_dir: Path) -> None:
    reports.write_json(reports_dir / f"{DEMO_REPORT}.json", result)
    (reports_dir / f"{DEMO_REPORT}.md").write_text("# make demo\n\n" + demo_markdown(result), encoding="utf-8")
    _plot(result, reports_dir / f"{DEMO_REPORT}.png")


def _plot(result: dict, path: Path) -> None:
    """Per-class F1 of the served swarm against the primary alone, worst first for the primary alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    served, alone = result["per_class_f1"]["served"], result["per_class_f1"]["primary_alone"]
    labels = sorted(served, key=lambda c: (alone.get(c, 0.0), c))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.16 * len(labels)))
    ys = range(len(labels))
    ax.barh([y + 0.2 for y in ys], [alone.get(c, 0.0) for c in labels], height=0.4, label="primary alone")
    ax.barh([y - 0.2 for y in ys], [served[c] for c in labels], height=0.4, label="swarm, served")
    ax.set_yticks(list(ys), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.set_xlabel(f"F1 per class on {result['split']} (never trained on)")
    s = result["scores"]
    ax.set_title(f"micro-F1 {s['primary_alone']['micro_f1']:.3f} alone → {s['served']['micro_f1']:.3f} served swarm",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
