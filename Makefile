# The two commands a fresh Debian/Ubuntu machine needs (see README.md):
#   make demo   set everything up, then run the local demo (upbx demo)
#   make test   set everything up, build the 32-bit MicroPython images, then run every test
# Set-up is idempotent: a stamp file skips it when pyproject.toml has not changed. Under CI=true a
# Debian package that cannot be installed (not root, no apt-get, apt-get failing) fails the set-up;
# elsewhere the tests that need it skip.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.upbx-setup
# gcc-multilib: the 32-bit MicroPython unix port (tools/images.py) that CI runs the handset on;
# systemd: systemd-analyze, which checks the units in host/systemd (tests/test_raspberry_pi.py)
# libssl-dev: OpenSSL's headers, for the relay's C fast path built at install (host/_fastpath.c, docs/relay.md)
# rtpengine-daemon: the bench extra's reference relay, `upbx bench relay --peer rtpengine` (docs/benchmarks.md)
# baresip-core: baresip without its GUI front-ends, a SIP phone nobody here wrote, for the SIP tests and `upbx demo sip` (tools/baresip.py, docs/sip.md)
# postgresql redis-server etcd-server: the main host cluster's engines, started privately by its tests (tools/cluster_lab.py, docs/cluster.md)
# patroni: PostgreSQL failover (a primary and a synchronous streaming replica on etcd), for the engine failover tests (tests/test_cluster_engines_failover.py)
# kamailio: a SIP provider nobody here wrote, for the trunk tests (tests/test_sip_kamailio.py, docs/sip.md)
# valgrind: callgrind counts the handset's instructions, `upbx bench handset --instructions` (docs/benchmarks.md)
# The packages' own services are not started by the install (a policy-rc.d saying 101 while apt-get
# runs, when the machine has none): every test starts its own instance on its own ports, and a
# system Kamailio on 5060 or PostgreSQL on 5432 would only be in the way.
DEBS   := python3-venv python3-dev build-essential libssl-dev gcc-multilib iproute2 nftables socat espeak-ng systemd \
          rtpengine-daemon chromium chromium-driver baresip-core kamailio postgresql redis-server etcd-server patroni \
          valgrind

.PHONY: setup images demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py host/_fastpath.c Makefile
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
	    chmod +x /usr/sbin/policy-rc.d; policy=1; fi; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "apt-get failed installing:$$missing"; \
	  if [ -n "$$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$CI" = true ]; then echo "CI: Debian packages not installed:$$missing (the set-up needs root and apt-get)"; exit 1; fi; \
	  echo "Debian packages not installed:$$missing; the tests that need them will skip"; \
	fi
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/upbx demo

images: setup
	$(PY) -m upbx.tools.images

# 4 pytest-xdist workers, each module on one, the longest first (pyproject.toml addopts, docs/tests.md)
test: setup images
	$(VENV)/bin/pytest -q

bench: setup
	$(VENV)/bin/upbx bench

clean:
	rm -rf $(VENV) build *.egg-info
