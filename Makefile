# genie-robot: `make demo` and `make test` set everything up first (idempotent `make setup`).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The stamp is keyed on everything that decides what gets installed: change one, re-run setup.
# ORT=gpu swaps onnxruntime for onnxruntime-gpu (same module; never both installed).
ORT ?= cpu
ORT_GPU := onnxruntime-gpu==1.31.1
SETUP_HASH := $(shell (cat requirements.txt constraints.txt setup.py pyproject.toml package.xml Makefile scripts/build_interfaces.sh \
	genie_robot_interfaces/*.* genie_robot_interfaces/*/*; echo $(ORT)) 2>/dev/null | sha256sum | cut -c1-16)
STAMP := $(VENV)/.setup-stamp-$(SETUP_HASH)
APT_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libgles2
# Building genie_robot_interfaces (rosidl type support) needs CMake, a C/C++ compiler and Python's headers.
BUILD_APT_PACKAGES := cmake g++ make
PY_HEADERS := $(shell $(PYTHON) -c "import sysconfig, os; print(int(os.path.isfile(sysconfig.get_paths()['include'] + '/Python.h')))" 2>/dev/null)
PY_DEV_APT := python$(shell $(PYTHON) -c "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')" 2>/dev/null)-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The Google Robot model: an offline copy beside the checkout if there is one, else the
# mujoco-menagerie cache that `make setup` fills.
SHARED_MENAGERIE := $(abspath ../shared/menagerie)
export MENAGERIE_ROOT ?= $(if $(wildcard $(SHARED_MENAGERIE)/google_robot/robot.xml),$(SHARED_MENAGERIE),)
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1

.PHONY: help setup demo demo-train reference test lint bench clean
help:
	@echo "make demo   - set up, then the shipped reference model sim-rt1 on held-out simulated episodes:"
	@echo "              evaluate, per-action rollouts, plan, export to ONNX, verify, plan through the ROS 2 node"
	@echo "make demo-train - set up, simulate the RT-1-style dataset, train the three demo stages from scratch,"
	@echo "              evaluate, plan, export, verify, plan through the ROS 2 node (about 20 minutes)"
	@echo "make reference  - retrain the reference model sim-rt1 from scratch (resumable; its dynamics wants a GPU)"
	@echo "make test   - set up, then lint and run the test suite"
	@echo "make bench  - loader and simulator throughput (JSON lines)"
	@echo "ORT=gpu     - with any target: onnxruntime-gpu instead of onnxruntime (GPU robots)"

setup: $(STAMP)

$(STAMP):
	@echo "== setup: system packages"
	@if ! ldconfig -p | grep -q 'libEGL_mesa.so.0'; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi
	@if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null || [ "$(PY_HEADERS)" != 1 ]; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(BUILD_APT_PACKAGES) \
			$(if $(filter 1,$(PY_HEADERS)),,$(PY_DEV_APT)); \
	fi
	@echo "== setup: $(VENV) with pinned Python packages"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	@if [ "$(ORT)" = gpu ]; then \
		$(BIN)/python -m pip uninstall -q -y onnxruntime && $(BIN)/python -m pip install -q $(ORT_GPU); \
	elif $(BIN)/python -m pip show -q onnxruntime-gpu 2>/dev/null; then \
		$(BIN)/python -m pip uninstall -q -y onnxruntime-gpu && $(BIN)/python -m pip install -q --force-reinstall --no-deps -c constraints.txt onnxruntime; \
	fi
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@if [ -z "$$MENAGERIE_ROOT" ]; then $(BIN)/python -m mujoco_menagerie prefetch google_robot; fi
	@echo "== setup: genie_robot_interfaces (services and action of the ROS node) into $(VENV)"
	scripts/build_interfaces.sh $(VENV)
	@rm -f $(VENV)/.setup-stamp-* && touch $@
	@echo "== setup done"

