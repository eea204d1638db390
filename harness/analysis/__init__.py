"""Numbers from records: convergence (targets, critical batch), noise-scale arithmetic,
statistics of per-step samples, the memory model. numpy and pandas only; no torch."""
