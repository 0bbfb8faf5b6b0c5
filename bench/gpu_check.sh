#!/usr/bin/env bash
# GPU check, run from the repo root on a machine with a CUDA GPU and no network (make gpu-check):
#   (a) the CUDA tests: compiled Triton fusion kernels, flash-linear-attention vs the chunked recurrence, the models
#       on CUDA vs CPU (pytest -m cuda tests/cuda);
#   (b) bench/fusion.py in its GPU mode: Triton vs torch eager vs torch.compile, GB/s and % of peak bandwidth;
#   (c) bench/training.py on the GPU: tokens/s and columns/s under bf16 autocast, with and without fusion.
# What the machine lacks comes from .devkit/ (built on a networked machine by bench/gpu_kit.sh; carry it along):
# wheels installed with pip --target into $SWARM_SITE (default /tmp/site), the package made importable through a
# symlink tree in $SWARM_PKG (default /tmp/swarmpkg; nothing is pip-installed), the gRPC stubs copied into it, and
# SWARM_MINILM_DIR pointing at the trimmed MiniLM folder.
# Output: everything printed also goes to $OUT/gpu_check.log when OUT is set (else reports/gpu_check.log); the
# benches write bench_fusion.* and bench_training.* to $OUT (else reports/). Every step runs, each timed and
# time-boxed (STEP_BUDGETS="tests fusion training" seconds, default "200 140 110": under 8 minutes in all); the exit
# status is non-zero when the setup or any step failed.
# SWARM_GPU_CHECK_DRY=1: the setup and import checks only, without a GPU (to try the setup on a CPU machine).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
KIT=${SWARM_DEVKIT:-$ROOT/.devkit}
SITE=${SWARM_SITE:-/tmp/site}
PKG=${SWARM_PKG:-/tmp/swarmpkg}
DRY=${SWARM_GPU_CHECK_DRY:-0}
if [ -n "${OUT:-}" ]; then REPORTS=$OUT; else REPORTS=$ROOT/reports; fi
mkdir -p "$REPORTS"
read -r BUDGET_TESTS BUDGET_FUSION BUDGET_TRAINING <<<"${STEP_BUDGETS:-200 140 110}"

stamp() { date -u +%H:%M:%S; }

