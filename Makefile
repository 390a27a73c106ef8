# Two commands a fresh machine needs: `make demo` (the main job) and `make test`.
# Each bootstraps .venv, installs torch from the local CPU wheel first (so no CUDA build is
# pulled), then the project and every plugin under plugins/.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PLUGINS := $(wildcard plugins/*/pyproject.toml)
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(PLUGINS))
STAMP  := $(VENV)/.installed

.PHONY: install test demo clean

$(STAMP): pyproject.toml $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]" $(foreach d,$(PLUGIN_DIRS),-e $(d))
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests $(foreach d,$(PLUGIN_DIRS),$(wildcard $(d)/tests))

demo: $(STAMP)
	$(VENV)/bin/ractd envs

clean:
	rm -rf $(VENV)
