"""Running one point: the loop (``loop``), where batches come from (``batches``), the loss check
(``checks``), the phase clock (``clock``), the monitor and memory probes (``monitor``,
``probes``), the noise-scale estimator (``noise``) and the rows the trace becomes (``rows``).
Nothing here launches a process or writes a store."""
