"""Everything that calls the engine: the plan (a spec checked against the machine and its data,
with the model's pre-flight), the sweep (and the crossings of a relative target, replayed after
it), ``tune``, ``cbs``, the overhead measurement and the memory-capacity fit."""
