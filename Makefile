# Every target sets up its own virtual environment first (once; again when setup.cfg changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

.PHONY: compare ablate test bench lint clean

compare: $(READY)  ## the main job: LSTM vs relational memory, report in runs/quick
	$(BIN)/python -m experiments.compare $(ARGS)

ablate: $(READY)  ## trained ablations of the RMC; adds a section to runs/quick/report.md
	$(BIN)/python -m experiments.ablate $(ARGS)

test: $(READY)  ## the whole test suite, the notebook included
	$(BIN)/python -m pytest -q $(ARGS)

bench: $(READY)  ## speed benchmark of the models
	$(BIN)/python -m experiments.bench $(ARGS)

lint: $(READY)
	$(BIN)/ruff check tensorgrad models tasks experiments tests

$(READY): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,dask]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	@command -v dot > /dev/null || echo "note: graphviz 'dot' not found; graph pictures are written as DOT text only (Debian: apt-get install graphviz)"
	touch $(READY)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
