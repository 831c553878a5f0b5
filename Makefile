# thoth-pbx: two commands do all set-up on a fresh Debian/Ubuntu machine.
#   make run   - venv, install, migrate, start the service on SQLite
#   make test  - test deps, PostgreSQL, the Asterisk 22 chroot, the gates (make lint), then the whole suite
#   make bench - benchmarks (JSON), not part of the test run
#   make demo  - the whole product on loopback with simulated Meta and Bitrix24 (docs/demo.md)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test bench venv test-deps system-deps asterisk-harness clean lint lock screenshots demo

venv: $(STAMP)

# Versions come from requirements.lock (what the tests ran with); `make lock` renews it.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "thoth-pbx needs Python >= 3.11"'
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps --no-build-isolation -e '.[test]'
	$(PIP) check
	@touch $@

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip && .lock-venv/bin/pip install -q '.[test]'
	{ echo "# Pinned versions for \`make venv\` (all of '.[test]'), from \`make lock\`. Edit pyproject.toml, then run \`make lock\`."; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v '^thoth' ; } > requirements.lock
	rm -rf .lock-venv

# The gates: style, types, import rules (pyproject.toml holds their configuration).
lint: venv
	$(VENV)/bin/ruff check thoth_pbx tests bench scripts
	$(VENV)/bin/ruff format --check thoth_pbx tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

run: venv
	$(VENV)/bin/thoth-pbx serve

# Debian packages the tests need: PostgreSQL server binaries, debootstrap for the
# Asterisk chroot, psql, Chromium and its driver for the panel's browser tests
# (tests/browser/). Installed only when missing.
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v psql >/dev/null || missing="$$missing postgresql-client"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing="$$missing debian-archive-keyring"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

asterisk-harness: system-deps
	$(SUDO) $(PYTHON) scripts/asterisk-sandbox build

test-deps: venv system-deps asterisk-harness

test: test-deps lint
	$(PY) -m pytest -q -p no:cacheprovider --timeout=300 $(PYTEST_ARGS)

# The admin panel's screenshots in docs/panel.md, taken by its browser tests (tests/browser/).
screenshots: test-deps
	rm -rf docs/img/panel
	THOTH_SCREENSHOTS=docs/img/panel $(PY) -m pytest -q -p no:cacheprovider --timeout=300 tests/browser

# Simulated Meta and Bitrix24, the harness Asterisk as PBX, `serve` on SQLite and a scene every
# minute (DEMO_ARGS="--every 0": on Enter). Ctrl-C stops everything it started (docs/demo.md).
DEMO_ARGS ?=
demo: test-deps
	$(SUDO) $(PY) scripts/demo.py $(DEMO_ARGS)

bench: test-deps
	@mkdir -p bench/results
	@for b in bench/*.py; do echo "== $$b" >&2; $(PY) $$b | tee bench/results/$$(basename $$b .py).json; done

clean:
	rm -rf $(VENV) dist build *.egg-info
