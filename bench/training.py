"""Training throughput: tokens/s and columns/s of one optimizer step (forward, backward, AdamW) per config.

Real serialized columns from the SOTAB sample (or fixture-like text when it is absent), batch 32, the chunked
torch delta rule on CPU; on CUDA also the flash-linear-attention path, when installed, against the torch path.
Writes reports/bench_training.json and reports/bench_training.md.
Usage: .venv/bin/python bench/training.py [--configs tiny,small] [--steps 10] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from swarm.model_server.backbone import get_config
from swarm.model_server.delta_rule import fla_available
from swarm.model_server.primary import PrimaryModel
from swarm.model_server.text import ColumnTokenizer
from swarm.trainer.columns import build_examples
from swarm.trainer.reports import markdown_table, write_json
from swarm.trainer.sotab import load_dataset, load_labels

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sotab-v2-sample"


def column_texts(n: int) -> list[str]:
    if DATA.is_dir():
        texts = [e.text for e in build_examples([load_dataset(DATA)["training"]], load_labels())]
    else:
        texts = ["Berlin | Paris | Springfield [SEP] 2020-01-01 ; +49 30 123"] * n
    return (texts * (n // len(texts) + 1))[:n]


def measure(config: str, impl: str, device: str, steps: int, batch: int) -> dict:
    cfg = get_config(config)
    torch.manual_seed(0)
    model = PrimaryModel(cfg, load_labels()).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids, mask = ColumnTokenizer(cfg.max_len)(column_texts(batch))
    ids, mask = ids.to(device), mask.to(device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)

    def step() -> None:
        out = model.backbone(ids, mask, impl=impl)
        loss = torch.nn.functional.cross_entropy(model.head(out.pooled), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    tokens = int(mask.sum())
    return {"config": config, "impl": impl, "device": device, "batch": batch, "tokens_per_batch": tokens,
            "seconds_per_step": seconds, "tokens_per_s": tokens / seconds, "columns_per_s": batch / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    impls = ["chunked"] + (["fla"] if args.device == "cuda" and fla_available() else [])
    rows = [measure(c, impl, args.device, args.steps, args.batch)
            for c in args.configs.split(",") for impl in impls]
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}
    write_json(ROOT / "reports" / "bench_training.json", {"machine": machine, "rows": rows})
    table = markdown_table(["config", "path", "device", "tokens/batch", "s/step", "tokens/s", "columns/s"],
                           [[r["config"], r["impl"], r["device"], r["tokens_per_batch"], r["seconds_per_step"],
                             round(r["tokens_per_s"]), round(r["columns_per_s"], 1)] for r in rows])
    (ROOT / "reports" / "bench_training.md").write_text(
        f"# Training throughput\n\nMachine: {json.dumps(machine)}\n\n{table}", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
