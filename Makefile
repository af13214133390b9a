# Quick start: `make demo` runs the main job, `make test` the tests. Both set everything up
# on a fresh machine first (a .venv with torch, the ROS 2 wheels and this package).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test worker processes (pytest-xdist; loadscope keeps a module's tests on one worker). Most of
# a test waits on DDS, a node's start-up or a subprocess, so 3 workers keep 2 cores busy: the
# suite takes ~10 min instead of ~19 here. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3
# The ROS 2 pieces no registry has (ros2 CLI, launch, launch_testing, tf2_ros, vision_msgs),
# built into the venv by ../shared/ros2/install.sh where that exists (CI); see docs/development.md.
ROS2_KIT_SCRIPT := $(wildcard ../shared/ros2/install.sh)
ROS2_KIT := $(if $(ROS2_KIT_SCRIPT),$(VENV)/.ros2_kit_installed)

.PHONY: venv ros2-kit test lint demo colcon clean help

help:
	@echo "make test   - set up .venv (first run) and run the test suite"
	@echo "make demo   - set up .venv and run the end-to-end demo"
	@echo "make lint   - ruff"
	@echo "make ros2-kit - add ../shared/ros2's ROS 2 tools to .venv (make test does it too)"
	@echo "make colcon - build the package with colcon into build/ and install/"

# Re-runs the installs only when the pins or setup.py change.
$(STAMP): requirements.txt constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# Rebuilt when the kit's script changes or the venv was (re)installed after it, since the kit
# compiles against the venv's ROS 2 wheels; otherwise make does not even start the script.
ifneq ($(ROS2_KIT),)
$(ROS2_KIT): $(ROS2_KIT_SCRIPT) $(STAMP)
	rm -f $@
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt bash $(ROS2_KIT_SCRIPT) $(VENV)
endif

ros2-kit: $(STAMP) $(ROS2_KIT)
ifeq ($(ROS2_KIT),)
	@echo "../shared/ros2/install.sh is absent: the tests that need the ROS 2 tools skip" \
	      "unless a ROS 2 install is sourced"
endif

test: $(STAMP) $(ROS2_KIT)
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check seg_perception test launch

demo: $(STAMP)
	$(VENV)/bin/seg-perception demo --out demo_out/run_$$(date +%Y%m%d_%H%M%S)

colcon: $(STAMP)
	. $(VENV)/bin/activate && colcon build --base-paths . --build-base build \
		--install-base install

clean:
	rm -rf $(VENV) build install log .pytest_cache
