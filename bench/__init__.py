"""Benchmarks: `bench.scan` (the pipeline), `bench.model` (the model), `bench.service` (Kafka).

Not part of the installed package; run them from the repository root. See bench/README.md.
"""
