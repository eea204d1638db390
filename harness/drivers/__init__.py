"""Everything that calls the engine: the plan (a spec checked against the machine and its data),
the sweep, ``tune``, the overhead measurement and the memory-capacity fit."""
