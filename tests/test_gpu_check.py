"""`scripts/gpu-check` runs as one command on a GPU machine a few times a year: its CPU dry run
(every step at a toy size) keeps it from rotting in between."""

import json
import subprocess
import sys

from conftest import ROOT


def test_the_gpu_check_dry_run_runs_every_step_and_writes_its_summary(tmp_path):
    out = tmp_path / "gpu-check-out"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu-check"), "--dry-run", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    steps = json.loads((out / "steps.json").read_text())
    assert [s["step"] for s in steps] == ["cuda-tests", "test-suite", "overhead", "sweep-resnet", "sweep-gpt", "fit-resnet", "fit-gpt",
                                          "micro-batches", "pipeline", "cbs-gpt"]
    assert all(s["status"] == "ok" or s["status"].startswith("skipped:") for s in steps), steps
    summary = (out / "summary.md").read_text()
    assert "| overhead | ok |" in summary and "harness/plain" in summary and "samples_per_s" in summary
    assert (out / "sweep-gpt.txt").read_text().startswith("$ ")  # each step's command and output, kept


def test_without_a_gpu_the_check_says_so_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu-check"), str(tmp_path / "o")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and "no CUDA GPU" in done.stderr and done.stderr.count("\n") == 1
    assert "no CUDA GPU" in (tmp_path / "o" / "summary.md").read_text()
