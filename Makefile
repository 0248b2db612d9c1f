# fioca: `make demo` runs the whole create flow on a sandbox; `make test` runs the tests.
# Both set up their own virtual environment (.venv) on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
DEMO   ?= demo-data

.PHONY: venv demo test bench bench-large clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# A sandbox factory in the background, `keys ca create` against it, the result, then stop.
demo: $(STAMP)
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	@set -e; \
	$(BIN)/fioca sandbox serve --data $(DEMO)/sandbox & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null' EXIT; \
	for i in $$(seq 100); do [ -f $(DEMO)/sandbox/sandbox.json ] && break; sleep 0.1; done; \
	export FIOCTL_CONFIG=$(DEMO)/sandbox/fioctl.yaml; \
	echo; echo '$$ fioca keys ca create $(DEMO)/pki-preview --dry-run   (first, see what the server sent; last lines)'; \
	$(BIN)/fioca keys ca create $(DEMO)/pki-preview --dry-run | tail -n 20; \
	echo; echo '$$ fioca keys ca create $(DEMO)/pki --yes'; \
	$(BIN)/fioca keys ca create $(DEMO)/pki --yes; \
	echo; echo '$$ fioca keys ca show --just-root --pretty'; \
	$(BIN)/fioca keys ca show --just-root --pretty; \
	echo; echo '$$ ls -l $(DEMO)/pki'; ls -l $(DEMO)/pki; \
	echo; echo '$$ fioca device create-offline $(DEMO)/pki --count 3'; \
	$(BIN)/fioca device create-offline $(DEMO)/pki --count 3; \
	device=$$(ls -d $(DEMO)/pki/devices/*/ | head -n 1); \
	echo; echo "\$$ fioca device check $$device --pki-dir $(DEMO)/pki   (mTLS; registered on first request)"; \
	$(BIN)/fioca device check $$device --pki-dir $(DEMO)/pki; \
	echo; echo '$$ fioca sandbox devices --data $(DEMO)/sandbox'; \
	$(BIN)/fioca sandbox devices --data $(DEMO)/sandbox

test: $(STAMP)
	$(BIN)/pytest -n 2 -q

# Every figure as a ratio against its baseline, alternated over BENCH_ROUNDS rounds (5).
bench: $(STAMP)
	$(BIN)/python -m tests.bench

# The device batch at 100,000 devices, 3 rounds (about 3 GB on BENCH_DISK_TMP, /var/tmp, meanwhile).
bench-large: $(STAMP)
	$(BIN)/python -m tests.bench.bench_large

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
