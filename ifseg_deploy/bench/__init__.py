"""Benchmarks: ``latency`` (``bench``: per-stage latency of the pipeline), ``compare``
(``bench --compare``: every backend x precision in one table), ``triton_load`` (``bench --server
--clients N``: load against a Triton server) and ``synthetic`` (random-weight models, for timing
without a trained checkpoint)."""
