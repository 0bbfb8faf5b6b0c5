"""The benchmarks, one module each (`swarm bench` runs them, each as `python -m swarm.bench.<name>`): every one
writes reports/bench_*.json and .md of the checkout it lives in and reads the bundled data there. Product code
never imports them; they import each other by package path (`swarm.bench.fusion`).

bench/gpu_check.sh and bench/gpu_kit.sh are the GPU machine's check and its offline kit, not modules.
"""
