import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a Ray instance a test starts binds to 127.0.0.1 only (read when ray is imported)

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "tests" / "plugins.py"


def plugin(name: str) -> str:
    return f"{PLUGINS}:{name}"


@pytest.fixture
def cli(capsys):
    """Run ``batchbench`` in-process: returns (exit code, stdout, stderr)."""
    from harness.cli import main

    def invoke(*args: str):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse exits on usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def losses_by_step(result) -> dict:
    """A point's batch losses by step number (its timed steps: which ones depends on timing)."""
    return {row["step"]: row["batch_loss"] for row in result.steps}


def common_losses(a, b) -> tuple[list, list]:
    """Two points' batch losses at the steps both timed."""
    la, lb = losses_by_step(a), losses_by_step(b)
    steps = sorted(set(la) & set(lb))
    assert len(steps) >= 5, "too few common timed steps to compare"
    return [la[s] for s in steps], [lb[s] for s in steps]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    import os

    if os.environ.get("BATCHBENCH_LONG") != "1":
        for item in items:
            if "long" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="a long repetition: BATCHBENCH_LONG=1 runs it"))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
