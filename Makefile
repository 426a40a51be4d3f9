# Two entry points (see README): `make demo` (set up + main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
DEMO_OUT ?= demo_out

.PHONY: setup system-deps demo test test-slow bench docs clean

setup: $(STAMP)

# torch is pinned first: its CPU wheel is available locally; other specs pull several GB of CUDA.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

# Headless Chromium for the QC-report browser test (Debian package; skipped when already there).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: the report browser test will be skipped"; fi; }

demo: setup
	$(BIN)/torchalign demo -o $(DEMO_OUT) --overwrite

test: setup system-deps
	$(BIN)/python -m pytest

test-slow: setup system-deps
	$(BIN)/python -m pytest -m slow

# The documentation site into site/: tutorials executed (their images come from ../shared/data),
# API reference from the docstrings; strict, so a broken link or reference fails the build.
DOCS_STAMP := $(VENV)/.docs-installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	rm -f $(VENV)/.docs-installed-*
	touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=src $(BIN)/mkdocs build --strict

bench: setup
	$(BIN)/python benchmarks/linear.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache site docs/generated
