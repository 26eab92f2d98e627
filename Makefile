# Entry points. Every target that needs the environment runs `make setup` first (idempotent).
SHELL := /bin/bash
ACTIVATE := source scripts/activate.sh
PYTEST_ARGS ?=

.PHONY: setup demo test lint format bench train-shipped tiny-fixture clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(ACTIVATE) && dyco-demo $(DEMO_ARGS)

test: setup
	@$(ACTIVATE) && python -m pytest tests $(PYTEST_ARGS)

lint: setup
	@$(ACTIVATE) && ruff check . && ruff format --check .

format: setup
	@$(ACTIVATE) && ruff format . && ruff check --fix .

bench: setup
	@$(ACTIVATE) && python bench/bench_pipeline.py && python bench/bench_node.py

# Two stages: 80 min from scratch, then 100 min more from its weights (3 h on one CPU core).
train-shipped: setup
	@$(ACTIVATE) && dyco-train --config config/train/shipped_stage1.yaml \
		&& dyco-train --config config/train/shipped.yaml

# The trained tiny checkpoint the Segmenter and node tests run (~5 min on one core).
tiny-fixture: setup
	@$(ACTIVATE) && dyco-train --config config/train/tiny_fixture.yaml

clean:
	rm -rf ros2_ws/build ros2_ws/install ros2_ws/log cuda_ops/dyco_ops/_build
