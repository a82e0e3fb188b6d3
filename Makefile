# The two quick-start commands (see README): `make serve` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test fuzz security-figures lint migrate bench bench-ws bench-hot-reads bench-cache bench-cache-http bench-report clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/spotik serve

migrate: $(BIN)/.installed
	$(BIN)/spotik migrate

# The whole suite: SQLite and PostgreSQL, Redis, WebSockets, the real server process. Set CI=true to turn an
# unreachable PostgreSQL or Redis into a failure instead of a loud skip.
test: $(BIN)/.installed
	bash scripts/install-test-tools.sh
	bash scripts/install-browser.sh $(BIN)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# A deeper fuzzing run than the bounded one `make test` includes (tests/fuzzing.py, tests/e2e/test_fuzz.py): every
# operation of /openapi.json with FUZZ_EXAMPLES positive and as many negative cases, FUZZ_SCENARIOS stateful
# scenarios, against the real server on SQLite and PostgreSQL; any 5xx, response the document does not allow, or leak
# fails it. The figures (operations, examples, statuses, failures by check, seed) are printed and appended as JSON
# lines to FUZZ_REPORT (bench/reports/, not versioned). Replay a run with SPOTIK_FUZZ_SEED=<seed>. Takes about an hour with the defaults.
FUZZ_EXAMPLES ?= 500
FUZZ_SCENARIOS ?= 300
FUZZ_REPORT ?= bench/reports/fuzz.jsonl
fuzz: $(BIN)/.installed
	SPOTIK_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SPOTIK_FUZZ_SCENARIOS=$(FUZZ_SCENARIOS) SPOTIK_FUZZ_REPORT=$(FUZZ_REPORT) \
		$(BIN)/python -m pytest tests/e2e/test_fuzz.py -s $(PYTEST_ARGS)

# The figures of docs/security.md: the hostile-input tests, the authorization matrix and the bounded fuzzing, on
# SQLite and PostgreSQL, with what the tests sent counted per module (tests/tally.py); fuzzing figures go to FUZZ_REPORT.
security-figures: $(BIN)/.installed
	SPOTIK_FUZZ_REPORT=$(FUZZ_REPORT) $(BIN)/python -m pytest -p tests.tally tests/integration/test_hostile_input.py \
		tests/integration/test_hostile_uploads.py tests/integration/test_hostile_websocket.py \
		tests/integration/test_authorization_matrix.py tests/e2e/test_fuzz.py $(PYTEST_ARGS)

# Bounded, loopback-only benchmarks (see bench/README.md); reports go to bench/reports/.
bench: $(BIN)/.installed
	$(BIN)/python bench/middleware_overhead.py

# Real-time figures (/ws memory per idle connection, broadcast latency, two instances through Redis) vs a baseline.
bench-ws: $(BIN)/.installed
	$(BIN)/python bench/realtime.py

# Throughput of GET /api/rooms and a 200-track GET /api/rooms/{room}/tracks, two revisions side by side (ARGS: e.g.
# --baseline REV --candidate REV|DIR --quick --strict); the default compares 689911e with the working tree.
bench-hot-reads: $(BIN)/.installed
	$(BIN)/python bench/hot_reads.py $(ARGS)

# Every benchmark in one bounded run (`spotik bench`): bench/report/REPORT.md and its PNG figures; ARGS: --quick
# (under 3 minutes), --smoke (CI's size), --strict (exit 1 on a missed target), --help. The full run takes ~25 minutes.

bench-report: $(BIN)/.installed
	$(BIN)/spotik bench $(ARGS)

# The in-process cache tier: a small-entry get (target: median under 2 µs) and a set, against a dict and a cachetools
# LRUCache read in the same run (ARGS: e.g. --quick --strict).
bench-cache: $(BIN)/.installed
	$(BIN)/python bench/cache_store.py $(ARGS)

# Cached against uncached GET /api/rooms/{room}/tracks (200 tracks) on SQLite and PostgreSQL, and the hit rate of a
# read-mostly workload (bench/cache_http.py; target: 3x, 90 %).
bench-cache-http: $(BIN)/.installed
	$(BIN)/python bench/cache_http.py $(ARGS)

# The soak test (docs/reliability.md, scenario 7; not in CI): a steady mixed load on two instances sharing PostgreSQL
# and Redis for 10 minutes, sampled every 5 s, with the slopes of RSS and descriptors over the last half; report in
# bench/reports/soak-<stamp>/ (ARGS: e.g. --minutes 60 --interval 10 --rate 2).
.PHONY: soak
soak: $(BIN)/.installed
	$(BIN)/python bench/soak.py $(ARGS)

# ruff, mypy --strict, and the import contract (pyproject.toml [tool.importlinter]: layers, no cycles).
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) storage
