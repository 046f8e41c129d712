# The two commands that matter:  `make run`  and  `make test`.
# Both install whatever is missing first (ffmpeg, the CPU build of torch, the package) into .venv.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# PyTorch's CPU-only wheel index: keeps pip from pulling several GB of CUDA packages. torch alone
# comes from there (--no-deps); its own dependencies come with the package install below, from
# pip's default index. GPU hosts: install their own CUDA build of torch $(TORCH_VERSION) into .venv
# first; it is kept.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup system-deps run test lint bench clean

setup: system-deps $(VENV)/.installed

# ffmpeg decodes every audio/video format; espeak-ng synthesises speech for the tests.
system-deps:
	@if ! command -v ffmpeg >/dev/null || ! command -v espeak-ng >/dev/null; then \
	  if command -v apt-get >/dev/null; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg espeak-ng >/dev/null; \
	  elif command -v brew >/dev/null; then brew install ffmpeg espeak-ng; \
	  else echo "Please install ffmpeg (and espeak-ng for the tests) with your package manager." >&2; exit 1; fi; \
	fi

# The bot's own dependencies only: what it imports at start-up is what it needs. (The test
# extras would slow every start: transformers imports scipy, which librosa brings, when present.)
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || \
	  $(BIN)/pip install -q --no-deps "torch==$(TORCH_VERSION)" --index-url $(TORCH_INDEX)
	$(BIN)/pip install -q -e .
	touch $@

# The tests, the lint and the bench add the test extras, and openai-whisper without its
# dependencies (the tests build Whisper's tokenizer from the file it ships).
WHISPER := openai-whisper==20250625
$(VENV)/.test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps $(WHISPER)
	touch $@

run: setup
	$(BIN)/python -m bot run

# Ruff over the code, mypy over the package (settings in pyproject.toml).
LINT := $(BIN)/ruff check bot tests bench deploy && $(BIN)/mypy
lint: setup $(VENV)/.test
	$(LINT)

# The tests also run the cluster side on a local Ray: the `cluster` extra, for `make test` only.
# One pip run installs both extras (and so also stands for .test): each run resolves everything again.
$(VENV)/.cluster: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test,cluster]"
	$(BIN)/pip install -q --no-deps $(WHISPER)
	touch $@ $(VENV)/.test

# The lint first, then the suite, in two pytest-xdist workers: most of an end-to-end test's time is a
# process starting or waiting, so two at once take ~3/4 of the serial time even on two cores. The tests
# that run a Ray cluster are one group (`tests/ray_cluster.py`), run by one worker in their order.
test: setup $(VENV)/.cluster
	$(LINT)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

bench: setup $(VENV)/.test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
