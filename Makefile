# The two commands of the README:
#   make train   set up .venv, make a HEP dataset, train it on an embedded LocalCluster
#   make test    set up .venv with the test extras and run the test suite
PY := .venv/bin/python
DATA ?= data/jets.zarr
JETS ?= 20000

.PHONY: setup train test lint bench clean

setup:
	bash scripts/setup.sh

train: setup
	@[ -d $(DATA) ] || .venv/bin/psdist generate jet-images $(DATA) --jets $(JETS)
	.venv/bin/psdist train examples/jet_images.yaml --save runs/jet_images.ckpt

test:
	bash scripts/setup.sh test
	$(PY) -m pytest -ra

lint:
	bash scripts/setup.sh test
	.venv/bin/ruff check psdist tests benchmarks examples
	.venv/bin/lint-imports --no-cache   # the layer contracts of pyproject.toml
	.venv/bin/mypy                      # types: strict in psdist/core ([tool.mypy] in pyproject.toml)

bench:
	bash scripts/setup.sh test
	$(PY) benchmarks/bench_throughput.py --size small

clean:
	rm -rf data runs .pytest_cache

# the benchmark suite at full size (~15 min on 2 idle cores): benchmarks/results/<date>-<host>.*, docs/benchmarks.md
bench-suite:
	bash scripts/setup.sh test
	$(PY) benchmarks/run_suite.py --size full --docs
