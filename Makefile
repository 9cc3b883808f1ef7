# Two commands do all set-up: `make serve` and `make test`. Both create .venv and install from pinned versions.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser serve test bench bench-peers soak lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, the CPU build pinned: a bare `torch` would pull a CUDA build of several GB
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/deja serve $(if $(CONFIG),--config $(CONFIG))

# the status-page test drives Debian's headless chromium; install it when missing and we may
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the status-page browser test will be skipped (failed under CI=true)"; }

test: install browser
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks.run_all $(if $(QUICK),--quick)

# deja vs the LiteLLM proxy (installed once into .bench/litellm-proxy), same upstream, same run
bench-peers: install
	$(BIN)/python -m benchmarks.peers $(if $(QUICK),--quick)

# one deja process under mixed traffic for MINUTES (default 10): memory growth and unexpected failures
soak: install
	$(BIN)/python -m benchmarks.soak $(if $(QUICK),--quick) $(if $(MINUTES),--minutes $(MINUTES))

lint: install
	$(BIN)/ruff check router providers compression cache benchmarks tests
	$(BIN)/mypy router providers compression cache

clean:
	rm -rf $(VENV) .deja
