# Two commands on a fresh machine with only Python:
#   make run    set up .venv if needed, then start the app on the embedded data
#   make test   set up .venv if needed, then run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test setup browser cluster bench clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# Debian's Chromium drives the browser tests (a downloaded browser build is not used).
browser:
	@test -x /usr/bin/chromium || (command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: browser tests are skipped here, and fail where CI=true")

# Debian's Slurm and munge for the one-node cluster tests/test_slurm.py starts (as root, its own
# daemons on free ports; the packages' own services are not used).
cluster:
	@(command -v slurmctld >/dev/null && command -v munged >/dev/null) || (command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null) || \
	  echo "slurm-wlm not installed: the Slurm test is skipped here, and fails where CI=true")

# The job scheduler runs beside the app, not inside it: Streamlit runs app.py only when a browser
# connects, so after a restart a scheduler in the app would wait for the first visitor. It stops
# when the app has ended (--while-alive gets this shell's pid, which exec hands on to the app).
run: setup
	$(PY) -m lib scheduler --while-alive $$$$ & exec $(PY) -m streamlit run app.py --server.headless true

test: setup browser cluster
	$(PY) -m pytest -q

bench: setup
	for script in bench/*_speed.py; do $(PY) $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
