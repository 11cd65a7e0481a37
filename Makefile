# r1aqa-pl — every target that needs the environment depends on `install`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the demo run and its caches live here (ignored by git)
RUN_DIR ?= checkpoints/demo
# one seed drives the demo's synthetic data, tiny policy, warm start and GRPO run: make demo SEED=3
SEED ?= 0
# the policy family of the demo's and the bench's tiny model (r1aqa_pl.models.FAMILIES); each family has its own
# warm start ($(RUN_DIR)/warm for qwen2_audio, $(RUN_DIR)/warm-<family> otherwise) that its checkpoints point at
FAMILY ?= qwen2_audio
# extra `lightning fit` arguments for the demo, e.g. DEMO_ARGS="--model.init_args.dynamic_sampling true"
DEMO_ARGS ?=
# eval knobs: make eval CKPT=... [BENCH=mmau|mmar|mmsu|mmau_pro] [DATA=...] [AUDIO_DIR=...] [OUT=...] [BATCH=...]
# (DATA defaults to the benchmark's usual place: data/mmau/mmau-test-mini.json, data/mmar/MMAR-meta.jsonl)
CKPT ?=
BENCHMARK ?=
BENCH ?= $(BENCHMARK)
DATA ?=
AUDIO_DIR ?=
OUT ?=
BATCH ?= 8
# robust scores (docs/benchmarks.md): the choices in K orders, K sampled answers per question
PERMUTATIONS ?=
SAMPLES ?=
ROBUST = $(if $(PERMUTATIONS),--permutations $(PERMUTATIONS)) $(if $(SAMPLES),--samples $(SAMPLES))
RUN ?= $(RUN_DIR)
PYTEST_ARGS ?=
# the install stops early, with a clear message, when the venv's disk has less than this free (torch is ~6 GiB)
MIN_FREE_GIB ?= 7
# make compare / compare-recipes: the seeds, and how many runs go side by side (one thread each on 2 cores)
SEEDS ?= [0,1,2]
JOBS ?= 2
# make compare-recipes: its arms (names of r1aqa_pl.tools.compare.ARM_SPECS, or of ARMS_FILE, a YAML file of more arms)
RECIPE_ARMS ?= [grpo,grpo_ds,grpo_curriculum,grpo_filtered,grpo_relevance,grpo_contribution,grpo_think,grpo_think_length]
ARMS_FILE ?=
# make compare-shift: optimizer steps per arm (SFT then GRPO: half each), as the documented `make compare` runs
SHIFT_STEPS ?= 500

.PHONY: help install lint demo test test-slow eval eval-all bench compare compare-recipes compare-shift memory tensorboard clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install the package (editable, dev extras); fast when nothing changed

# A python that already has torch (a GPU box) is reused through --system-site-packages, and
# torchaudio is pinned to that torch's release so pip never swaps the preinstalled torch.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || { \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; }
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -c "import shutil, sys; f = shutil.disk_usage('$(VENV)').free / 2**30; \
	  f >= $(MIN_FREE_GIB) or sys.exit(f'make install: {f:.1f} GiB free on the disk of $(VENV); ' \
	  'torch (a CUDA build) with torchaudio needs about $(MIN_FREE_GIB) GiB (MIN_FREE_GIB)')"
	$(PY) -m pip install -q --upgrade pip
	@if ! $(PY) -c "import torch" 2>/dev/null; then $(PY) -m pip install -q torch; fi
	@TV=$$($(PY) -c "import torch; v=torch.__version__.split('+')[0].split('.'); print(v[0]+'.'+v[1])"); \
	  $(PY) -c "import torchaudio" 2>/dev/null || $(PY) -m pip install -q "torchaudio==$$TV.*" 2>/dev/null || { \
	    echo "no torchaudio $$TV.* wheel: taking the newest release up to it"; $(PY) -m pip install -q "torchaudio<=$$TV.99"; }
	@VV=$$($(PY) -c "import torch; v=torch.__version__.split('+')[0].split('.'); print('0.'+str(int(v[1])+15))"); \
	  $(PY) -c "import torchvision" 2>/dev/null || $(PY) -m pip install -q --no-deps "torchvision==$$VV.*"  # the Omni processors' video half
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

