from pathlib import Path

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
