# The two set-up commands of the README: `make demo` (the whole pipeline on the embedded default)
# and `make test` (the test suite). Each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint venv clean-runs

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/donna run --workdir runs/demo

# The whole suite, the slow embedded-default test included (a few minutes on 2 cores).
test: $(STAMP)
	DONNA_SLOW=1 $(VENV)/bin/python -m pytest -q

# Everything but the slow tests (about 9.5 minutes on 2 cores; the slow ones add about one).
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-runs:
	rm -rf runs
