"""Where users already work: a pytest fixture that reports to pytest-benchmark
(``pytest_plugin``), an asv suite for their own repository (``asv_init`` writes it, ``asv_env``
installs each commit for asv, ``asv_suite`` is the benchmark class), each running points through
``harness.api``; and the TensorBoard and MLflow writers a sweep logs each point to (``logs``)."""
