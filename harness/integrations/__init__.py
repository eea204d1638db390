"""Where users already work: a pytest fixture that reports to pytest-benchmark
(``pytest_plugin``), and an asv suite for their own repository (``asv_init`` writes it,
``asv_env`` installs each commit for asv, ``asv_suite`` is the benchmark class). Each runs
points through ``harness.api``; none is imported by the rest of batchbench (but its commands)."""
