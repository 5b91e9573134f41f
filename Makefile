# Two commands a researcher needs: `make test` and `make demo` (`make lint` keeps the tree clean).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
# the model of `make app` and `make export`: a released architecture, ensemble or checkpoint file
MODEL ?= passt_s_kd_p16_128_ap486

.PHONY: install browser test test-fast demo app export bench lint clean

install: $(STAMP) browser

# Re-installs only when requirements.txt or pyproject.toml changed since the last install. The project itself
# is installed editable (`pip install -e .`, no dependency resolution: requirements.txt has installed them): its
# packages import from any folder and the commands passt-tag, passt-export and passt-app are in $(VENV)/bin.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian's Chromium for the web demo's browser test (Playwright drives it; it downloads no browser).
# apt-get as root (CI), else through sudo.
browser:
	@test -x $(CHROMIUM) || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing Debian's chromium for the browser test"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

# The whole suite with this machine's CPU precision decision, then the tests whose outcome depends on
# that decision (marked `precision`) with the other one (PASST_CPU_PRECISION), so every machine runs both.
# TEST_WORKERS processes (pytest-xdist) share the tests; a test file stays in one of them (its module
# fixtures are made once). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: $(STAMP) browser
	$(PY) -m pytest $(XDIST)
	$(PY) -m pytest $(XDIST) -m precision --cpu-precision=other

# Everything but the tests marked `slow` (real commands in subprocesses, DDP, fault injection, the
# browser, exports, compilation): under a minute, for the edit-test loop. `make test` runs them all.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

demo: $(STAMP)
	$(PY) demo.py

# the web demo on http://127.0.0.1:7860 (`make app MODEL=path/to/last.ckpt`)
app: $(STAMP)
	$(PY) app.py --model $(MODEL)

# ONNX + torch.export files of MODEL in exported/
export: $(STAMP)
	$(PY) export.py --model $(MODEL)

bench: $(STAMP)
	$(PY) benchmarks/train_speed.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
