"""The arithmetic of what a point measures, below everything that measures or reads it: statistics
of per-step samples (``stats``), when a curve of checks reaches a target (``targets``), the
gradient noise scale from gradient moments (``noise_scale``). Pure numpy; the engine (``run``)
and the analysis (``analysis``) both use it, and it imports neither."""
