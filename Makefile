# Everyday entry points. Each one creates or refreshes .venv first.
.PHONY: demo test test-fast bench bench-rights bench-daemon robustness venv

venv:
	@scripts/bootstrap

demo: venv
	.venv/bin/castwatch demo

test: venv
	.venv/bin/python -m pytest -q

test-fast: venv
	.venv/bin/python -m pytest -q -m "not slow"

bench: venv
	.venv/bin/python -m fingerprint.bench

bench-rights: venv
	.venv/bin/python -m monitor.rights.bench

bench-daemon: venv
	.venv/bin/python -m monitor.bench

robustness: venv
	.venv/bin/castwatch robustness --out build/robustness
