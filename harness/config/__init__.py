"""What to run: every axis declared once (``axes``), their value grammars (``values``) and the
policies that resolve them per point (``policies``), the typed ``SweepSpec`` (``spec``), the
expansion into ``PointSpec``s (``points``) and the shims that keep older stores working
(``compat``). No torch, no files but the spec file."""
