"""skflow's benchmarks: headline comparisons (``python -m benchmarks``) and,
in ``studies/``, one-off ablations. See benchmarks/README.md."""
