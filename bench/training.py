"""Training throughput: tokens/s and columns/s of one optimizer step per config, path and device.

A step is what trainer/training/train.py does per batch: the primary's forward (backbone, state readout, head; with
`--fusion MODE` also the fusion of specialist states), cross-entropy, backward, gradient clipping and AdamW. Batches
are real serialized columns from the bundled SOTAB sample (data/sotab-v2-sample; fixture-like text when absent).

CPU: the chunked torch delta rule in float32. CUDA (`--device cuda`; `auto` picks it when a GPU is visible): under
bf16 autocast (model_server.model.devices.autocast), the chunked torch path and flash-linear-attention's kernels when
installed. `--fusion MODE` adds a fused primary per config and path: N untrained specialists (`--specialists N`,
the same config) read the batch once, their per-layer states stay cached on the device, and every step fuses them
(the Triton kernels on CUDA) into the primary's initial states. On CUDA the committed CPU figures
(reports/bench_training.json) are reported beside the new ones. Writes bench_training.json and .md to --out-dir.

    .venv/bin/python -m swarm.bench.training [--configs tiny,small] [--steps 10] [--device auto|cpu|cuda]
        [--fusion gated --specialists 3] [--fla-autotune lean] [--out-dir reports]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from swarm.model_server.choices import DEVICE_AUTO, FUSION_MODES
from swarm.model_server.model import backbone as backbone_module
from swarm.model_server.model import delta_rule
from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.devices import autocast, resolve_device
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import DomainModel, Specialist, domain_of, domains
from swarm.model_server.model.tables import load_labels
from swarm.trainer.data.columns import build_examples
from swarm.trainer.data.sotab import load_dataset
from swarm.trainer.reports import markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
DATA = ROOT / "data" / "sotab-v2-sample"


def column_texts(n: int) -> list[str]:
    if DATA.is_dir():
        texts = [e.text for e in build_examples([load_dataset(DATA)["training"]], load_labels())]
    else:
        texts = ["Berlin | Paris | Springfield [SEP] 2020-01-01 ; +49 30 123"] * n
    return (texts * (n // len(texts) + 1))[:n]


def specialist_names(n: int) -> list[str]:
    """n specialists: the domains in file order, then replicas (`temporal@1`) once every domain is taken."""
    names = list(domains())
    return [names[i % len(names)] + (f"@{i // len(names)}" if i >= len(names) else "") for i in range(n)]


@contextlib.contextmanager
def delta_rule_path(impl: str) -> Iterator[None]:
    """Every layer's recurrence through `impl` (PrimaryModel.forward leaves the backbone on `auto`)."""
    original = backbone_module.gated_delta_rule

    def forced(*args, **kwargs):
        kwargs["impl"] = impl
        return original(*args, **kwargs)

    backbone_module.gated_delta_rule = forced
    try:
        yield
    finally:
        backbone_module.gated_delta_rule = original


_STATES: dict[tuple, tuple[list[torch.Tensor], dict[str, dict[str, torch.Tensor]]]] = {}


