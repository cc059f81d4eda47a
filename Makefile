# Every target bootstraps .venv itself: `make test` on a fresh clone is all CI needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Two cores: one torch thread per process avoids oversubscription in tests.
export OMP_NUM_THREADS ?= 2

.PHONY: test demo bench lint docs clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,mosek,attack]'
	touch $(STAMP)

# Two pytest workers, one thread each (torch's threads are set to 1 in tests/conftest.py).
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2

demo: $(STAMP)
	$(VENV)/bin/convexrobust demo --out out/demo

bench: $(STAMP)
	$(PY) benchmarks/solvers.py
	$(PY) benchmarks/demo_programs.py

lint: $(STAMP)
	$(VENV)/bin/ruff check convexrobust solvers tests

# The API reference (Sphinx, docs/): `.[docs]` is installed on first use; -W: any warning fails,
# -E: every page is re-read, so a warning is never hidden by an up-to-date page.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	OMP_NUM_THREADS=1 $(PY) -m sphinx -W -E -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

clean:
	rm -rf $(VENV)
