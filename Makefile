# Two commands do everything on a fresh machine:
#   make demo   set up (venv, install, models) and protect the built-in sample video
#   make test   set up the same way and run the whole test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Test processes (pytest-xdist); each file's tests stay in one process, sharing its fixtures.
TEST_WORKERS ?= 2

.PHONY: setup models browser demo test test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build; nothing installed after it may replace it.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,ray]"
	touch $@

# One sample clip (OpenCV's pedestrians) comes from Debian's archive through apt-get download:
# its package lists are read first where they are missing.
models: setup
	@apt-cache show opencv-doc >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq ; } || true
	$(BIN)/veil models pull --all

demo: models
	$(BIN)/veil demo

# The HTML report and veil review's page are tested in headless Chromium and its driver (Debian's
# chromium and chromium-driver); without them those tests are skipped and say why.
browser:
	@{ command -v chromium && command -v chromedriver ; } >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium chromium-driver >/dev/null) ; } || \
	  echo "chromium or chromium-driver not installed: the browser tests will be skipped"

test: models browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slow: models
	VEIL_SLOW=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: models
	$(BIN)/python bench/protect_speed.py
	$(BIN)/python bench/photo_speed.py

clean:
	rm -rf $(VENV) out .pytest_cache
