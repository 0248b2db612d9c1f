# fioca: `make demo` runs the whole create flow on a sandbox; `make test` runs the tests.
# Both first make sure of the Debian packages they need (installed when run as root, else one
# line naming the `apt-get install` to run, before anything else), then set up their own
# virtual environment (.venv) on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
DEMO   ?= demo-data

# What fioca itself runs: openssl for the scripts, bubblewrap as the jail they run in.
RUN_PACKAGES  = openssl bubblewrap
# What the tests add: the real peers (curl and jq for the documented hand-run flow, nginx as
# a second gateway, SoftHSM2 + OpenSC + the pkcs11 engine as the HSM, tmux as a terminal).
TEST_PACKAGES = $(RUN_PACKAGES) curl jq nginx-light softhsm2 opensc libengine-pkcs11-openssl tmux

.PHONY: venv demo test bench bench-large clean clean-room demo-packages test-packages

# $(call packages,LIST): install the missing ones as root, else say which command to run and stop.
# python3-venv joins the list when this Python cannot make a virtual environment.
define packages
	@missing=""; \
	for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing Debian packages:$$missing"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else \
			echo "fioca needs Debian packages that are missing; run: sudo apt-get install$$missing"; \
			exit 2; \
		fi; \
	fi
endef

demo-packages:
	$(call packages,$(RUN_PACKAGES))

test-packages:
	$(call packages,$(TEST_PACKAGES))

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# A sandbox factory in the background, `keys ca create` against it, the result, then stop.
demo: demo-packages $(STAMP)
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

test: test-packages $(STAMP)
	$(BIN)/pytest -n 2 -q

# Every figure as a ratio against its baseline, alternated over BENCH_ROUNDS rounds (5).
bench: test-packages $(STAMP)
	$(BIN)/python -m tests.bench

# The device batch at 100,000 devices, 3 rounds (about 3 GB on BENCH_DISK_TMP, /var/tmp, meanwhile).
bench-large: test-packages $(STAMP)
	$(BIN)/python -m tests.bench.bench_large

# `make demo` and `make test` on a fresh minimal Debian root (as root, network needed; see the script).
clean-room:
	sh tests/clean_room.sh

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
