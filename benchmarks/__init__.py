"""
Benchmarks of durable-jobs (not tests: nothing here asserts on time).

Run them all with `.venv/bin/python -m benchmarks` (or `make bench`); `--quick` makes a
smoke run of a few seconds, `--only SECTION` runs some. See `benchmarks/README.md`.
"""
