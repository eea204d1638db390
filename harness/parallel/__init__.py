"""Data-parallel points: ``launch`` starts and combines ranks, ``collectives`` is what a rank
does with the others while it trains."""