# The held-out set of make demo and of the reference's card: simulated episodes with a simulator seed the
# reference never trained on (it trained on seed 0); 16 episodes give 48 clips of 8 frames.
REFERENCE := sim-rt1
HELDOUT_SEED := 1001
HELDOUT_EPISODES := 16
HELDOUT := outputs/heldout
HELDOUT_DATA := data.path=$(HELDOUT)/fractal20220817_data/0.1.0 data.val_fraction=1
HELDOUT_SIM := $(BIN)/genie-robot sim sim.out=$(HELDOUT) sim.seed=$(HELDOUT_SEED) sim.episodes=$(HELDOUT_EPISODES)
# The card's evaluation: eval's defaults (every held-out clip, 25 MaskGIT steps) at the card's temperature, CEM
# against random search on 40 of the clips (20 left the sixth release's margin within its noise: 1.86 standard
# errors; 34 of the 40 took 2 h 7 min of planning on 2 cores, and eval.resume=true continues a cut run).
REF_TEMPERATURE := 0.5
EVAL_REF = $(BIN)/genie-robot eval $(HELDOUT_DATA) eval.temperature=$(REF_TEMPERATURE)
REF_EVAL = $(EVAL_REF) eval.plan_episodes=40
# make demo's shorter one (inside 6 minutes on 2 cores), recorded on the card too, so make demo prints
# numbers the card has: 12 clips, one per-action grid of 4 frames, one small plan, at serving's 8 MaskGIT steps
# and planning's 4 (SAMPLING.serve_steps and plan_steps, world_model_node's defaults: with the fifth release's
# 4.5x larger dynamics, 25 and 8 took make demo to 6 min 41 s; on these 12 clips ΔtPSNR is 2.35 dB at 8 steps
# against 1.34 at 25).
DEMO_EVAL = $(EVAL_REF) eval.max_clips=12 eval.grid_contexts=1 eval.grid_horizon=4 eval.plan_episodes=1 \
	eval.plan_samples=8 eval.plan_iterations=2 eval.steps=8 eval.plan_steps=4

# Control steps of make demo's closed-loop episode (each a plan through world_model_node).
DEMO_CONTROL_STEPS := 2

demo: setup
	$(HELDOUT_SIM)
	$(DEMO_EVAL) ckpt=$(REFERENCE) eval.out=outputs/demo/eval
	@cat outputs/demo/eval/eval.md
	$(BIN)/python scripts/compare_card.py --name $(REFERENCE) --eval outputs/demo/eval/eval.json
	$(BIN)/genie-robot export ckpt=$(REFERENCE) out=outputs/export/$(REFERENCE)
	$(BIN)/genie-robot export-verify ckpt=$(REFERENCE) out=outputs/export/$(REFERENCE) > outputs/demo/export_verify.json
	@echo "export-verify: every graph within bounds, imagine in lockstep within them, plan action-identical (outputs/demo/export_verify.json)"
	@# On the robot: sim_robot_node, world_model_node on the export and control_node over ROS 2, closed loop.
	$(BIN)/python -m genie_robot_ros.demo out=outputs/export/$(REFERENCE) control.max_steps=$(DEMO_CONTROL_STEPS)
	@echo "demo outputs: $(HELDOUT)/fractal20220817_data/0.1.0 (held-out dataset, sim seed $(HELDOUT_SEED)),"
	@echo "  outputs/demo/eval/ (report, per-action rollouts actions_context*.png/.gif, plan.gif),"
	@echo "  outputs/export/$(REFERENCE)/ (ONNX graphs + manifest for genie_robot.runtime.OnnxWorldModel),"
	@echo "  outputs/demo/closed_loop/reach_*.gif (the sim robot driven by world_model_node's plans over ROS 2:"
	@echo "  camera | goal | imagined, a row per control step)"

DEMO_TRAIN := $(BIN)/genie-robot train model=demo train=demo
DEMO_RUN := outputs/train/demo