setup() {
    echo "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) in $ROOT"
    if [ "$DRY" != 1 ]; then
        if command -v nvidia-smi >/dev/null 2>&1; then
            nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv
        fi
        if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
            echo "gpu_check: no CUDA GPU visible to $PY's torch; run this on a GPU machine" \
                 "(SWARM_GPU_CHECK_DRY=1 tries the setup alone)" >&2
            return 3
        fi
    fi
    if ! ls "$KIT"/whl/*.whl >/dev/null 2>&1 || [ ! -f "$KIT/minilm/tokenizer.json" ]; then
        echo "gpu_check: $KIT is missing or incomplete: run bash bench/gpu_kit.sh on a networked machine and carry" \
             ".devkit along" >&2
        return 2
    fi
    unset TRITON_INTERPRET
    # Wheels: pure-python and cp312 manylinux; --no-deps, the machine's own torch/triton/numpy stay.
    local pyver use_site=1 cross=()
    pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ "$pyver" != 3.12 ]; then
        if [ "$DRY" != 1 ]; then
            echo "gpu_check: $PY is Python $pyver; the kit's wheels are for CPython 3.12" >&2
            return 2
        fi
        # Dry run elsewhere: check that the wheels install for 3.12, import this Python's own packages instead.
        echo "gpu_check: dry run on Python $pyver: wheels installed for cp312 but not put on PYTHONPATH"
        use_site=0
        export SWARM_CHECK_FLA=0  # fla-core is in the kit but not on this Python's path
        cross=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
               --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    fi
    rm -rf "$SITE" && mkdir -p "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        ${cross[@]+"${cross[@]}"} --target "$SITE" "$KIT"/whl/*.whl \
        || { echo "gpu_check: pip install of $KIT/whl failed" >&2; return 2; }
    echo "installed into $SITE: $(ls "$SITE" | grep -c dist-info) wheels"
    # The package, importable without installing it: swarm is a namespace package (pyproject's package-dir).
    rm -rf "$PKG" && mkdir -p "$PKG/swarm/v1"
    for part in model_server trainer operator client bench; do
        ln -s "$ROOT/$part" "$PKG/swarm/$part"
    done
    cp "$ROOT"/proto/swarm/v1/*.py "$ROOT"/proto/swarm/v1/*.proto "$PKG/swarm/v1/"
    cp "$KIT"/stubs/*.py "$PKG/swarm/v1/"
    if [ "$use_site" = 1 ]; then
        export PYTHONPATH="$SITE:$PKG${PYTHONPATH:+:$PYTHONPATH}"
    else
        export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export SWARM_MINILM_DIR="$KIT/minilm"
    export SWARM_REQUIRE_FLA=1  # tests/cuda fails, rather than skips, when fla cannot be imported
    export PYTHONUNBUFFERED=1
    # Versions and imports; a failing import is reported (and fails the check at the end) but the steps still run.
    "$PY" - <<'EOF' || IMPORTS_FAILED=1
import importlib, importlib.metadata as md, sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device {p.name}: capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.1f} GiB")
for name in ("triton", "fla-core", "pydantic", "protobuf", "grpcio", "numpy", "safetensors", "tokenizers"):
    try:
        print(f"{name} {md.version(name)}", end=" | ")
    except md.PackageNotFoundError:
        print(f"{name} MISSING", end=" | ")
print()
failed = []
import os
modules = ["swarm.model_server.model.primary", "swarm.model_server.model.fusion", "swarm.trainer.training.train",
           "swarm.trainer.data.columns", "swarm.v1.annotation_pb2", "swarm.v1.specialist_pb2_grpc", "fla.ops.gated_delta_rule"]
for module in modules[:-1] if os.environ.get("SWARM_CHECK_FLA") == "0" else modules:
    try:
        importlib.import_module(module)
    except Exception as exc:  # fla missing: the CUDA tests fail on it (SWARM_REQUIRE_FLA=1), benches time torch only
        failed.append(module)
        print(f"IMPORT FAILED {module}: {exc!r}")
import swarm.model_server
import swarm.v1
from swarm.model_server.model import delta_rule, text
print("swarm.model_server from", swarm.model_server.__path__[0], "| swarm.v1 from", swarm.v1.__path__[0])
print("minilm dir", text.minilm_dir(), "| fla usable:", delta_rule.fla_available())
sys.exit(1 if failed else 0)
EOF
}

IMPORTS_FAILED=0
declare -a NAMES=() RCS=() SECONDS_TAKEN=()
step() {  # NAME BUDGET_S CMD...
    local name=$1 budget=$2 start rc
    shift 2
    echo
    echo "== [$(stamp)] step $name (budget ${budget}s): $*"
    start=$(date +%s)
    # SIGINT first (pytest still prints its summary), SIGKILL 20 s later.
    timeout -s INT -k 20 "$budget" "$@"
    rc=$?
    NAMES+=("$name") RCS+=("$rc") SECONDS_TAKEN+=("$(($(date +%s) - start))")
    [ "$rc" -eq 124 ] && echo "== step $name: stopped at its ${budget}s budget"
    echo "== [$(stamp)] step $name: exit $rc after ${SECONDS_TAKEN[-1]}s"
}

main() {
    local t0 rc failed=0
    t0=$(date +%s)
    setup
    rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "gpu_check: setup failed (exit $rc)"
        return "$rc"
    fi
    if [ "$DRY" = 1 ]; then
        echo "gpu_check: dry run (SWARM_GPU_CHECK_DRY=1): setup done (imports failed: $IMPORTS_FAILED), steps not run"
        return "$IMPORTS_FAILED"
    fi
    step tests "$BUDGET_TESTS" "$PY" -m pytest -q -m cuda tests/cuda -p no:cacheprovider -rfEs --durations=15
    step fusion "$BUDGET_FUSION" "$PY" bench/fusion.py --device cuda --quick --agents 3,8 --out-dir "$REPORTS"
    step training "$BUDGET_TRAINING" "$PY" bench/training.py --device cuda --configs small,base --fusion gated \
        --specialists 3 --steps 10 --fla-autotune lean --out-dir "$REPORTS"
    echo
    echo "== summary ($(($(date +%s) - t0))s in all)"
    for i in "${!NAMES[@]}"; do
        printf '  %-9s exit %-4s %4ss\n' "${NAMES[$i]}" "${RCS[$i]}" "${SECONDS_TAKEN[$i]}"
        [ "${RCS[$i]}" -eq 0 ] || failed=1
    done
    [ "$IMPORTS_FAILED" = 0 ] || { echo "  setup: some imports failed (see IMPORT FAILED above)"; failed=1; }
    echo "  reports in $REPORTS"
    return "$failed"
}

main "$@" 2>&1 | tee "$REPORTS/gpu_check.log"
exit "${PIPESTATUS[0]}"
