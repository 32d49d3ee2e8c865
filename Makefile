# Set-up is part of every target: a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel pre-installed here keeps pip from resolving a CUDA build; pyproject.toml itself
# only asks for torch>=2.1, so installs elsewhere keep their own torch.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
HNMINE := $(VENV)/bin/hnmine
STAMP := $(VENV)/.hnmine-installed
DEMO_OUT ?= demo-out
LOOP_OUT ?= loop-out

.PHONY: setup demo mine-demo loop test lint bench sample-data clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The README's main command: mining on its own (SVD embeddings -> hnmine mine), then the whole loop
# (train -> export -> mine -> retrain, 3 rounds, metrics per round), all on sample_data: ~4.5 CPU-minutes.
demo: mine-demo
	$(HNMINE) run $(LOOP_ARGS) --out $(DEMO_OUT)/loop

mine-demo: $(STAMP)
	$(HNMINE) svd --positives sample_data/train.txt --dim 64 --out-dir $(DEMO_OUT)/embeddings
	$(HNMINE) mine --users $(DEMO_OUT)/embeddings/user.parquet --items $(DEMO_OUT)/embeddings/item.parquet \
		--positives sample_data/train.txt --item-features sample_data/item_features.csv \
		--rank-window 101:500 --num-hard 10 --out $(DEMO_OUT)/mined --overwrite

# The loop alone (reruns resume from the last complete round).
LOOP_ARGS := --positives sample_data/train.txt --test sample_data/test.txt --iterations 3 --epochs 10
loop: $(STAMP)
	$(HNMINE) run $(LOOP_ARGS) --out $(LOOP_OUT)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Benchmarks (not tests): installs the baselines into .venv, writes bench-out/ (see docs/performance.md).
bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_mine.py all --out bench-out

sample-data: $(STAMP)
	$(PY) scripts/make_sample_data.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(LOOP_OUT) .pytest_cache .ruff_cache
