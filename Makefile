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

# The main job, end to end on CPU. Until the Maze2d quick preset fits the 20-minute budget, it runs
# the two-mode task: data, teacher, reward model, CTD and RACTD students, the Trajectory Diffuser
# proposer, then the bench table and plot.
DEMO_TASK ?= bimodal
DEMO_PRESET ?= tiny
RACTD := $(VENV)/bin/ractd
demo: $(STAMP)
	$(RACTD) envs
	$(RACTD) fetch $(DEMO_TASK) --source local
	$(RACTD) train-teacher --env $(DEMO_TASK) --preset $(DEMO_PRESET)
	$(RACTD) train-reward --env $(DEMO_TASK) --preset $(DEMO_PRESET)
	$(RACTD) distill --env $(DEMO_TASK) --preset $(DEMO_PRESET) --reward-weight 0
	$(RACTD) distill --env $(DEMO_TASK) --preset $(DEMO_PRESET) --reward-weight 1.0
	$(RACTD) train-proposer --env $(DEMO_TASK) --preset $(DEMO_PRESET)
	mkdir -p out
	$(RACTD) bench --env $(DEMO_TASK) --episodes 50 --plot out/bench-$(DEMO_TASK).png

clean:
	rm -rf $(VENV)
