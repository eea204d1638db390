"""Every bad input: exit code 2, one line on stderr naming the field, the store untouched."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import plugin

FAST = ["--steps", "8", "--dataset-sizes", "60", "--batch-sizes", "4", "--devices", "cpu", "--quiet"]


def _bad_npz(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, X=np.zeros((20, 3)), y=np.zeros(20, dtype=int))
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(good.read_bytes()[:50])
    return bad


CASES = {
    "batch zero": (["--batch-sizes", "0"], "--batch-sizes"),
    "batch negative": (["--batch-sizes", "-8"], "--batch-sizes"),
    "batch non-numeric": (["--batch-sizes", "big"], "--batch-sizes"),
    "batch larger than set": (["--batch-sizes", "4096"], "--batch-sizes"),
    "unknown device": (["--devices", "tpu"], "--devices"),
    "cuda without gpu": (["--devices", "cuda:7"], "--devices"),
    "threads zero": (["--threads", "0"], "--threads"),
    "negative steps": (["--steps", "-3"], "--steps"),
    "negative lr": (["--lr", "-0.1"], "--lr"),
    "unknown model": (["--model", "transformer"], "--model"),
    "plug-in file missing": (["--model", "nowhere/model.py:make"], "--model"),
    "plug-in attribute missing": (["--model", plugin("no_such_factory")], "--model"),
    "plug-in module missing": (["--model", "no_such_module_xyz:make"], "--model"),
    "plug-in returns no module": (["--model", plugin("not_a_module")], "--model"),
    "missing data file": (["--dataset", "missing.npz"], "--dataset"),
    "unknown dataset": (["--dataset", "imagenet"], "--dataset"),
    "both budgets": (["--epochs", "1"], "--steps"),
    "bad check schedule": (["--check-every", "often"], "--check-every"),
    "dataset size too large for digits": (["--dataset", "digits", "--dataset-sizes", "5000"], "--dataset-sizes"),
    "unknown flag": (["--frobnicate", "3"], "unrecognized arguments"),
}


@pytest.mark.parametrize("args,field", CASES.values(), ids=CASES.keys())
def test_bad_input_exits_2_with_one_line_and_no_store(cli, tmp_path, args, field):
    store = tmp_path / "store.sqlite"
    code, out, err = cli("run", *FAST, "--store", store, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("batchbench: error:") and field in lines[0]
    assert "Traceback" not in err
    assert not store.exists()


def test_corrupt_npz_and_malformed_toml(cli, tmp_path):
    store = tmp_path / "store.sqlite"
    code, _, err = cli("run", *FAST, "--store", store, "--dataset", _bad_npz(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--dataset" in err and "corrupt" in err
    toml = tmp_path / "bad.toml"
    toml.write_text("batch_sizes = [1, 2\nsteps = \n")
    code, _, err = cli("run", toml, "--store", store)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not valid TOML" in err
    code, _, err = cli("run", tmp_path / "absent.toml", "--store", store)
    assert code == 2 and "file not found" in err
    assert not store.exists()


def test_bad_input_leaves_an_existing_store_byte_for_byte(cli, tmp_path):
    store = tmp_path / "store.sqlite"
    assert cli("run", *FAST, "--store", store)[0] == 0
    before = store.read_bytes()
    code, _, _ = cli("run", *FAST, "--store", store, "--batch-sizes", "0")
    assert code == 2 and store.read_bytes() == before


def test_export_errors(cli, tmp_path):
    code, _, err = cli("export", "--store", tmp_path / "none.sqlite")
    assert code == 2 and "--store" in err and len(err.strip().splitlines()) == 1
    store = tmp_path / "store.sqlite"
    cli("run", *FAST, "--store", store)
    code, _, err = cli("export", "--store", store, "--table", "nope")
    assert code == 2 and "--table" in err
    code, _, err = cli("export", "--store", store, "--format", "xml")
    assert code == 2 and "--format" in err


def test_the_real_process_exits_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--batch-sizes", "0", "--store", str(tmp_path / "s.sqlite")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--batch-sizes" in proc.stderr


@pytest.mark.parametrize("args,suggested", [(["--batch-size", "8"], "--batch-sizes"), (["--batchsizes", "8"], "--batch-sizes"),
                                            (["--step", "10"], "--steps")])
def test_abbreviated_or_mistyped_flags_are_errors_with_a_suggestion(cli, tmp_path, args, suggested):
    store = tmp_path / "store.sqlite"
    code, _, err = cli("run", *FAST, "--store", store, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unrecognized arguments" in err and f"did you mean {suggested}?" in err
    assert not store.exists()


@pytest.mark.parametrize("args,field", [
    (["fit", "--device", "cpu,cuda"], "--device"),  # fit and overhead measure one device; not a list, not auto
    (["fit", "--device", "auto"], "--device"),
    (["overhead", "--device", "cuda:7"], "--device"),
    (["overhead", "--device", "tpu"], "--device"),
    (["overhead", "--rounds", "0"], "--rounds"),
    (["overhead", "--steps", "many"], "--steps"),
    (["overhead", "--batch-sizes", "8..full"], "--batch-sizes"),
    (["overhead", "--batch-sizes", "9000"], "--batch-sizes"),
])
def test_one_device_commands_exit_2_with_one_line(cli, args, field):
    code, out, err = cli(*args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith(f"batchbench: error: {field}:"), err


@pytest.mark.parametrize("command", ["run", "tune", "cbs", "report", "analyze", "compare", "fit", "overhead", "merge", "export", "runs", "asv", "asv init"])
def test_every_commands_help_prints(cli, command):
    code, out, err = cli(*command.split(), "--help")
    assert code == 0 and "usage: batchbench " + command in out and err == ""


def test_every_command_has_a_help_test():
    from harness.cli import COMMANDS

    tested = test_every_commands_help_prints.pytestmark[0].args[1]
    assert set(COMMANDS) <= {c.split()[0] for c in tested}


def test_a_reader_that_stops_early_gets_no_broken_pipe_traceback(tmp_path):
    """`batchbench export ... | head -1`: the reader closes the pipe; batchbench stops quietly
    (3000 timed burn-in steps as JSON: far more than a pipe's buffer)."""
    store = tmp_path / "s.sqlite"
    subprocess.run([sys.executable, "-m", "harness", "run", "--devices", "cpu", "--dataset-sizes", "200", "--batch-sizes", "1,2,4", "--steps", "2000",
                    "--burn-in-steps", "1000", "--check-every", "1000", "--quiet", "--no-report", "--store", str(store)], check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "export", "--store", str(store), "--table", "steps", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_tune_help_lists_only_the_flags_tune_takes(cli):
    code, out, _ = cli("tune", "--help")
    assert code == 0 and "--lr-grid" in out and "--target" in out
    assert not any(flag in out for flag in ("--lr-policy", "--stop-at-target", "--world-sizes", "--repeats", "--shard"))
    assert "--base-batch-size" in out and "LightningModule" in out  # the batch a module's own rates are for