demo-train: setup
	$(BIN)/genie-robot sim
	$(BIN)/genie-robot data-info
	$(BIN)/genie-robot contact-sheet
	$(DEMO_TRAIN) stage=tokenizer train.steps=400 data.batch_size=4
	$(DEMO_TRAIN) stage=lam train.steps=400 data.batch_size=8
	$(DEMO_TRAIN) stage=dynamics train.steps=260 data.batch_size=4
	@mkdir -p outputs/demo
	@cp $(DEMO_RUN)/tokenizer/samples/reconstruction_step0000400.png outputs/demo/tokenizer_reconstruction.png
	@cp $(DEMO_RUN)/lam/samples/next_frame_step0000400.png outputs/demo/lam_next_frame.png
	@cp $(DEMO_RUN)/dynamics/samples/next_frame_step0000260.png outputs/demo/dynamics_next_frame.png
	@echo "== held-out evaluation (sim validation episodes):"
	@for s in tokenizer lam dynamics; do printf '%s: ' $$s; tr -d '\n ' < $(DEMO_RUN)/$$s/eval.json; echo; done
	$(BIN)/genie-robot fit-adapter model=demo adapter.train_clips=100 adapter.val_clips=32
	@# A short eval inside the 20-minute budget (the full one: `genie-robot eval`, docs/BENCHMARKS.md):
	@# 8 clips, 12 MaskGIT steps, one small plan. Temperature 0.3: the 1M-parameter CPU demo model's
	@# samples at the paper's 2.0 are mostly noise.
	$(BIN)/genie-robot eval model=demo eval.max_clips=8 eval.steps=12 eval.temperature=0.3 \
		eval.grid_contexts=1 eval.grid_horizon=4 eval.plan_episodes=1 eval.plan_samples=8 \
		eval.plan_iterations=2 eval.out=outputs/demo/eval
	@cat outputs/demo/eval/eval.md
	@# The robot's form of the model: ONNX graphs + manifest, checked against the torch model.
	$(BIN)/genie-robot export model=demo out=outputs/export/demo
	$(BIN)/genie-robot export-verify model=demo out=outputs/export/demo > outputs/demo/export_verify.json
	@echo "export-verify: every graph within bounds, imagine in lockstep within them, plan action-identical (outputs/demo/export_verify.json)"
	@# On the robot: sim_robot_node, world_model_node on the export and control_node over ROS 2, closed loop.
	$(BIN)/python -m genie_robot_ros.demo model=demo out=outputs/export/demo control.max_steps=$(DEMO_CONTROL_STEPS)
	@echo "demo outputs: outputs/sim/fractal20220817_data/0.1.0 (dataset), outputs/demo/*.png (contact sheet,"
	@echo "  reconstructions, next-frame predictions), outputs/demo/eval/ (report, per-action rollouts, plan.gif),"
	@echo "  $(DEMO_RUN)/<stage>/ (checkpoints, TensorBoard, eval.json), $(DEMO_RUN)/adapter.json,"
	@echo "  outputs/export/demo/ (ONNX graphs + manifest for genie_robot.runtime.OnnxWorldModel),"
	@echo "  outputs/demo/closed_loop/reach_*.gif (the sim robot driven by world_model_node's plans over ROS 2)"

# The reference model sim-rt1 (configs/model/sim_rt1.yaml, configs/train/reference.yaml): trained on
# the default simulated dataset (seed 0), each stage packaged into genie_robot/references/sim-rt1 as it
# finishes (weights + sha256 card). A cut run continues: REF_RESUME=true make reference.
REF_RUN := outputs/train/sim_rt1
REF_RESUME ?= false
REF_TRAIN = $(BIN)/genie-robot train model=sim_rt1 train=reference train.resume=$(REF_RESUME)
# The LAM's codes are trained as 16 actions, then merged into the model's 8 (scripts/merge_actions.py).
LAM_CODES := model.lam.decoder.attention=spatial model.lam.num_actions=16 model.lam.quantizer_codes=0
REF_EXTRA_SIM := outputs/sim2
REF_TOKENS := outputs/tokens/sim_rt1.npz
REF_DYNAMICS = $(REF_TRAIN) stage=dynamics data.tokens=$(REF_TOKENS) data.batch_size=32
# float16 weights: the 8.5M-parameter dynamics fits the 40 MB budget for shipped weights (docs/MODELS.md).
REF_DYNAMICS_PACKAGE := --fp16 dynamics --earlier dynamics=$(REF_RUN)/dynamics_first/dynamics
REF_PACKAGE := $(BIN)/python scripts/package_reference.py --run $(REF_RUN) --name $(REFERENCE) \
	--docs docs/REFERENCE_$(REFERENCE).md

