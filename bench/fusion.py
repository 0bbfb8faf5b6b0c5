"""Benchmark of the state-fusion kernels: Triton vs torch eager vs torch.compile, forward and backward.

Shape: N agents (``--agents``, default 1, 3, 8), H=12, K=V=64, L=12 layers (a loop over layers, one timed call),
fp32 coefficients (what StateFusion passes); B=32 bf16 states on CPU, B=64 (base) bf16 and fp32 states on CUDA.
Achieved bandwidth counts the bytes a fused implementation must move: forward reads N states and writes one
output; backward reads dO and N states and writes N state gradients; ``fwd+bwd`` is both. On CUDA the coefficients
are counted too (read once per direction, their gradient written once: < 3% of the total); the kernel's fp32
per-row partial of the coefficient gradient is not. The same byte count is used for every implementation, so the
GB/s column is an effective bandwidth.

On CUDA: CUDA-event timing via ``triton.testing.do_bench`` (L2 flushed between runs), % of the card's peak memory
bandwidth (``--peak-tbps``, else derived from torch's device properties: 2 x memory clock x bus width, else
looked up by device name; the report says which), speedup over torch eager, and the goals (Triton at the largest
N: >= 80% of peak, >= 2x eager) printed PASS/FAIL (informational: only correctness sets the exit status).
Without a GPU: says so, checks the Triton kernels against the reference under ``TRITON_INTERPRET=1`` (correctness
only; interpreter timings mean nothing) and times torch eager on CPU for reference. Errors are max-norm relative
to the float64 reference on the same inputs: max|got - want| / max|want|; any above ``MAX_REL_ERR`` makes the run
exit 1. Writes ``bench_fusion.json`` and ``.md`` to ``--out-dir`` (default reports/).

    .venv/bin/python -m swarm.bench.fusion [--device cuda|cpu] [--quick] [--agents 1,3,8] [--dtypes bf16,fp32]
        [--peak-tbps 3.35] [--out-dir reports]
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
DIRECTIONS = ("forward", "backward", "fwd+bwd")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# bf16 output rounding is <= 2**-8 relative (2**-7 for the interpreter, which truncates); more means a bug.
MAX_REL_ERR = 2**-6
# Goals for the Triton kernels on a GPU, at the largest N measured.
GOAL_PCT_PEAK = 80.0
GOAL_SPEEDUP = 2.0
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
    dtype: str = "bf16"  # the states' dtype
    speedup_vs_eager: float | None = None


def peak_tbps(device_name: str) -> float | None:
    return next((tbps for key, tbps in PEAK_TBPS if key in device_name), None)


def useful_bytes(shape: Shape, n: int, direction: str, dtype: torch.dtype) -> int:
    """State bytes: forward N + 1 planes, backward 2N + 1, fwd+bwd both; per layer."""
    planes = {"forward": n + 1, "backward": 2 * n + 1, "fwd+bwd": 3 * n + 2}[direction]
    return shape.n_layers * planes * shape.plane_bytes(dtype)


def coef_bytes(shape: Shape, n: int, mode: str, direction: str) -> int:
    """fp32 coefficient bytes: read once per direction, their gradient written once in the backward; per layer."""
    per_layer = 4 * (shape.batch * shape.heads * n if mode == "weighted_sum" else n * shape.heads * shape.head_k)
    times = {"forward": 1, "backward": 2, "fwd+bwd": 3}[direction]
    return shape.n_layers * times * per_layer


def peak_bandwidth(override: float | None = None) -> tuple[float | None, str]:
    """(TB/s, where it came from) for CUDA device 0: --peak-tbps, else torch's device properties (memory clock x
    bus width, double data rate; torch >= 2.8 exposes them), else the PEAK_TBPS table by device name."""
    name = torch.cuda.get_device_name()
    table = peak_tbps(name)
    if override:
        return override, f"--peak-tbps {override}"
    props = torch.cuda.get_device_properties(0)
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        derived = 2 * clock_khz * 1e3 * bus_bits / 8 / 1e12
        source = (f"derived from torch.cuda.get_device_properties: 2 x {clock_khz / 1e3:.0f} MHz x {bus_bits}-bit "
                  f"bus = {derived:.2f} TB/s")
        if table:
            source += f" (name table for {name!r}: {table} TB/s)"
        return derived, source
    if table:
        return table, f"table entry for {name!r} (torch exposes no memory clock / bus width here)"
    return None, f"unknown for {name!r}: pass --peak-tbps"


def make_inputs(shape: Shape, n: int, mode: str, device: str, dtype: torch.dtype
                ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per layer: states (N,B,H,K,V), coefficient (fp32), grad of the output; drawn on `device` (on CPU a GPU run
    would spend seconds drawing its gigabyte of fp32 states)."""
    g = torch.Generator(device=device).manual_seed(n)
    layers = []
    for _ in range(shape.n_layers):
        s = torch.randn(n, shape.batch, shape.heads, shape.head_k, shape.head_v, generator=g, device=device)
        if mode == "weighted_sum":
            c = torch.softmax(torch.randn(shape.batch, shape.heads, n, generator=g, device=device), dim=-1)
        else:
            c = torch.rand(n, shape.heads, shape.head_k, generator=g, device=device)
        d_out = torch.randn(shape.batch, shape.heads, shape.head_k, shape.head_v, generator=g, device=device)
        layers.append((s.to(device, dtype), c.to(device), d_out.to(device, dtype)))
    return layers


