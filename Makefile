# Two commands a fresh machine needs: `make demo` (the main job) and `make test`.
# Each bootstraps .venv, installs a CPU build of torch first (PyTorch's CPU wheel index when it is
# reachable, else the default index: either way no multi-GB CUDA build is pulled where a CPU one
# exists), then the project and every plugin under plugins/. It says which index it used.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PLUGINS := $(wildcard plugins/*/pyproject.toml)
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(PLUGINS))
STAMP  := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install test stress lint demo results sweep table4 peers clean

$(STAMP): pyproject.toml $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" 2>/dev/null; then \
		echo "torch $(TORCH_VERSION): CPU build from $(TORCH_CPU_INDEX)"; \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; \
	else \
		echo "torch $(TORCH_VERSION): $(TORCH_CPU_INDEX) is unreachable, installing from the default index"; \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	fi
	$(PY) -m pip install -q -e ".[test,export,watch,hf]" $(foreach d,$(PLUGIN_DIRS),-e $(d))
	touch $(STAMP)

install: $(STAMP)

# --dist loadfile: each test file on one worker, so a module-scoped fixture (the bimodal chain of
# tests/test_pipeline_bimodal.py, about 2.5 minutes) is built once, not once per worker.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile tests $(foreach d,$(PLUGIN_DIRS),$(wildcard $(d)/tests))

# The torchrun stress loop (docs/reliability.md): 20 pairs of identical `--nproc 2` runs and 20
# Ctrl-C stops of one rank, each ending cleanly on every rank. Run it with the other core busy too.
STRESS_ROUNDS ?= 20
stress: $(STAMP)
	RACTD_STRESS_ROUNDS=$(STRESS_ROUNDS) $(PY) -m pytest -q -m stress tests/test_distributed.py

lint: $(STAMP)
	$(VENV)/bin/ruff check ractd_cli plugins tests scripts

# The main job, end to end on a CPU (about 25 minutes on 2 cores, the install included; its two
# 1600-step students take 6 min each, measured 2026-12-05): Maze2d
# umaze data generated here (Minari's pointmaze recipe), inverse dynamics and the EDM teacher, the
# reward model, a plain CTD and the one-step RACTD student at the task's default reward weight (all
# `--preset quick`), then the bench table over 100 episodes (teacher samplers and students, latency
# and score) and its plot. Re-running reuses the dataset.
DEMO_TASK ?= maze2d-umaze
DEMO_STEPS ?= 100000
DEMO_EPISODES ?= 100
RACTD := $(VENV)/bin/ractd
demo: $(STAMP)
	$(RACTD) envs
	$(RACTD) fetch $(DEMO_TASK) --source local --steps $(DEMO_STEPS)
	$(RACTD) train-teacher --env $(DEMO_TASK)
	$(RACTD) train-reward --env $(DEMO_TASK)
	$(RACTD) distill --env $(DEMO_TASK) --reward-weight 0
	$(RACTD) distill --env $(DEMO_TASK)
	mkdir -p out
	$(RACTD) bench --env $(DEMO_TASK) --episodes $(DEMO_EPISODES) --plot out/bench-$(DEMO_TASK).png

# One task's results table from nothing (docs/results.md), `ractd reproduce TASK`: each `ractd` command
# is printed before it runs and skipped when the cache already holds its output; the table ends up in
# out/results-$(TASK).json and .md and is printed as markdown with the paper's figures.
#   make results TASK=hopper-medium-replay [EPISODES=100] [TEACHER_EPISODES=20] [TRAIN_ARGS="--preset quick"]
#                [TEACHER_ARGS="--plan-stride 8"] [BENCH_ARGS="--follow track --replan"] [SEEDS=3] [JOBS=2] [SELECT_EVERY=50]
# TRAIN_ARGS go to every training command, TEACHER_ARGS to train-teacher alone, BENCH_ARGS to bench;
# SEEDS=N distils CTD and RACTD with N seeds each and adds their means across seeds to the table;
# JOBS=N trains up to N independent models at once (results, sweep, table4), each on 1/N of the threads;
# SELECT_EVERY=N also benches each student's weights selected on online score every N steps over
# SELECT_EPISODES episodes (the RACTD authors' protocol, `reproduce --select-every`), beside its last weights.
TASK ?=
EPISODES ?= 100
TEACHER_EPISODES ?= $(EPISODES)
TRAIN_ARGS ?=
TEACHER_ARGS ?=
BENCH_ARGS ?=
SEEDS ?= 1
JOBS ?= 1
SELECT_EVERY ?= 0
SELECT_EPISODES ?= 20
results: $(STAMP)
	@test -n "$(TASK)" || (echo "usage: make results TASK=<task> [EPISODES=100]  (tasks: ractd envs)"; exit 2)
	$(RACTD) reproduce $(TASK) --episodes $(EPISODES) --teacher-episodes $(TEACHER_EPISODES) \
		--teacher-args "$(TEACHER_ARGS)" --bench-args "$(BENCH_ARGS)" --train-args "$(TRAIN_ARGS)" --seeds $(SEEDS) --jobs $(JOBS) \
		--select-every $(SELECT_EVERY) --select-episodes $(SELECT_EPISODES)

