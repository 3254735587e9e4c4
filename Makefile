# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean-demo

venv: $(STAMP)

# basicsr 1.4.2 ships only an sdist whose setup_requires pulls a second torch into pip's isolated
# build env: build it against the venv instead (--no-build-isolation), after upgrading setuptools/wheel.
$(STAMP): requirements.txt setup.cfg pyproject.toml lrti_plugin_startup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
	$(PY) -m pip install -q --no-build-isolation --use-pep517 -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	$(PY) -m lrti_plugin_startup install  # lets BasicSR's own basicsr/train.py import basicsr (see the module)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/run_demo.py --out demo

lint: $(STAMP)
	$(PY) -m ruff check lrti_plugin lrti_plugin_startup.py lrti_demo scripts tests

test: $(STAMP) lint
	$(PY) -m pytest -q

clean-demo:
	rm -rf demo experiments/demo_plain* experiments/demo_lrti* results/demo_plain* results/demo_lrti*
