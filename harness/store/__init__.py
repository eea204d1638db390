"""Where results live: the record tables' columns and the status type (``schema``), the SQLite
store (``sqlite``), joining stores (``merge``), and the TensorBoard and MLflow logs a sweep writes
each point to beside it (``logs``)."""