demo: install ## prepare the tiny policy + synthetic data, then GRPO on CPU (lightning fit --config configs/demo.yaml) [SEED=0] [FAMILY=qwen2_5_omni]
	$(PY) -m r1aqa_pl demo-prepare --out $(RUN_DIR) --seed $(SEED) --family $(FAMILY)
	$(VENV)/bin/lightning fit --config configs/demo.yaml --seed_everything $(SEED) --data.init_args.seed $(SEED) \
	  $(if $(filter-out qwen2_audio,$(FAMILY)),--model.init_args.policy.model_name_or_path $(RUN_DIR)/warm-$(FAMILY)) \
	  $$($(PY) -c "from r1aqa_pl.models import FAMILIES; n = FAMILIES.build('$(FAMILY)').max_clips; print(f'--data.init_args.max_clips {n}' if n else '')") \
	  $(DEMO_ARGS)

lint: install ## ruff over the package and the tests (the rules: pyproject.toml)
	$(VENV)/bin/ruff check r1aqa_pl tests

test: install ## run the test suite (slow tests excluded)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install ## run only the slow tests (learning curves, multi-process)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

eval: install ## score a checkpoint on a benchmark: make eval CKPT=path [BENCH=mmau|mmar|mmsu|mmau_pro] [DATA=file] [AUDIO_DIR=dir] [OUT=dir] [BATCH=n] [DTYPE=bfloat16] [PERMUTATIONS=k] [SAMPLES=k]
	@test -n "$(CKPT)" || { echo "usage: make eval CKPT=path/to/checkpoint [BENCH=mmar] [DATA=...] [OUT=...]"; exit 2; }
	$(PY) -m r1aqa_pl eval --checkpoint "$(CKPT)" $(if $(DATA),--data "$(DATA)") --batch_size $(BATCH) $(if $(BENCH),--benchmark $(BENCH)) \
	  $(if $(AUDIO_DIR),--audio_dir "$(AUDIO_DIR)") $(if $(OUT),--out "$(OUT)") $(if $(DTYPE),--dtype $(DTYPE)) $(ROBUST)

eval-all: install ## evaluate every checkpoint of a run, one table per file: make eval-all RUN=dir [DATA=file or '[a,b]'] [BENCH=...] [DTYPE=bfloat16] [PERMUTATIONS=k] [SAMPLES=k]
	$(PY) -m r1aqa_pl eval-all --run "$(RUN)" $(if $(DATA),--data "$(DATA)") --batch_size $(BATCH) $(if $(BENCH),--benchmark $(BENCH)) \
	  $(if $(AUDIO_DIR),--audio_dir "$(AUDIO_DIR)") $(if $(DTYPE),--dtype $(DTYPE)) $(ROBUST)

bench: install ## time the GRPO step and evaluation against a straightforward reference (r1aqa bench) [FAMILY=qwen2_5_omni]
	$(PY) -m r1aqa_pl bench --family $(FAMILY) $(BENCH_ARGS)

compare: install ## GRPO vs SFT vs audio-free on the synthetic set, over seeds; prints the tables [SEEDS=[0,1,2]] [JOBS=2]
	$(PY) -m r1aqa_pl compare --out checkpoints/compare --seeds '$(SEEDS)' --jobs $(JOBS) $(COMPARE_ARGS)

compare-recipes: install ## GRPO vs dynamic sampling, curriculum, audio-contribution weights, audio relevance, online contribution, think (± length reward), over seeds [SEEDS=...] [JOBS=2] [RECIPE_ARMS=...] [ARMS_FILE=...]
	$(PY) -m r1aqa_pl compare --out checkpoints/compare-recipes --arms '$(RECIPE_ARMS)' \
	  $(if $(ARMS_FILE),--arms_file "$(ARMS_FILE)") --seeds '$(SEEDS)' --jobs $(JOBS) $(COMPARE_ARGS)

compare-shift: install ## SFT vs GRPO vs SFT then GRPO, scored on test-mini and on the synthetic shifted set, over seeds [SEEDS=...] [JOBS=2] [SHIFT_STEPS=500]
	$(PY) -m r1aqa_pl compare --shift true --out checkpoints/compare-shift --steps $(SHIFT_STEPS) \
	  --seeds '$(SEEDS)' --jobs $(JOBS) $(COMPARE_ARGS)

memory: install ## the per-GPU memory estimate of each configuration (r1aqa memory)
	$(PY) -m r1aqa_pl memory

tensorboard: install ## serve the runs' TensorBoard curves (per domain) from checkpoints/
	$(VENV)/bin/tensorboard --logdir checkpoints

clean: ## remove runs, caches and the virtual environment
	find checkpoints -mindepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf $(VENV) .pytest_cache build *.egg-info
