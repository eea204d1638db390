# Shortcuts for the two set-up commands in the README.
.PHONY: run test bench
run:
	sh scripts/run
test:
	sh scripts/test
bench:
	sh scripts/test tests/benchmarks --benchmark-only
