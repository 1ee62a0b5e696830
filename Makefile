# The two README commands: `make demo` and `make test`. Both run the setup step first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench corpus clean

setup:
	@scripts/setup.sh

# Preprocess the committed sample corpus into a feature store with a local in-process Ray.
demo: setup
	$(BIN)/voxray preprocess --input corpus/sample --output out/sample-store preprocess.overwrite=true

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/preprocess.py

# Regenerate the committed sample corpus (needs espeak-ng; output is byte-for-byte reproducible).
corpus: setup
	$(BIN)/python scripts/make_sample_corpus.py corpus/sample

clean:
	rm -rf out .pytest_cache
