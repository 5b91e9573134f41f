# Two commands a researcher needs: `make test` and `make demo` (`make lint` keeps the tree clean).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench lint clean

install: $(STAMP)

# Re-installs only when requirements.txt changed since the last install.
$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# The whole suite with this machine's CPU precision decision, then the tests whose outcome depends on
# that decision (marked `precision`) with the other one (PASST_CPU_PRECISION), so every machine runs both.
test: $(STAMP)
	$(PY) -m pytest
	$(PY) -m pytest -m precision --cpu-precision=other

demo: $(STAMP)
	$(PY) demo.py

bench: $(STAMP)
	$(PY) benchmarks/train_speed.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
