# pointseg: `make demo` to see it work, `make test` to check it.
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch
TORCH_INDEX ?=
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip

.PHONY: install install-dev minkowski minkowski-cuda-check gpu-check test bench demo study study-report study-v1 study-scannet200-synthetic clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is installed only when missing, so a CUDA build already in the environment is kept.
# TORCH_SPEC pins a version, TORCH_INDEX picks an index (https://download.pytorch.org/whl/cpu:
# the CPU build; PyPI's default torch for Linux is a CUDA build of several GB).
INSTALL_TORCH = $(PY) -c "import torch" 2>/dev/null || $(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"

install: $(PY)
	$(INSTALL_TORCH)
	$(PIP) install -e ".[spconv]"

install-dev: $(PY)
	$(INSTALL_TORCH)
	$(PIP) install -e ".[spconv,dev]"

# MinkowskiEngine 0.5.4 built from its sdist against this environment's torch: CUDA where the torch
# is a CUDA build, nvcc is on PATH and a GPU is visible or TORCH_CUDA_ARCH_LIST names the
# architectures; otherwise CPU (it says why; MINKOWSKI_CPU_ONLY=1 forces CPU). Cached per
# Python/torch/CUDA version/architectures.
minkowski: install
	VENV=$(VENV) tools/install_minkowski.sh

# The CUDA build without a GPU (TORCH_CUDA_ARCH_LIST, default 9.0: H100/H200), imported, with what
# it was built for. Long (the CUDA sources): not part of CI.
minkowski-cuda-check: install
	VENV=$(VENV) TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-9.0}" tools/install_minkowski.sh
	$(PY) tools/minkowski_info.py --require-cuda

# On a GPU machine: the CUDA tests, backend agreement on CUDA and a MinkUNet34C training step per
# backend (bench/results/gpu.json), in about 5 minutes; without a GPU it says so and succeeds. Runs
# on the machine's own Python where no .venv exists (a GPU machine may reach no package index).
# MINKOWSKI_WHEEL=path.whl: a MinkowskiEngine CUDA wheel built elsewhere, imported without pip.
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) tools/gpu_check.py $(if $(MINKOWSKI_WHEEL),--minkowski-wheel $(MINKOWSKI_WHEEL))

test: install-dev
	$(PY) -m pytest -q

bench: install-dev
	$(PY) bench/run_all.py

demo: install
	$(PY) tools/demo.py --out outputs/demo

# The second long-tail study (docs/study.md): resumable, skips runs whose summaries are committed,
# and commits each run's summary as it is written (STUDY_FLAGS= to leave git alone).
STUDY_FLAGS ?= --commit
study: install
	$(PY) tools/study_v2.py --out outputs/study2 --results docs/study/v2 --doc docs/study.md $(STUDY_FLAGS)

# The results block of docs/study.md from the committed summaries alone (interim until all are in).
study-report: install
	$(PY) tools/study_v2.py --report-only --results docs/study/v2 --doc docs/study.md

study-v1: install
	$(PY) tools/study.py --out outputs/study --doc docs/study.md

# The same arms on the full 200-class synthetic ScanNet, sized for a GPU.
study-scannet200-synthetic: install
	$(PY) tools/study.py --benchmark scannet200-synthetic --iterations 20000 --snapshot-every 5000 --jobs 1 \
		--out outputs/study_scannet200_synthetic --doc outputs/study_scannet200_synthetic/study.md

clean:
	rm -rf outputs build *.egg-info
