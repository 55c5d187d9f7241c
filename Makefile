# The two commands a fresh Debian/Ubuntu machine needs (see README.md):
#   make demo   set everything up, then run the local demo (upbx demo)
#   make test   set everything up, then run every test
# Set-up is idempotent: a stamp file skips it when pyproject.toml has not changed.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.upbx-setup
DEBS   := python3-venv python3-dev build-essential iproute2 nftables socat espeak-ng

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "not root: skipping Debian packages ($(DEBS)); tests that need them will skip"; fi
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/upbx demo

test: setup
	$(VENV)/bin/pytest -q

bench: setup
	$(VENV)/bin/upbx bench

clean:
	rm -rf $(VENV) build *.egg-info
