# Two commands do all setup on a fresh machine:  `make demo`  and  `make test`.
# Both install first (once; the stamp file is redone when setup.py changes) into the active Python environment.
PYTHON ?= python3
# torch/torchvision pinned to the pair that installs together (torchvision from the registry does not work with
# other torch builds here); users on another CUDA install their own pair first and run `make ... TORCH_PIN=` (empty:
# the torch step is skipped).
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
# TORCH_INDEX: a wheel index for the torch step only, e.g. PyTorch's CPU-only wheels (a ~1 GB install instead of the
# ~6 GB CUDA build): make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: install demo test
install: .installed
.installed: setup.py
	$(if $(strip $(TORCH_PIN)),$(PYTHON) -m pip install $(TORCH_PIN) $(if $(strip $(TORCH_INDEX)),--index-url $(TORCH_INDEX)))
	$(PYTHON) -m pip install -e ".[test,export]"
	touch $@

demo: install
	$(PYTHON) -m mdrn_cli demo

# one single-threaded pytest worker per core (up to 4): on 2 cores about twice as fast as one multi-threaded run
test: install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -rs -n auto --maxprocesses=4 --durations=10 tests
