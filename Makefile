# citygate: every target does its own setup on a fresh machine.
#   make demo    run the proxy on the demo configuration (127.0.0.1:8080)
#   make demo-site   an ordinary HTTPS site on 127.0.0.1:8443, to try the demo offline
#   make test    run the whole test suite
#   make fuzz    the wire property test with 50,000 examples (tests/e2e/test_wire_fuzz.py)
#   make lint    ruff and mypy
#   make bench   citygate vs bare mitmdump vs Squid, side by side (BENCHMARKS.md);
#                also bench-capped, bench-quick, bench-core, bench-memory, bench-scaleout
#   make bench-signin   Kerberos (Negotiate) sign-in against Basic, side by side (bench/sign_in.py)
#   make bench-groups   decisions with 1,000 group grants against personal grants alone (bench/group_grants.py)

PYTHON ?= $(shell tools/find-python)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-site portal screenshots test fuzz lint check clean system-deps bench bench-capped bench-quick bench-core bench-memory bench-scaleout bench-signin bench-groups bench-deps

$(STAMP): pyproject.toml constraints.txt
	@tools/make-venv "$(PYTHON)" $(VENV) $(STAMP)

# Test-only system packages: curl (a real HTTP client), OpenLDAP's slapd (a real directory),
# node (runs generated PAC files), prometheus (promtool, and a real Prometheus for the
# alert rules and the dashboard's queries), systemd (systemd-analyze) and haproxy (scale-out).
system-deps:
	@tools/system-deps

demo: $(STAMP)
	$(BIN)/citygate run --config config/citygate.yaml

# The access-request portal on http://127.0.0.1:8088/ (README "Access requests").
portal: $(STAMP)
	$(BIN)/citygate portal --config config/citygate.yaml

# An ordinary HTTPS site on 127.0.0.1:8443 with its own certificate, to try the demo offline.
demo-site: $(STAMP)
	$(BIN)/python tools/demo_site.py

check: $(STAMP)
	$(BIN)/citygate check --config config/citygate.yaml

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest
	@# The wire guarantees again as they were before the fast path (addons/fast_path.py) and uvloop
	@# became the defaults: the fallback settings a city may choose must keep them too.
	CITYGATE_FAST_PATH=0 CITYGATE_EVENT_LOOP=asyncio $(BIN)/python -m pytest -q tests/e2e/test_wire_bypass.py tests/e2e/test_wire_fuzz.py

# The README's screenshots (docs/screenshots/): the request flow and the block pages, taken by their browser tests.
screenshots: $(STAMP) system-deps
	CITYGATE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/e2e/test_request_flow_browser.py tests/e2e/test_block_page_layout.py

# The wire property test (tests/e2e/test_wire_fuzz.py) with 50,000 examples instead of 2,000: about
# 20 minutes on 2 cores. A failure prints the case and Hypothesis's reproduction blob.
fuzz: $(STAMP) system-deps
	CITYGATE_FUZZ_EXAMPLES=50000 $(BIN)/python -m pytest tests/e2e/test_wire_fuzz.py -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Benchmark-only system packages: nginx, wrk, curl, socat, squid, haproxy (tools/bench-deps).
bench-deps:
	@tools/bench-deps

BENCH_ARGS ?=

# Throughput and latency, interleaved, medians of 3 runs of 5 s: about 12 minutes on 2 cores.
bench: $(STAMP) bench-deps
	$(BIN)/python bench/throughput.py $(BENCH_ARGS)

# The same with each proxy held to 0.4 core per worker (a CPU cgroup; root): the proxy, not the
# load generators, is the bottleneck in every scenario, and 2 workers show what 2 cores give.
bench-capped: $(STAMP) bench-deps
	$(BIN)/python bench/throughput.py --proxy-cpu 0.4 --workers 2 $(BENCH_ARGS)

bench-quick: $(STAMP) bench-deps
	$(BIN)/python bench/throughput.py --quick $(BENCH_ARGS)

bench-core: $(STAMP)
	$(BIN)/python bench/decision_core.py $(BENCH_ARGS)

# 100,000 personal grants with and without 1,000 group grants, side by side: about 4 minutes.
bench-groups: $(STAMP)
	$(BIN)/python bench/group_grants.py $(BENCH_ARGS)

bench-memory: $(STAMP) bench-deps
	$(BIN)/python bench/memory.py $(BENCH_ARGS)

bench-scaleout: $(STAMP) bench-deps
	$(BIN)/python bench/scaleout.py $(BENCH_ARGS)

# Negotiate against Basic, reused and new connections, interleaved: about 2 minutes. The private
# KDC's packages come from tools/system-deps, nginx from tools/bench-deps.
bench-signin: $(STAMP) bench-deps
	$(BIN)/python bench/sign_in.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv.lock .pytest_cache .mypy_cache
