# Two commands on a fresh machine:
#   make book   set up .venv from requirements.txt and build the Jupyter Book into _build/html
#   make test   set up .venv and run the test suite
# Where ../shared/data exists (the project's offline copy of CIFAR-10 / Tiny ImageNet),
# it becomes the default data folder through CONSENSUS_TUTORIAL_DATA.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)),)
export CONSENSUS_TUTORIAL_DATA ?= $(SHARED_DATA)
endif

.PHONY: venv test book clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

test: venv
	$(PY) -m pytest -q

book: venv
	$(VENV)/bin/jupyter-book build . -n -W --keep-going

clean:
	rm -rf _build notebooks/runs
