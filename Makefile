# Two commands on a fresh machine (each installs what it needs into .venv, idempotently):
#   make demo    # the embedded demo: MaskAQ quantization of a tiny Swin detector and segmentor
#   make test    # the test suite
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: env demo test benchmark smoke-full clean

env:
	bash tools/setup_env.sh

demo: env
	PYTHONUNBUFFERED=1 $(PY) tools/demo.py

test: env
	$(PY) tools/run_tests.py $(PYTEST_ARGS)

benchmark: env
	PYTHONUNBUFFERED=1 $(PY) tools/benchmark.py

# Every full-size config through tools/train.py on a tiny budget (random teachers,
# generated val images): work_dirs/smoke_full/summary.md. Minutes per config on a CPU.
smoke-full: env
	PYTHONUNBUFFERED=1 $(PY) tools/smoke_full_configs.py $(SMOKE_ARGS)

clean:
	rm -rf work_dirs .pytest_cache
