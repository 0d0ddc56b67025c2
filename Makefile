# agserve: `make run` serves the demo model, `make test` runs the suite but its soaks, `make soak` those. All set up.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The stamp changes whenever a pinned requirement changes, so `make` reinstalls exactly then.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt setup.cfg 2>/dev/null | sha256sum | cut -c1-12)
export AGSERVE_BIND ?= 127.0.0.1:8000

.PHONY: install kserve-client system-packages demo run test soak bench bench-knobs reliability deploy undeploy status clean help docs

help:
	@echo "make run    set up, train, validate and promote the iris demo model, create a first API key, serve on $(AGSERVE_BIND)"
	@echo "make test   set up and run the test suite, except the soaks, on two xdist workers (about 10 minutes)"
	@echo "make soak   the soaks: fault scenarios and five minutes of sustained load (about 7 minutes)"
	@echo "make docs   regenerate docs/configuration.md from the settings table"
	@echo "make bench  measure the server against in-process AutoGluon; writes BENCHMARKS.md"
	@echo "make bench-knobs  after make bench: worker shapes and recycling settings, appended to BENCHMARKS.md"
	@echo "make reliability  run the fault scenarios under load; writes RELIABILITY.md"
	@echo "make deploy [DEPLOY_TARGET=local|k8s]  start or gracefully update the server; make undeploy, make status"
	@echo "make clean  remove the virtual environment and caches"

$(STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "agserve needs $(PYTHON) (AutoGluon loads a predictor only on the Python that saved it)"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check pip==26.3 setuptools==80.9.0 wheel==0.45.1
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

# KServe's client (tests/api/kserve_client.py) in a venv of its own: kserve pins psutil<6, agserve runs 7.x.
KSERVE_VENV ?= .venv-kserve
KSERVE_STAMP := $(KSERVE_VENV)/.installed-$(shell cat requirements-kserve.txt 2>/dev/null | sha256sum | cut -c1-12)

$(KSERVE_STAMP):
	rm -rf $(KSERVE_VENV)
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-kserve.txt
	touch $@

kserve-client: $(KSERVE_STAMP)

# Debian packages the tests use for real; PostgreSQL's binaries live in /usr/lib/postgresql/<major>/bin.
system-packages:  # real programs the tests use: prometheus and promtool, redis-server, chromium, nginx, postgresql
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v redis-server >/dev/null && command -v chromium >/dev/null \
	  && { command -v nginx >/dev/null || test -x /usr/sbin/nginx; } \
	  && { command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || { \
	  echo "installing Debian packages the tests use: prometheus (and promtool), redis-server, chromium, nginx, postgresql"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus redis-server chromium \
	  nginx postgresql >/dev/null; }

demo: install
	$(BIN)/agserve demo --bind $(AGSERVE_BIND)

run: demo
	exec $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# Two xdist workers: most server tests wait on their servers; tests/conftest.py keeps a module (and the fleet) on one.
test: install kserve-client system-packages
	$(BIN)/python -m pytest -m "not soak" -n 2 --dist loadfile $(PYTEST_ARGS)

soak: install system-packages
	$(BIN)/python -m pytest -m soak $(PYTEST_ARGS)

DEPLOY_TARGET ?= local

deploy: install  # DEPLOY_TARGET=local (default): daemonised gunicorn, graceful reload on update; k8s: see deploy/k8s.sh
	BIN=$(BIN) deploy/$(DEPLOY_TARGET).sh deploy

undeploy:
	BIN=$(BIN) deploy/$(DEPLOY_TARGET).sh undeploy

status:
	BIN=$(BIN) deploy/$(DEPLOY_TARGET).sh status

docs: install  # docs/configuration.md from the settings table in app/config.py
	$(BIN)/python -c "from app.config import configuration_page; print(configuration_page(), end='')" > docs/configuration.md

reliability: install system-packages
	$(BIN)/python -m pytest tests/reliability -m soak -q
	$(BIN)/python bench/reliability.py

bench: install
	@command -v hey >/dev/null || { echo "installing hey (Debian package) for the load"; apt-get update -qq && apt-get install -y -qq hey; }
	$(BIN)/python bench/run.py

bench-knobs: install  # after make bench: worker shapes and recycling, appended to BENCHMARKS.md
	@command -v hey >/dev/null || { echo "installing hey (Debian package) for the load"; apt-get update -qq && apt-get install -y -qq hey; }
	$(BIN)/python bench/knobs.py

clean:
	rm -rf $(VENV) $(KSERVE_VENV) .pytest_cache build *.egg-info