# The paper's Figure 4 (docs/results.md): one RACTD student per reward weight, each scored every
# EVAL_EVERY steps; reuses the cache like `results`, prints each command, plots out/sweep-$(TASK).png.
#   make sweep TASK=hopper-medium-replay [WEIGHTS="0 0.3 0.5 0.7 1.0 1.5"] [EVAL_EVERY=500] [EVAL_EPISODES=20]
WEIGHTS ?= 0 0.3 0.5 0.7 1.0 1.5
EVAL_EVERY ?= 500
EVAL_EPISODES ?= 20
sweep: $(STAMP)
	@test -n "$(TASK)" || (echo "usage: make sweep TASK=<task> [WEIGHTS=...]  (tasks: ractd envs)"; exit 2)
	$(RACTD) reproduce $(TASK) --what sweep --reward-weights "$(WEIGHTS)" --eval-every $(EVAL_EVERY) --eval-episodes $(EVAL_EPISODES) \
		--train-args "$(TRAIN_ARGS)" --jobs $(JOBS)

# The paper's Table 4 (docs/results.md): unconditioned or reward-aware teacher (`train-teacher
# --reward-weight`), crossed with unconditioned (CTD) or reward-aware (RACTD) one-step student, each
# scored over EPISODES episodes; reuses the cache like `results`, prints each command, writes
# out/table4-$(TASK).json.
#   make table4 TASK=hopper-medium-replay [EPISODES=100]
table4: $(STAMP)
	@test -n "$(TASK)" || (echo "usage: make table4 TASK=<task> [EPISODES=100]  (tasks: ractd envs)"; exit 2)
	$(RACTD) reproduce $(TASK) --what table4 --episodes $(EPISODES) --train-args "$(TRAIN_ARGS)" --jobs $(JOBS)

# Standard offline RL on the task's own dataset (docs/commands/bench.md): BC, BC on the best 10% of
# episodes, TD3+BC and IQL with d3rlpy, scored on the episodes `ractd rollout --seed SEED` plays, into
# out/peers-$(TASK).json (PEERS_OUT) for `ractd bench --peers`. d3rlpy pins gymnasium 1.0.0: its own .venv-peers.
#   make peers TASK=hopper-medium-replay [EPISODES=30] [SEED=7] [PEERS_ARGS="--methods bc,iql --steps-rl 20000"] [PEERS_OUT=out/x.json]
PEERS_VENV ?= .venv-peers
SEED ?= 7
PEERS_ARGS ?=
PEERS_OUT ?= out/peers-$(TASK).json
$(PEERS_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q "torch==$(TORCH_VERSION)" d3rlpy==2.8.1 "gymnasium[mujoco]==1.0.0" h5py
	touch $@
peers: $(STAMP) $(PEERS_VENV)/.installed
	@test -n "$(TASK)" || (echo "usage: make peers TASK=<task> [EPISODES=30] [SEED=7]  (tasks: ractd envs)"; exit 2)
	mkdir -p $(dir $(PEERS_OUT))
	$(RACTD) envs --json > $(PEERS_OUT:.json=)-specs.json
	$(RACTD) fetch $(TASK) --source local --json > $(PEERS_OUT:.json=)-fetch.json
	$(PEERS_VENV)/bin/python scripts/peers.py $(TASK) --specs $(PEERS_OUT:.json=)-specs.json --episodes $(EPISODES) --seed $(SEED) \
		--dataset "$$($(PY) -c 'import json,sys; print(json.load(open(sys.argv[1]))["path"])' $(PEERS_OUT:.json=)-fetch.json)" \
		--out $(PEERS_OUT) $(PEERS_ARGS)

clean:
	rm -rf $(VENV)
