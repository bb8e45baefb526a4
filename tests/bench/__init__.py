"""`make bench` (python -m tests.bench): CommPro side by side with the reference stack, one run.

See __main__.py for what is measured; tests never assert timings, benchmarks only report.
"""
