"""What to run. ``sweep`` declares the ``SweepSpec`` (the user's axes, defaults), ``parse``
turns TOML and flags into one, ``expand`` turns it into ``PointSpec``s. No torch here."""

from harness.spec.expand import DataInfo, PointSpec, expand
from harness.spec.parse import build_spec, load_toml
from harness.spec.sweep import FIELDS, SweepSpec, flag

__all__ = ["DataInfo", "FIELDS", "PointSpec", "SweepSpec", "build_spec", "expand", "flag", "load_toml"]
