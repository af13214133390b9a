# Quick start: `make demo` runs the main job, `make test` the tests. Both set everything up
# on a fresh machine first (a .venv with torch, the ROS 2 wheels and this package).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test lint demo colcon clean help

help:
	@echo "make test   - set up .venv (first run) and run the test suite"
	@echo "make demo   - set up .venv and run the end-to-end demo"
	@echo "make lint   - ruff"
	@echo "make colcon - build the package with colcon into build/ and install/"

# Re-runs the installs only when the pins or setup.py change.
$(STAMP): requirements.txt constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check seg_perception test launch

demo: $(STAMP)
	$(VENV)/bin/seg-perception demo --out demo_out/run_$$(date +%Y%m%d_%H%M%S)

colcon: $(STAMP)
	. $(VENV)/bin/activate && colcon build --base-paths . --build-base build \
		--install-base install

clean:
	rm -rf $(VENV) build install log .pytest_cache
