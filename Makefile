# Two commands for a fresh machine (see README):
#   make demo   set up .venv, then run convscope on the main examples
#   make test   set up .venv, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned: 2.13.0 is the CPU build on this machine's disk; an open range would pull a
# multi-GB CUDA build (see DEVELOPERS.md).
TORCH  ?= torch==2.13.0
# Where pip finds torch: empty = pip's own configuration (this project's machines); elsewhere
# TORCH_INDEX=https://download.pytorch.org/whl/cpu gets the CPU build.
TORCH_INDEX ?=
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup bench clean browser

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

# The main job: the receptive-field analysis of a zoo network, then the camera question (issue 5):
# time the plan's layers here (cached: a second run is quick), compare the five designs, write report.html.
# A machine too busy to time its layers (calibrate says so and keeps what it timed) still gets an
# answer: the same comparison on the shipped desktop-cpu profile, labelled as such.
demo: $(STAMP)
	$(BIN)/convscope zoo list
	$(BIN)/convscope analyze zoo:vgg16-cifar
	@if $(BIN)/convscope calibrate examples/camera/plan.yaml; then \
	  $(BIN)/convscope compare examples/camera/plan.yaml --html report.html; \
	else \
	  echo "calibrate could not finish here (see above; run it again when the machine is quieter):"; \
	  echo "comparing on the analytic desktop-cpu profile instead"; \
	  $(BIN)/convscope compare examples/camera/plan.yaml --device desktop-cpu --html report.html; \
	fi
	@echo "report written: $(CURDIR)/report.html"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# The HTML report is checked in a real browser: Debian's chromium and chromedriver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }

bench: $(STAMP)
	$(BIN)/python bench/analysis_speed.py
	$(BIN)/python bench/frontend_speed.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
