# The README's two commands: `make demo` (set up + main job on the defaults) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= true

.PHONY: demo test bench-speed clean

# torch first, pinned: the CPU build on disk. Unpinned, pip would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(PY) cli.py fit --train data/demo/train.csv --test data/demo/test.csv --head logreg --out runs/demo-logreg-$$(date +%Y%m%d-%H%M%S)

# Two workers, each on its share of the cores (tests/conftest.py sets OMP_NUM_THREADS): Ray's tests (one
# cluster for the module, ~2 min) hold one while the other takes the rest; the CLI runs in-process where the
# process is not the point. --durations names what to make faster next.
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=10

# Embedding speed vs sentence-transformers (10,000 SST-2 texts) and each precision's Banking77 accuracy.
bench-speed: $(VENV)/.installed
	$(PY) benchmarks/embed_speed.py --precision fp32 auto int8 --repeat 2
	$(PY) benchmarks/precision_accuracy.py

clean:
	rm -rf $(VENV) runs