reference: setup
	$(BIN)/genie-robot sim
	$(REF_TRAIN) stage=tokenizer train.steps=2400 data.batch_size=4
	$(REF_PACKAGE) --stages tokenizer
	@# The LAM's codes: 2,000 steps with a spatial decoder and 16 binary-FSQ codes (docs/MODELS.md, "FSQ instead
	@# of the VQ", "Sixteen codes merged into eight actions"), merged into 8 actions by what the decoder draws for
	@# each; then its decoder alone, grown a temporal attention, 1,000 steps around the frozen merge ("The LAM
	@# decoder retrained"), which becomes the run's lam/.
	$(REF_TRAIN) stage=lam train.steps=2000 data.batch_size=8 $(LAM_CODES) train.eval_every=250 \
		train.out_dir=$(REF_RUN)/codes16
	$(BIN)/python scripts/merge_actions.py --lam $(REF_RUN)/codes16/lam --out $(REF_RUN)/codes/lam
	$(REF_TRAIN) stage=lam train.steps=1000 data.batch_size=8 train.init_from=$(REF_RUN)/codes/lam \
		train.init_from_allow_new=true train.lam_codes_frozen=true train.optim.lam.lr=5e-4 \
		train.optim.lam.warmup_steps=50 train.eval_every=250
	$(REF_PACKAGE) --stages lam
	@# The dynamics ("Dynamics trained on a lent GPU"): 512 more simulated episodes (seed 2), the training clips of
	@# both datasets tokenized once by the frozen tokenizer and LAM, then two runs from the tokens. The shipped
	@# one ran on an H200 (scripts/gpu_lease.sh: about 4 min each); on 2 CPU cores a step of 2 clips took 11-12 s
	@# (two runs sharing them), so run these two lines where torch sees a GPU (bf16 autocast there).
	@# The sixth release's dynamics did not: the fifth's, carried over to the merged actions by
	@# scripts/remap_actions.py and fine-tuned 600 steps on the 2 CPU cores (commands in docs/MODELS.md,
	@# "Sixteen codes merged into eight actions").
	$(BIN)/genie-robot sim sim.out=$(REF_EXTRA_SIM) sim.seed=2 sim.episodes=512
	$(BIN)/genie-robot tokenize-data model=sim_rt1 train=reference train.tokenizer_ckpt=$(REF_RUN)/tokenizer \
		train.lam_ckpt=$(REF_RUN)/lam data.clip_hop=2 tokens.out=$(REF_TOKENS) \
		tokens.extra=[$(REF_EXTRA_SIM)/fractal20220817_data/0.1.0]
	$(REF_DYNAMICS) train.steps=1216 train.optim.dynamics.lr=1e-3 train.optim.dynamics.warmup_steps=300 \
		train.out_dir=$(REF_RUN)/dynamics_first
	$(REF_DYNAMICS) train.steps=935 train.init_from=$(REF_RUN)/dynamics_first/dynamics \
		train.optim.dynamics.lr=5e-4 train.optim.dynamics.warmup_steps=50
	$(BIN)/genie-robot fit-adapter ckpt=$(REF_RUN)
	$(HELDOUT_SIM)
	$(REF_PACKAGE) --stages dynamics $(REF_DYNAMICS_PACKAGE)
	$(REF_EVAL) ckpt=$(REFERENCE) eval.out=outputs/eval/$(REFERENCE)
	$(DEMO_EVAL) ckpt=$(REFERENCE) eval.out=outputs/eval/$(REFERENCE)-demo
	$(REF_PACKAGE) --stages dynamics $(REF_DYNAMICS_PACKAGE) --eval outputs/eval/$(REFERENCE)/eval.json \
		--demo-eval outputs/eval/$(REFERENCE)-demo/eval.json

lint: setup
	$(BIN)/ruff check genie_robot export ros_nodes tests scripts
	@# The layer contract in pyproject.toml (docs/ARCHITECTURE.md): packages import downward only.
	$(BIN)/lint-imports --no-cache

# The bag and LeRobot tests run in a pytest process of their own: in the same process, before tests/ros_nodes,
# the node load test's first client stalled (2 of 2 runs; the ROS tests pass after the other data tests and alone).
# Not understood yet: docs/DATA.md "Open problem".
# The play tests (a browser driven from the test process) run there too, after the ROS node's tests.
NEW_DATA_TESTS := tests/data/test_bag.py tests/data/test_lerobot.py
SEPARATE_TESTS := $(NEW_DATA_TESTS) tests/play
# The play page's test drives a real browser: Debian's Chromium (Playwright's own browser download fails offline).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

test: setup lint $(CHROMIUM)
	$(BIN)/python -m pytest -q tests $(addprefix --ignore=,$(SEPARATE_TESTS))
	$(BIN)/python -m pytest -q $(SEPARATE_TESTS)

bench: setup
	$(BIN)/genie-robot bench sim
	$(BIN)/genie-robot bench data

clean:
	rm -rf outputs .pytest_cache
