# Two commands matter on a fresh machine: `make demo` and `make test`. Both install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/swarm/v1/*.proto)
STUBS := $(PROTOS:.proto=_pb2.py)
DATA ?= data/sotab-v2-sample
# Primaries trained per fusion row of `make fusion-report` (seeds 0..SEEDS-1); the committed tables used SEEDS=3.
SEEDS ?= 2

.PHONY: install proto demo reports test test-fast typecheck cluster-bins gpu-check lint bench fusion-report accuracy orchestrator adapt crds kind-e2e clean

install: $(STAMP) $(STUBS)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.13.0 from PyPI is its CUDA-enabled build (with the nvidia-* wheels: ~3 GB); it runs on the CPU too.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Python stubs are generated, never hand-edited or committed.
proto/swarm/v1/%_pb2.py: proto/swarm/v1/%.proto $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=proto --grpc_python_out=proto --pyi_out=proto $<

proto: $(STUBS)

# The main job: the released swarm built from the training splits (`swarm release`, into runs/demo), served on
# loopback as `swarm up` serves it, the validation tables annotated through swarm.client; prints a short table and
# writes reports/demo.{json,md,png} (a run's own results: ignored by git). `swarm up --run-dir runs/demo` serves it
# again. A second run reuses the built swarm.
demo: install
	$(BIN)/swarm demo --data $(DATA) --run-dir runs/demo

# The research reports, each writing only its own files in reports/ (about 2 hours on 2 cores together).
reports: fusion-report accuracy orchestrator

# mypy over the whole swarm package, through src/swarm/ (symlinks giving the installed layout; see pyproject.toml).
# It runs from src/ because mypy always searches its working directory first, where the root operator/ folder
# would shadow the standard library's operator module.
typecheck: install
	cd src && ../$(BIN)/mypy

# The real-cluster tier (tests/cluster) is required here: missing control-plane binaries fail it, not skip it.
test: install cluster-bins typecheck
	$(BIN)/ruff check .
	SWARM_REQUIRE_CLUSTER=1 $(BIN)/python -m pytest -q tests

# The edit loop: everything but the tests marked slow and the real-cluster tier.
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow and not cluster" tests

# etcd, kube-apiserver, kube-controller-manager, kube-scheduler (Kubernetes v1.36.3) and kwok, built once with Go from
# the pinned module in tests/cluster/bins (only the Go module proxy) into .cache/cluster-bins/; Go's module and build
# caches live in .cache/go/. First build about 8 minutes on 2 cores (downloads included); later runs reuse them.
cluster-bins:
	bash tests/cluster/build.sh

# On a machine with a CUDA GPU: CUDA tests (compiled kernels), fusion kernel timings, GPU training throughput;
# prints and writes reports/gpu_check.* (see bench/gpu_check.sh).
gpu-check:
	bash bench/gpu_check.sh

lint: install
	$(BIN)/ruff check .

# Each benchmark writes reports/bench_*.json and .md; without a GPU the fusion benchmark checks the Triton
# kernels under the interpreter and says so.
bench: install cluster-bins
	$(BIN)/swarm bench

# Grouped 5-fold CV of the primary alone and with its specialists, and the ablation ladder: reports/accuracy.*;
# then the released swarm on every labelled split (the release path of `swarm release`) in runs/accuracy/released.
accuracy: install
	$(BIN)/swarm accuracy-report --data $(DATA)

# Every routing policy (primary alone, all specialists, random k, threshold rule, supervised complexity head, PARL)
# on grouped folds of the validation tables over 3 seeds, the design's four criteria, the robustness check and the
# PARL ablations: reports/orchestrator.*; the released primary + policy in runs/orchestrator/released/model.
orchestrator: install
	$(BIN)/swarm orchestrator-report --data $(DATA)

fusion-report: install
	$(BIN)/swarm fusion-report --data $(DATA) --seeds $(SEEDS)

# Model Swarms, after `make demo`: the demo's geographic, temporal, numeric and people specialists searched for a
# commerce specialist, scored beside the demo's own commerce specialist; writes reports/adapt_commerce.*.
EXPERTS := runs/demo/specialists
adapt: install
	@test -d $(EXPERTS)/commerce || { echo "no specialists in $(EXPERTS): run make demo first" >&2; exit 2; }
	$(BIN)/swarm adapt --data $(DATA) --domain commerce --reference $(EXPERTS)/commerce --out runs/adapt/commerce \
		$(foreach name,geographic temporal numeric people,--expert $(EXPERTS)/$(name))

crds: install
	$(BIN)/python -m swarm.operator.crdgen crds

kind-e2e: install
	bash manifests/kind/e2e.sh

clean:
	rm -rf $(VENV) runs build *.egg-info proto/swarm/v1/*_pb2*.py proto/swarm/v1/*_pb2*.pyi
