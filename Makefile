# `make demo` runs the main job, `make test` the tests; both install into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test bench docs install clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev,dask]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/demo.py

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(VENV)/.installed
	$(PY) benchmarks/backends.py

# The documentation site in docs/_build/html, built strictly: a warning, a broken reference or a
# recipe whose code fails is an error (docs/README.md). Recipes run; the MNIST one needs the sweep.
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml constraints.txt
	$(PIP) -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	$(PY) -m sphinx -b html -W --keep-going -n -q docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

clean:
	rm -rf $(VENV) *.egg-info
