# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench zoo clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test,ray]"
	touch $@

# The browser test drives Chromium (Debian's package): installed here, never by a test.
install: $(VENV)/.installed
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium)

zoo: install
	$(VENV)/bin/interp zoo build --out data/zoo

demo: install
	$(PY) -m interp.demo

# Everything, the full-zoo behaviour tests included; every threshold of the zoo issue is asserted (tests/test_zoo.py).
# The zoo is built first, outside pytest (about 14 minutes on 2 cores the first time, cached per code hash), so the
# suite's run-time shape checks (tests/conftest.py) do not slow its training.
test: install
	$(PY) -c "from interp.zoo import ensure_zoo; ensure_zoo(quick=True); ensure_zoo()"
	$(PY) -m pytest -q

# The fast subset: everything but the full-zoo tests (marked `zoo`).
test-fast: install
	$(PY) -m pytest -q -m "not zoo"

bench: install
	$(PY) -m benchmarks.patching_vs_transformer_lens

clean:
	rm -rf $(VENV) data/zoo
