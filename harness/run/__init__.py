"""One point, trained and measured: the engine (``engine``: prepare -> burn-in -> measured window
-> finish) over its parts: the set-up (``prepare``), the step (``step``), the rules on step numbers
(``schedule``), the phase clock (``clock``), the loss check (``checks``), where batches come from
(``batches``), memory peaks (``memory``), the utilisation sampler (``sampler``), FLOPs
(``flops``), per-example gradients (``gradient_moments``) and the frozen ``measurement`` the rows
derive from. Nothing here launches a process or writes a store."""
