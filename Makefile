# Two commands do all set-up: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?= --method meta-perser --shots 5

.PHONY: run test install bench leaderboard clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/perserbench run $(ARGS)

# Two pytest workers, one per core (CI has 2); a test file stays on one worker (--dist
# loadfile), so module- and session-scoped fixtures (the Ray cluster, generated results) are
# built once. A plain `.venv/bin/python -m pytest` still runs everything in one process.
test: $(STAMP)
	.ci/ensure-chromium
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/perserbench bench

# The committed board: every built-in method (incl. the oracle ceiling) on the default suite,
# K = 1, 5, 10, 20, both scenarios, seed 0; then README.md + index.html from those files only.
LEADERBOARD_TASK ?= synthetic
leaderboard: $(STAMP)
	@methods="$$($(BIN)/perserbench leaderboard suite)"; \
	for m in $$methods; do rm -f leaderboard/results/$${m}__$(LEADERBOARD_TASK)__*.json; done; \
	for m in $$methods; do \
	  echo "== $$m"; \
	  $(BIN)/perserbench run --method $$m --task $(LEADERBOARD_TASK) --shots 1 --shots 5 --shots 10 --shots 20 \
	    --scenario both --seed 0 --out leaderboard/results || exit 1; \
	done
	$(BIN)/perserbench leaderboard build

clean:
	rm -rf $(VENV) runs reports