def implementations(mode: str, compiled: bool) -> dict[str, dict[str, Callable]]:
    from swarm.model_server.model.fusion import reference as ref
    from swarm.model_server.model.fusion import triton_kernels as tk

    layout = tk.WEIGHTED if mode == "weighted_sum" else tk.GATED
    fwd_ref = ref.weighted_sum if mode == "weighted_sum" else ref.gated
    bwd_ref = ref.weighted_sum_backward if mode == "weighted_sum" else ref.gated_backward
    impls: dict[str, dict[str, Callable]] = {
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


def _flat(value) -> tuple:
    if isinstance(value, (tuple, list)):
        return tuple(x for item in value for x in _flat(item))
    return (value,)


def cuda_functions(impls: dict[str, dict[str, Callable]]) -> dict[str, dict[str, Callable]]:
    """Adds ``fwd+bwd`` (forward, then the backward of the same layer) to each implementation."""
    for fns in impls.values():
        fwd, bwd = fns["forward"], fns["backward"]
        fns["fwd+bwd"] = lambda s, c, d, fwd=fwd, bwd=bwd: (fwd(s, c, d), *bwd(s, c, d))
    return impls


def bench_cuda(shape: Shape, quick: bool, peak: float | None, agents=AGENTS, dtypes=("bf16", "fp32"),
               rows: list[Row] | None = None) -> list[Row]:
    """Rows are appended to `rows` as they are measured (an interrupted run keeps what it measured)."""
    from triton.testing import do_bench

    rows = [] if rows is None else rows
    for mode in MODES:
        impls = cuda_functions(implementations(mode, compiled=True))
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            for n in agents:
                layers = make_inputs(shape, n, mode, "cuda", dtype)
                # Truth: the reference in float64 on the same (rounded) inputs, first layer.
                exact = [tuple(x.double() for x in layers[0])]
                for direction in DIRECTIONS:
                    want = _flat(run_layers(impls["eager"][direction], exact)[0])
                    moved = useful_bytes(shape, n, direction, dtype) + coef_bytes(shape, n, mode, direction)
                    timed: list[tuple[Row, float]] = []
                    for impl, fns in impls.items():
                        fn = fns[direction]
                        err = rel_err(_flat(run_layers(fn, layers[:1])[0]), want)
                        ms = do_bench(
                            partial(run_layers, fn, layers),
                            warmup=10 if quick else 25,
                            rep=30 if quick else 100,
                            return_mode="median",
                        )
                        gbps = moved / (ms * 1e-3) / 1e9
                        pct = 100 * gbps / (peak * 1e3) if peak else None
                        timed.append((Row(mode, n, direction, impl, ms, gbps, pct, err, dtype=dtype_name), ms))
                    eager_ms = next(ms for r, ms in timed if r.impl == "eager")
                    for r, ms in timed:
                        r.speedup_vs_eager = eager_ms / ms
                        line = f"{mode:13s} {dtype_name} N={n} {direction:8s} {r.impl:8s} {r.ms:8.3f} ms "
                        line += f"{r.gbps:8.1f} GB/s" + (f" {r.pct_peak:5.1f}% peak" if r.pct_peak is not None else "")
                        print(f"{line} {r.speedup_vs_eager:5.2f}x eager  rel err {r.rel_err:.2e}", flush=True)
                    rows += [r for r, _ in timed]
    return rows


def goals(rows: list[Row]) -> list[str]:
    """PASS/FAIL lines for the Triton rows at the largest N: % of peak and speedup over eager."""
    triton_rows = [r for r in rows if r.impl == "triton" and r.ms is not None]
    if not triton_rows:
        return []
    top = max(r.n_agents for r in triton_rows)
    lines = []
    for r in (r for r in triton_rows if r.n_agents == top):
        ok_peak = r.pct_peak is not None and r.pct_peak >= GOAL_PCT_PEAK
        ok_speed = r.speedup_vs_eager is not None and r.speedup_vs_eager >= GOAL_SPEEDUP
        peak_text = f"{r.pct_peak:.1f}% of peak" if r.pct_peak is not None else "% of peak unknown"
        lines.append(
            f"{'PASS' if ok_peak and ok_speed else 'FAIL'} triton {r.mode} {r.dtype} N={r.n_agents} {r.direction}: "
            f"{peak_text} (goal >= {GOAL_PCT_PEAK:.0f}%: {'ok' if ok_peak else 'missed'}), "
            f"{r.speedup_vs_eager or 0:.2f}x eager (goal >= {GOAL_SPEEDUP:.0f}x: {'ok' if ok_speed else 'missed'})"
        )
    return lines


def bench_cpu(shape: Shape, quick: bool, agents=AGENTS) -> list[Row]:
    """Correctness of the Triton kernels under the interpreter (one layer) plus torch eager CPU timings."""
    from swarm.model_server.model.fusion import triton_kernels as tk

    if not tk.INTERPRETED:
        raise RuntimeError("CPU check needs TRITON_INTERPRET=1 set before triton kernels are imported")
    check_shape = Shape(1, 4 if quick else shape.batch, shape.heads, shape.head_k, shape.head_v)
    rows = []
    for mode in MODES:
        impls = implementations(mode, compiled=False)
        for n in agents:
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
        f"{r.impl} {r.mode} N={r.n_agents} {r.direction}{'' if r.dtype == 'bf16' else ' ' + r.dtype}: "
        f"rel err {r.rel_err:.2e}"
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
        "| mode | N | direction | impl | ms (12 layers) | GB/s | % peak | rel err | dtype | x eager | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.mode} | {r.n_agents} | {r.direction} | {r.impl} | {_fmt(r.ms, '.3f')} "
            f"| {_fmt(r.gbps, '.1f')} | {_fmt(r.pct_peak, '.1f')} | {_fmt(r.rel_err, '.1e')} "
            f"| {r.dtype} | {_fmt(r.speedup_vs_eager, '.2f')} | {'; '.join(r.notes)} |"
        )
    (out_dir / "bench_fusion.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir / 'bench_fusion.json'} and {out_dir / 'bench_fusion.md'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (and B=4 for the CPU check)")
    parser.add_argument("--agents", default=",".join(map(str, AGENTS)), help="numbers of agents N, comma-separated")
    parser.add_argument("--dtypes", default="bf16,fp32", help="state dtypes on CUDA (bf16, fp32); CPU: bf16")
    parser.add_argument("--batch", type=int, default=None, help="batch B (default: 64 on CUDA, 32 on CPU)")
    parser.add_argument("--peak-tbps", type=float, default=None, help="override the card's peak bandwidth")
    parser.add_argument("--out-dir", type=Path, default=REPORTS)
    args = parser.parse_args(argv)

    agents = tuple(int(n) for n in args.agents.split(","))
    dtypes = tuple(args.dtypes.split(","))
    if unknown := sorted(set(dtypes) - set(DTYPES)):
        parser.error(f"unknown dtypes {unknown}; choose from {sorted(DTYPES)}")
    cuda = torch.cuda.is_available()
    summary = []
    if args.device == "cuda" and not cuda:
        summary.append("--device cuda requested but no CUDA device is available; falling back to the CPU check")
    if args.device != "cpu" and cuda:
        os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, before triton_kernels is first imported
        name = torch.cuda.get_device_name()
        peak, peak_source = peak_bandwidth(args.peak_tbps)
        summary += [f"device: {name}", f"peak memory bandwidth: {peak:.2f} TB/s, {peak_source}" if peak else
                    f"peak memory bandwidth {peak_source}"]  # fmt: skip
        device, shape = "cuda", Shape(batch=args.batch or 64)
        dtype_text = " and ".join(f"{d} states" for d in dtypes)
        summary.append(f"goals for the Triton kernels at N={max(agents)}: >= {GOAL_PCT_PEAK:.0f}% of peak bandwidth, "
                       f">= {GOAL_SPEEDUP:.0f}x torch eager")
    else:
        # Before the kernels module is first imported: TRITON_INTERPRET is read when kernels are decorated.
        os.environ.setdefault("TRITON_INTERPRET", "1")
        name, peak, peak_source, device = "cpu", None, None, "cpu"
        shape, dtype_text = Shape(batch=args.batch or 32), "bf16 states"
        summary += [
            "no GPU: Triton kernels checked for correctness under TRITON_INTERPRET=1 (no kernel timings); "
            "torch eager CPU timings for reference; torch.compile not run",
        ]
    summary.append(
        f"shape: N in {list(agents)}, B={shape.batch}, H={shape.heads}, K=V={shape.head_k}, "
        f"L={shape.n_layers} layers (looped), {dtype_text}, fp32 coefficients; errors vs the float64 reference"
    )
    for line in summary:
        print(line, flush=True)
    rows: list[Row] = []
    interrupted = False
    try:
        if device == "cuda":
            bench_cuda(shape, args.quick, peak, agents, dtypes, rows=rows)
        else:
            rows = bench_cpu(shape, args.quick, agents)
    except KeyboardInterrupt:  # SIGINT, e.g. bench/gpu_check.sh's time budget: report what was measured
        interrupted = True
        summary.append(f"INTERRUPTED after {len(rows)} rows: partial results")
        print(summary[-1], flush=True)
    failed = failures(rows)
    verdict = "FAILED: " + "; ".join(failed) if failed else "every result within"
    summary.append(f"correctness: {verdict} (max rel err {MAX_REL_ERR:.1e})")
    print(summary[-1])
    goal_lines = goals(rows) if device == "cuda" else []
    if goal_lines:
        passed = sum(line.startswith("PASS") for line in goal_lines)
        summary.append(f"goals: {passed}/{len(goal_lines)} Triton rows at N={max(agents)} pass")
        summary += goal_lines
        print("\n".join(summary[-len(goal_lines) - 1:]))
    report = {
        "device": name,
        "peak_tbps": peak,
        "peak_source": peak_source,
        "quick": args.quick,
        "shape": asdict(shape),
        "summary": summary,
        "goals": goal_lines,
    }
    write_reports(report, rows, args.out_dir)
    return 1 if failed or interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
