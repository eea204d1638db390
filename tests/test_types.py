"""The spine a point travels through type-checks: the typed specs (``config``), the engine and
what it measures (``run``), and the store (``store``), under mypy as ``pyproject.toml`` sets it."""

import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_the_spine_type_checks(tmp_path):
    pytest.importorskip("mypy")
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout
