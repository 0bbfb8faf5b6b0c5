"""Benchmark of the state-fusion kernels: Triton vs torch eager vs torch.compile, forward and backward.

Shape: N in {1, 3, 8} agents, B=32, H=12, K=V=64, L=12 layers (a loop over layers), bf16 states and fp32
coefficients (what StateFusion passes). Achieved bandwidth counts the bytes a fused implementation must move:
forward reads N states and writes one output; backward reads dO and N states and writes N state gradients
(coefficients and their gradients are < 3% and not counted). The same byte count is used for every
implementation, so the GB/s column is an effective bandwidth.

On CUDA: CUDA-event timing via ``triton.testing.do_bench`` and % of the card's peak memory bandwidth
(looked up from the device name, or ``--peak-tbps``). Without a GPU: says so, checks the Triton kernels
against the reference under ``TRITON_INTERPRET=1`` (correctness only; interpreter timings mean nothing)
and times torch eager on CPU for reference. Errors are max-norm relative: max|got - want| / max|want|;
any above ``MAX_REL_ERR`` makes the run exit 1. Writes ``reports/bench_fusion.json`` and ``.md``.

    .venv/bin/python bench/fusion.py [--device cuda|cpu] [--quick] [--peak-tbps 3.35]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch

REPORTS = Path(__file__).resolve().parent.parent / "reports"
AGENTS = (1, 3, 8)
MODES = ("weighted_sum", "gated")
# bf16 output rounding is <= 2**-8 relative (2**-7 for the interpreter, which truncates); more means a bug.
MAX_REL_ERR = 2**-6
# Peak HBM/GDDR bandwidth in TB/s, matched as substrings of torch.cuda.get_device_name (first match wins).
PEAK_TBPS: tuple[tuple[str, float], ...] = (
    ("H200", 4.8),
    ("H100 PCIe", 2.0),
    ("H100 NVL", 3.9),
    ("H100", 3.35),
    ("A100-SXM4-80GB", 2.04),
    ("A100", 1.56),
    ("RTX 4090", 1.008),
    ("L40S", 0.864),
    ("L4", 0.3),
)


@dataclass
class Shape:
    n_layers: int = 12
    batch: int = 32
    heads: int = 12
    head_k: int = 64
    head_v: int = 64

    def plane_bytes(self, dtype: torch.dtype) -> int:
        return self.batch * self.heads * self.head_k * self.head_v * dtype.itemsize


@dataclass
class Row:
    mode: str
    n_agents: int
    direction: str  # "forward" | "backward"
    impl: str  # "triton" | "eager" | "compile" | "triton-interpreter"
    ms: float | None = None
    gbps: float | None = None
    pct_peak: float | None = None
    rel_err: float | None = None
    notes: list[str] = field(default_factory=list)


def peak_tbps(device_name: str) -> float | None:
    return next((tbps for key, tbps in PEAK_TBPS if key in device_name), None)


def useful_bytes(shape: Shape, n: int, direction: str, dtype: torch.dtype) -> int:
    planes = n + 1 if direction == "forward" else 2 * n + 1
    return shape.n_layers * planes * shape.plane_bytes(dtype)


def make_inputs(shape: Shape, n: int, mode: str, device: str, dtype: torch.dtype):
    """Per layer: states (N,B,H,K,V), coefficient (fp32), grad of the output."""
    g = torch.Generator(device="cpu").manual_seed(n)
    layers = []
    for _ in range(shape.n_layers):
        s = torch.randn(n, shape.batch, shape.heads, shape.head_k, shape.head_v, generator=g)
        if mode == "weighted_sum":
            c = torch.softmax(torch.randn(shape.batch, shape.heads, n, generator=g), dim=-1)
        else:
            c = torch.rand(n, shape.heads, shape.head_k, generator=g)
        d_out = torch.randn(shape.batch, shape.heads, shape.head_k, shape.head_v, generator=g)
        layers.append((s.to(device, dtype), c.to(device), d_out.to(device, dtype)))
    return layers


def implementations(mode: str, compiled: bool) -> dict[str, dict[str, Callable]]:
    from swarm.model_server.fusion import reference as ref
    from swarm.model_server.fusion import triton_kernels as tk

    layout = tk.WEIGHTED if mode == "weighted_sum" else tk.GATED
    fwd_ref = ref.weighted_sum if mode == "weighted_sum" else ref.gated
    bwd_ref = ref.weighted_sum_backward if mode == "weighted_sum" else ref.gated_backward
    impls = {
        "triton": {
            "forward": lambda s, c, _d: tk.fuse_forward(s, c, layout),
            "backward": lambda s, c, d: tk.fuse_backward(s, c, d, layout),
        },
        "eager": {"forward": lambda s, c, _d: fwd_ref(s, c), "backward": bwd_ref},
    }
    if compiled:
        fwd_c, bwd_c = torch.compile(fwd_ref, dynamic=False), torch.compile(bwd_ref, dynamic=False)
        impls["compile"] = {"forward": lambda s, c, _d: fwd_c(s, c), "backward": bwd_c}
    return impls


def rel_err(got, want) -> float:
    """Worst over outputs of max|got - want| / max|want| (bf16 rounding shows up as ~2**-8)."""
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    return max(
        ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()
        for a, b in zip(got, want, strict=True)
    )


def run_layers(fn: Callable, layers) -> list:
    return [fn(s, c, d) for s, c, d in layers]


def cpu_median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_cuda(shape: Shape, quick: bool, peak: float | None) -> list[Row]:
    from triton.testing import do_bench

    rows = []
    for mode in MODES:
        impls = implementations(mode, compiled=True)
        for n in AGENTS:
            layers = make_inputs(shape, n, mode, "cuda", torch.bfloat16)
            for direction in ("forward", "backward"):
                reference = run_layers(impls["eager"][direction], layers[:1])[0]
                for impl, fns in impls.items():
                    fn = fns[direction]
                    err = rel_err(run_layers(fn, layers[:1])[0], reference)
                    ms = do_bench(
                        partial(run_layers, fn, layers),
                        warmup=10 if quick else 25,
                        rep=30 if quick else 100,
                        return_mode="median",
                    )
                    gbps = useful_bytes(shape, n, direction, torch.bfloat16) / (ms * 1e-3) / 1e9
                    pct = 100 * gbps / (peak * 1e3) if peak else None
                    rows.append(Row(mode, n, direction, impl, ms, gbps, pct, err))
                    print(f"{mode:13s} N={n} {direction:8s} {impl:8s} {ms:8.3f} ms {gbps:8.1f} GB/s"
                          + (f" {pct:5.1f}% peak" if pct is not None else "") + f"  rel err {err:.2e}")  # fmt: skip
    return rows


def bench_cpu(shape: Shape, quick: bool) -> list[Row]:
    """Correctness of the Triton kernels under the interpreter (one layer) plus torch eager CPU timings."""
    from swarm.model_server.fusion import triton_kernels as tk

    if not tk.INTERPRETED:
        raise RuntimeError("CPU check needs TRITON_INTERPRET=1 set before triton kernels are imported")
    check_shape = Shape(1, 4 if quick else shape.batch, shape.heads, shape.head_k, shape.head_v)
    rows = []
    for mode in MODES:
        impls = implementations(mode, compiled=False)
        for n in AGENTS:
            one_layer = make_inputs(check_shape, n, mode, "cpu", torch.bfloat16)
            layers = make_inputs(shape, n, mode, "cpu", torch.bfloat16)
            for direction in ("forward", "backward"):
                # Truth: the reference in float64 on the same bf16-rounded inputs.
                exact = [(s.double(), c.double(), d.double()) for s, c, d in one_layer]
                want = run_layers(impls["eager"][direction], exact)[0]
                t0 = time.perf_counter()
                got = run_layers(impls["triton"][direction], one_layer)[0]
                wall = time.perf_counter() - t0
                err = rel_err(got, want)
                note = f"1 layer, B={check_shape.batch}; interpreter wall {wall:.1f}s (not a kernel timing)"
                rows.append(Row(mode, n, direction, "triton-interpreter", rel_err=err, notes=[note]))
                ms = cpu_median_ms(partial(run_layers, impls["eager"][direction], layers), 3 if quick else 10)
                gbps = useful_bytes(shape, n, direction, torch.bfloat16) / (ms * 1e-3) / 1e9
                eager_err = rel_err(run_layers(impls["eager"][direction], one_layer)[0], want)
                rows.append(Row(mode, n, direction, "eager", ms, gbps, rel_err=eager_err))
                print(f"{mode:13s} N={n} {direction:8s} triton-interp rel err {err:.2e} ({wall:5.1f}s) | "
                      f"eager CPU {ms:8.2f} ms {gbps:6.1f} GB/s rel err {eager_err:.2e}")  # fmt: skip
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def failures(rows: list[Row]) -> list[str]:
    return [
        f"{r.impl} {r.mode} N={r.n_agents} {r.direction}: rel err {r.rel_err:.2e}"
        for r in rows
        if r.rel_err is not None and r.rel_err > MAX_REL_ERR
    ]


def write_reports(report: dict, rows: list[Row], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    report["results"] = [asdict(r) for r in rows]
    (out_dir / "bench_fusion.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Fusion kernel benchmark",
        "",
        *(f"- {line}" for line in report["summary"]),
        "",
        "| mode | N | direction | impl | ms (12 layers) | GB/s | % peak | rel err | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.mode} | {r.n_agents} | {r.direction} | {r.impl} | {_fmt(r.ms, '.3f')} "
            f"| {_fmt(r.gbps, '.1f')} | {_fmt(r.pct_peak, '.1f')} | {_fmt(r.rel_err, '.1e')} "
            f"| {'; '.join(r.notes)} |"
        )
    (out_dir / "bench_fusion.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir / 'bench_fusion.json'} and {out_dir / 'bench_fusion.md'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (and B=4 for the CPU check)")
    parser.add_argument("--peak-tbps", type=float, default=None, help="override the card's peak bandwidth")
    parser.add_argument("--out-dir", type=Path, default=REPORTS)
    args = parser.parse_args(argv)

    shape = Shape()
    cuda = torch.cuda.is_available()
    summary = []
    if args.device == "cuda" and not cuda:
        summary.append("--device cuda requested but no CUDA device is available; falling back to the CPU check")
    if args.device != "cpu" and cuda:
        name = torch.cuda.get_device_name()
        peak = args.peak_tbps or peak_tbps(name)
        summary += [f"device: {name}", f"peak memory bandwidth: {peak} TB/s" if peak else
                    "peak memory bandwidth unknown for this card (pass --peak-tbps)"]  # fmt: skip
        device = "cuda"
    else:
        # Before the kernels module is first imported: TRITON_INTERPRET is read when kernels are decorated.
        os.environ.setdefault("TRITON_INTERPRET", "1")
        name, peak, device = "cpu", None, "cpu"
        summary += [
            "no GPU: Triton kernels checked for correctness under TRITON_INTERPRET=1 (no kernel timings); "
            "torch eager CPU timings for reference; torch.compile not run",
        ]
    summary.append(
        f"shape: N in {list(AGENTS)}, B={shape.batch}, H={shape.heads}, K=V={shape.head_k}, "
        f"L={shape.n_layers} layers (looped), bf16 states, fp32 coefficients; "
        "errors vs the float64 reference (CPU) / torch eager (GPU)"
    )
    for line in summary:
        print(line)
    rows = bench_cuda(shape, args.quick, peak) if device == "cuda" else bench_cpu(shape, args.quick)
    failed = failures(rows)
    verdict = "FAILED: " + "; ".join(failed) if failed else "every result within"
    summary.append(f"correctness: {verdict} (max rel err {MAX_REL_ERR:.1e})")
    print(summary[-1])
    report = {
        "device": name,
        "peak_tbps": peak,
        "quick": args.quick,
        "shape": asdict(shape),
        "summary": summary,
    }
    write_reports(report, rows, args.out_dir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