def cached_specialist_states(cfg_name: str, names: list[str], texts: list[str], device: torch.device
                             ) -> tuple[list[torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Per layer (N, B, H, K, V) float32 states of N untrained specialists on `texts`, on `device`, and their
    decoders (what a fused primary reads the states with); computed once per config for every path timed."""
    key = (cfg_name, tuple(names), tuple(texts), str(device))
    if key not in _STATES:
        _STATES.clear()  # one config's specialists at a time on the device
        _STATES[key] = _specialist_states(cfg_name, names, texts, device)
    return _STATES[key]


def _specialist_states(cfg_name: str, names: list[str], texts: list[str], device: torch.device
                       ) -> tuple[list[torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    per_agent, decoders = [], {}
    for i, name in enumerate(names):
        torch.manual_seed(1000 + i)
        specialist = Specialist(name, DomainModel(get_config(cfg_name), domain_of(name).labels), device=device)
        per_agent.append([s.float() for s in specialist.extract_states(texts)])
        decoders[name] = {k: v.detach().clone() for k, v in specialist.model.decoder.state_dict().items()}
        del specialist
    layers = [torch.stack(layer).contiguous() for layer in zip(*per_agent, strict=True)]
    return layers, decoders


def measure(config: str, impl: str, device: torch.device, steps: int, batch: int, fusion: str | None = None,
            n_specialists: int = 0) -> dict:
    cfg = get_config(config)
    texts = column_texts(batch)
    names = specialist_names(n_specialists) if fusion else []
    agent_states, agent_ids = None, None
    setup_start = time.perf_counter()
    if fusion:
        agent_states, decoders = cached_specialist_states(config, names, texts, device)
        agent_ids = list(range(len(names)))
    torch.manual_seed(0)
    model = PrimaryModel(cfg, load_labels(), fusion, names).to(device).train()
    if fusion:
        model.load_decoders(decoders)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    ids, mask = ColumnEncoder(cfg.max_len)(texts)
    ids, mask = ids.to(device), mask.to(device)
    labels = (torch.arange(batch) % len(model.labels)).to(device)

    def step() -> None:
        with autocast(device):
            logits = model(ids, mask, agent_states, agent_ids)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with delta_rule_path(impl):
        step()  # warm-up: kernel compilation and autotuning, optimizer state
        sync()
        setup_s = time.perf_counter() - setup_start
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
    seconds = (time.perf_counter() - start) / steps
    tokens = int(mask.sum())
    row = {"config": config, "impl": impl, "fusion": fusion or "none", "specialists": len(names),
           "device": device.type, "precision": "bf16 autocast" if device.type == "cuda" else "float32",
           "batch": batch, "tokens_per_batch": tokens, "seconds_per_step": seconds,
           "tokens_per_s": tokens / seconds, "columns_per_s": batch / seconds, "warmup_s": setup_s}
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"{config:6s} {impl:8s} fusion={row['fusion']:12s} {seconds * 1e3:9.1f} ms/step "
          f"{row['tokens_per_s']:10.0f} tokens/s {row['columns_per_s']:8.1f} columns/s (warm-up {setup_s:.1f}s)",
          flush=True)
    return row


def committed_cpu_rows(path: Path) -> dict | None:
    """The CPU figures of a committed report (what a GPU run is compared with), or None."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rows = [r for r in report.get("rows", []) if r.get("device") == "cpu"]
    return {"source": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
            "machine": report.get("machine"), "rows": rows} if rows else None


def table(rows: list[dict]) -> str:
    return markdown_table(
        ["config", "path", "fusion", "device", "precision", "tokens/batch", "s/step", "tokens/s", "columns/s"],
        [[r["config"], r["impl"], r.get("fusion", "none"), r["device"], r.get("precision", "float32"),
          r["tokens_per_batch"], r["seconds_per_step"], round(r["tokens_per_s"]), round(r["columns_per_s"], 1)]
         for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", "--config", default="tiny,small", help="comma-separated model configs")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default=DEVICE_AUTO, help="auto (CUDA when visible), cpu, cuda, cuda:N")
    parser.add_argument("--impls", default=None,
                        help="delta-rule paths to time (default: chunked, plus fla on CUDA when installed)")
    parser.add_argument("--fusion", choices=FUSION_MODES, default=None,
                        help="also time a primary fusing cached specialist states with this mode")
    parser.add_argument("--specialists", type=int, default=3, help="specialists fused with --fusion")
    parser.add_argument("--fla-autotune", choices=("full", "lean"), default="full",
                        help="lean: a few configs per fla kernel (delta_rule.lean_fla_autotune), for time-boxed runs")
    parser.add_argument("--out-dir", type=Path, default=REPORTS)
    parser.add_argument("--compare", type=Path, default=REPORTS / "bench_training.json",
                        help="committed report whose CPU rows a CUDA run is shown beside")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    reference = committed_cpu_rows(args.compare) if device.type == "cuda" else None  # read before it is rewritten
    if args.fla_autotune == "lean":
        delta_rule.lean_fla_autotune()
    fla = device.type == "cuda" and delta_rule.fla_available() and delta_rule.fla_backward_ok()
    impls = args.impls.split(",") if args.impls else ["chunked"] + (["fla"] if fla else [])
    fusions = [None] + ([args.fusion] if args.fusion else [])
    rows: list[dict] = []
    interrupted = False
    try:
        for c in args.configs.split(","):
            for impl in impls:
                for fusion in fusions:
                    rows.append(measure(c, impl, device, args.steps, args.batch, fusion,
                                        args.specialists if fusion else 0))
    except KeyboardInterrupt:  # SIGINT, e.g. bench/gpu_check.sh's time budget: report what was measured
        interrupted = True
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__}
    notes = [f"INTERRUPTED after {len(rows)} rows: partial results"] if interrupted else []
    if device.type == "cuda":
        notes.append("bf16 autocast on CUDA (model_server.model.devices.autocast); weights and AdamW state float32")
        notes.append(f"fla autotuning: {args.fla_autotune}" if fla else
                     "fla not timed: not installed, or its backward refused on this GPU/Triton (fla #640)")
    if fusion_rows := [r for r in rows if r["fusion"] != "none"]:
        notes.append(f"fused rows: {fusion_rows[0]['specialists']} untrained specialists' states cached on the "
                     f"device, fused with {args.fusion} every step")
    payload = {"machine": machine, "settings": {"steps": args.steps, "batch": args.batch,
                                                "fla_autotune": args.fla_autotune}, "notes": notes, "rows": rows}
    if reference:
        payload["committed_cpu"] = reference
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / "bench_training.json", payload)
    text = f"# Training throughput\n\nMachine: {json.dumps(machine)}\n\n"
    text += "".join(f"- {n}\n" for n in notes) + ("\n" if notes else "") + table(rows)
    if reference:
        text += f"\nCommitted CPU figures ({reference['source']}, machine {json.dumps(reference['machine'])}):\n\n"
        text += table(reference["rows"])
        for r in rows:
            same = [c for c in reference["rows"] if c["config"] == r["config"]]
            if same and r["fusion"] == "none":
                text += (f"\n- {r['config']} {r['impl']}: {r['tokens_per_s'] / same[0]['tokens_per_s']:.1f}x the "
                         f"committed CPU tokens/s")
        text += "\n"
    (args.out_dir / "bench_training.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {args.out_dir / 'bench_training.json'} and {args.out_dir / 'bench_training.md'}")
    return 1 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
