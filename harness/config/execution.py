"""``--executor``, ``--cpus-per-point`` and ``--retries``: where a sweep's points run
(``drivers.executors`` runs them). Not an axis: where a point ran changes neither what it is
nor its id."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from harness.config.values import parse_int
from harness.errors import SpecError


@dataclass(frozen=True)
class Executor:
    """``--executor``, ``--cpus-per-point`` and ``--retries``, parsed."""

    kind: str = "local"
    """``local`` or ``ray``."""
    address: str | None = None
    """Ray: None starts a local instance for the sweep (and ends it after); ``auto`` or
    ``HOST:PORT`` joins a running cluster."""
    cpus_per_point: int | None = None
    """Ray: cores a CPU point asks for (None: every core of the smallest node, so a CPU point is
    timed alone on its node)."""
    retries: int = 2
    """Ray: how often a point whose worker process or node died is run again before it is stored ``lost``."""


def parse_executor(text: str | None, cpus_per_point: str | None = None, retries: str | None = None) -> Executor:
    """``local``, ``ray``, ``ray:auto`` or ``ray:HOST:PORT``; a ``SpecError`` naming the flag."""
    kind, _, address = (text or "local").strip().partition(":")
    if kind not in ("local", "ray") or (kind == "local" and address):
        raise SpecError("--executor", f"{text!r} is not an executor; use local, ray (a Ray instance for this sweep), ray:auto or ray:HOST:PORT")
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        raise SpecError("--executor", "ray is not installed; pip install 'batchbench[ray]'")
    if kind == "local" and (cpus_per_point is not None or retries is not None):
        raise SpecError("--cpus-per-point" if cpus_per_point is not None else "--retries", "applies to --executor ray")
    return Executor(kind, address or None, None if cpus_per_point is None else parse_int("cpus_per_point", cpus_per_point, 1, 4096),
                    2 if retries is None else parse_int("retries", retries, 0, 100))
