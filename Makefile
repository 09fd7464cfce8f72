# Set-up happens on demand: every target that needs the project depends on the install stamp,
# which is rebuilt only when pyproject.toml changes.
# The first of python3.11, python3.12, python3.13 on the PATH (the versions the pinned stack installs on), else python3.
PYTHON ?= $(firstword $(foreach p,python3.11 python3.12 python3.13,$(if $(shell command -v $(p) 2>/dev/null),$(p))) python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= outputs/make_run

.PHONY: run test test-fast bench clean-cache system-deps slurm-up

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' || { \
		echo "lyria needs Python 3.11, 3.12 or 3.13; $(PYTHON) is $$($(PYTHON) --version 2>&1). Run: make PYTHON=/path/to/python3.12 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/lyria-train experiment=quickstart hydra.run.dir=$(RUN_DIR)
	$(BIN)/lyria-generate ckpt=$(RUN_DIR)/checkpoints/best.ckpt style=all n=3 max_bars=16 max_new_tokens=4096 hydra.run.dir=$(RUN_DIR)/samples
	@cat $(RUN_DIR)/summary.txt
	@echo "samples: $(RUN_DIR)/samples (index.json lists every file and any decode failure)"
	$(BIN)/lyria-evaluate generated=$(RUN_DIR)/samples hydra.run.dir=$(RUN_DIR)/evaluation

# Debian packages the tests use (scripts/system-packages.txt: chromium for the leaderboard page, FluidSynth and
# its GM SoundFont for audio, slurm-wlm and munge for the cluster tests); tests that need one skip where it is absent.
system-deps:
	scripts/install_system_deps.sh

# A one-node SLURM on this machine for tests/test_slurm.py (needs root; the tests say so when it is missing).
slurm-up: system-deps
	-scripts/slurm_local.sh start

test: $(STAMP) system-deps slurm-up
	$(BIN)/python -m pytest -n 2 --timeout=900

test-fast: $(STAMP) system-deps
	$(BIN)/python -m pytest -n 2 -m "not slow" --timeout=600

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/data_prep.py
	$(BIN)/python benchmarks/generation.py
	$(BIN)/python benchmarks/synth.py
	PYTHONPATH=. $(BIN)/python benchmarks/train_throughput.py

clean-cache:
	rm -rf .cache/lyria
