"""Files that are not what their name says, specs nested past reading, a folder where a file belongs,
``--nproc`` named as given, commands that read a store without torch or scipy, imports that fail
for lack of memory, and the sweep lock file removed by its last holder: each one line, or nothing
left behind."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from harness.errors import StoreError
from harness.store.sqlite import Store

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "100", "--batch-sizes", "4,8", "--steps", "10", "--quiet", "--no-report"]
HEAVY = ("torch", "scipy", "sklearn")


def one_line(err: str, *words: str) -> bool:
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("batchbench: error:") and "Traceback" not in err and all(w in lines[0] for w in words)


# ---------------------------------------------------------------- files that are not what they say


def test_a_npy_file_named_npz_is_one_line_naming_dataset(cli, tmp_path):
    path = tmp_path / "data.npz"
    with path.open("wb") as handle:  # numpy.save to an open file keeps the name
        np.save(handle, np.zeros((10, 2)))
    code, _, err = cli("run", *SMALL[:2], "--dataset", path, "--store", tmp_path / "s.sqlite")
    assert code == 2 and one_line(err, "--dataset", str(path), ".npy", "savez"), err
    assert not (tmp_path / "s.sqlite").exists()


def _nested(depth: int, kind: str) -> str:
    if kind == "array":
        return "a = " + "[" * depth + "1" + "]" * depth + "\n"
    if kind == "known key":
        return "batch-sizes = " + "[" * depth + "1" + "]" * depth + "\n"
    return "a = " + "{b = " * depth + "1" + "}" * depth + "\n"


@pytest.mark.parametrize("kind", ["array", "known key", "inline table"])
def test_a_spec_nested_thousands_deep_is_one_line_naming_the_file(cli, tmp_path, kind):
    spec = tmp_path / "deep.toml"
    spec.write_text(_nested(5000, kind))
    code, _, err = cli("run", spec, "--store", tmp_path / "s.sqlite")
    assert code == 2 and one_line(err, "spec:", str(spec), "too deeply"), err


@pytest.mark.parametrize("text, words", [("batch-sizes = [[4, 8]]\n", ("batch-sizes", "flat list")),
                                         ("dataset = {b = {c = 1}}\n", ("dataset", "is a table")),
                                         (_nested(400, "known key"), ("batch-sizes", "flat list"))])
def test_a_spec_value_nested_below_the_limit_is_one_line_naming_its_key(cli, tmp_path, text, words):
    spec = tmp_path / "nested.toml"
    spec.write_text(text)
    code, _, err = cli("run", spec, "--store", tmp_path / "s.sqlite")
    assert code == 2 and one_line(err, "spec:", str(spec), *words), err


@pytest.mark.parametrize("name", ["folder.npz", "folder.csv", "folder"])
def test_a_folder_given_as_the_data_set_is_said_to_be_a_folder(cli, tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    code, _, err = cli("run", *SMALL[:2], "--dataset", folder, "--store", tmp_path / "s.sqlite")
    assert code == 2 and one_line(err, "--dataset", str(folder), "is a folder") and "not found" not in err, err


def test_a_folder_given_as_the_spec_is_said_to_be_a_folder(cli, tmp_path):
    folder = tmp_path / "sweep.toml"
    folder.mkdir()
    code, _, err = cli("run", folder, "--store", tmp_path / "s.sqlite")
    assert code == 2 and one_line(err, "spec:", str(folder), "is a folder") and "not found" not in err, err


@pytest.mark.parametrize("value", ["0", "-1", "x", "2,4"])
def test_nproc_is_named_as_given(cli, tmp_path, value):
    code, _, err = cli("run", *SMALL, "--nproc", value, "--store", tmp_path / "s.sqlite")
    assert code == 2 and one_line(err, "--nproc:") and "--world-sizes" not in err, err


# ---------------------------------------------------------------- what a command imports


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A store holding two runs of SMALL, and their ids."""
    from harness.cli import main

    folder = tmp_path_factory.mktemp("reading")
    store = folder / "s.sqlite"
    assert main(["run", *SMALL, "--store", str(store)]) == 0
    assert main(["run", *SMALL, "--store", str(store)]) == 0
    with Store.open_existing(store) as reader:
        return store, reader.run_ids()


READING = {
    "runs": lambda s, runs, out: ["runs", "--store", s],
    "runs --json": lambda s, runs, out: ["runs", "--store", s, "--json"],
    "analyze": lambda s, runs, out: ["analyze", "--store", s],
    "export": lambda s, runs, out: ["export", "--store", s, "-o", out / "points.csv"],
    "report": lambda s, runs, out: ["report", "--store", s, "-o", out / "report.html"],
    "compare": lambda s, runs, out: ["compare", "--store", s, runs[0], runs[1]],
    "merge": lambda s, runs, out: ["merge", s, "-o", out / "merged.sqlite"],
    "--help": lambda s, runs, out: ["--help"],
    "--version": lambda s, runs, out: ["--version"],
    "run --help": lambda s, runs, out: ["run", "--help"],
}
SEABORN_SCIPY = {"report"}
"""The report's plots import seaborn, which imports scipy's statistics when it can (harness/report)."""

PROBE = textwrap.dedent("""
    import json, sys
    from harness.cli import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""") % (HEAVY,)


@pytest.mark.parametrize("command", list(READING))
def test_a_command_that_reads_a_store_imports_no_torch_scipy_or_sklearn(two_runs, tmp_path, command):
    store, runs = two_runs
    argv = [str(a) for a in READING[command](store, runs, tmp_path)]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    found = json.loads(done.stderr.strip().splitlines()[-1])
    assert found["code"] == 0, done.stderr
    allowed = {"scipy"} if command in SEABORN_SCIPY else set()
    assert set(found["heavy"]) <= allowed, f"{command} imported {found['heavy']}"


def test_importing_the_cli_imports_no_numpy_or_pandas():
    code = "import sys, harness.cli; print(sorted(m for m in ('numpy', 'pandas', *%r) if m in sys.modules))" % (HEAVY,)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


# ---------------------------------------------------------------- imports short of memory


LIMITED = textwrap.dedent("""
    import resource, sys
    def used():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) << 10 for line in status if line.startswith("VmSize:"))
    {before}
    limit = used() + (int(sys.argv[1]) << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    {then}
""")
LINUX = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the address space in use from /proc (Linux)")


def _limited(before: str, then: str, headroom_mb: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python code run with an address-space limit (``ulimit -v``) of what it uses after ``before``
    and ``headroom_mb`` more."""
    code = LIMITED.format(before=before, then=then)
    return subprocess.run([sys.executable, "-c", code, str(headroom_mb), *args], cwd=cwd, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@LINUX
def test_torch_that_cannot_load_for_lack_of_memory_is_one_line(tmp_path):
    run = ["run", "--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "100", "--batch-sizes", "8", "--steps", "5",
           "--store", str(tmp_path / "s.sqlite"), "--no-report", "--quiet"]
    started = time.monotonic()
    done = _limited("import harness.cli", "sys.argv = ['batchbench', *sys.argv[2:]]\nfrom harness.__main__ import program\nprogram()",
                    100, *run, cwd=tmp_path)
    if done.returncode < 0 or done.returncode >= 128 or "OpenBLAS error" in done.stderr:
        pytest.skip(f"the import died in native code here (exit {done.returncode}), before Python could say why: {done.stderr[-200:]}")
    assert done.returncode == 3 and one_line(done.stderr, "memory: importing torch failed for lack of memory", "ulimit -v"), done.stderr
    assert time.monotonic() - started < 60 and not (tmp_path / "s.sqlite").exists()


@LINUX
def test_scipy_is_not_imported_into_a_limit_its_openblas_would_hang_in(tmp_path):
    """scipy's bundled OpenBLAS retries a failed allocation forever as it loads (Ctrl-C cannot end
    it): with too little address space left, batchbench does not import it."""
    then = textwrap.dedent("""
        try:
            datasets.load("blobs", 100)
        except ImportError as exc:
            print(exc.name, "|", exc)
        else:
            print("loaded")
    """)
    done = _limited("import torch\nfrom harness.workload import datasets", then, 60, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("scipy | not tried, not enough memory"), done.stdout + done.stderr


def test_an_import_error_for_lack_of_memory_is_one_line_and_others_are_not(cli, tmp_path, monkeypatch):
    from harness.commands import runs

    def fails(message: str, exc_type=ImportError):
        def main(args):
            raise exc_type(message, name="somelib._native") if exc_type is ImportError else exc_type(message)
        return main

    monkeypatch.setattr(runs, "main", fails("/x/libsome.so: failed to map segment from shared object"))
    code, _, err = cli("runs", "--store", tmp_path / "s.sqlite")
    assert code == 3 and one_line(err, "memory: importing somelib failed for lack of memory (libsome.so: failed to map segment"), err
    monkeypatch.setattr(runs, "main", fails("No module named 'memory_profiler'"))
    with pytest.raises(ImportError):
        cli("runs", "--store", tmp_path / "s.sqlite")
    monkeypatch.setattr(runs, "main", fails("out of memory", MemoryError))  # not while importing: not said to be an import
    with pytest.raises(MemoryError):
        cli("runs", "--store", tmp_path / "s.sqlite")


# ---------------------------------------------------------------- the sweep lock file


def _lock_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.lock"))  # beside the store (Store.lock_path)


def test_no_lock_file_is_left_after_a_run_and_a_resume(cli, tmp_path, monkeypatch):
    locks = tmp_path  # the store's folder
    store = tmp_path / "s.sqlite"
    assert cli("run", *SMALL, "--store", store)[0] == 0
    assert _lock_files(locks) == []
    assert cli("run", *SMALL, "--store", store, "--resume")[0] == 0
    assert _lock_files(locks) == []


HOLDER = textwrap.dedent("""
    import sys, tempfile, time
    from harness.store.sqlite import Store
    tempfile.tempdir = sys.argv[1]
    with Store(sys.argv[2]) as store, store.sweep_lock(sys.argv[3], resume=sys.argv[4] == "resume"):
        print("held", flush=True)
        sys.stdin.readline()
""")


@pytest.fixture
def lock_setup(tmp_path, monkeypatch):
    locks = tmp_path  # the store's folder
    store = tmp_path / "s.sqlite"
    Store(store).close()
    return locks, store, "abcdef0123456789"


def _holder(locks: Path, store: Path, spec_hash: str, how: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(locks), str(store), spec_hash, how], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _release(holder: subprocess.Popen) -> None:
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(timeout=30) == 0


@pytest.mark.parametrize("held, asked", [("resume", True), ("resume", False), ("run", True)])
def test_two_holders_still_exclude_each_other(lock_setup, held, asked):
    locks, store, spec_hash = lock_setup
    holder = _holder(locks, store, spec_hash, held)
    try:
        with Store(store) as mine, pytest.raises(StoreError, match="another batchbench process"):
            with mine.sweep_lock(spec_hash, resume=asked):
                pass
        assert len(_lock_files(locks)) == 1  # the holder's, kept by the one refused
    finally:
        _release(holder)
    assert _lock_files(locks) == []


def test_plain_runs_share_the_lock_and_the_last_one_removes_the_file(lock_setup):
    locks, store, spec_hash = lock_setup
    holder = _holder(locks, store, spec_hash, "run")
    try:
        with Store(store) as mine, mine.sweep_lock(spec_hash, resume=False):
            assert len(_lock_files(locks)) == 1
        assert len(_lock_files(locks)) == 1  # the holder still holds it
    finally:
        _release(holder)
    assert _lock_files(locks) == []


def test_a_lock_file_a_killed_holder_left_is_removed_by_the_next(lock_setup):
    locks, store, spec_hash = lock_setup
    holder = _holder(locks, store, spec_hash, "resume")
    holder.kill()
    holder.wait()
    assert len(_lock_files(locks)) == 1
    with Store(store) as mine, mine.sweep_lock(spec_hash, resume=True):
        pass
    assert _lock_files(locks) == []


def _take_turns(store: str, locks: str, marker: str, turns: int, failures) -> None:
    tempfile.tempdir = locks
    with Store(store) as mine:
        done = 0
        while done < turns:
            try:
                with mine.sweep_lock("abcdef0123456789", resume=True):
                    try:
                        fd = os.open(marker, os.O_CREAT | os.O_EXCL)
                    except FileExistsError:
                        failures.put("two processes held the exclusive lock at once")
                        return
                    os.close(fd)
                    time.sleep(0.002)
                    os.unlink(marker)
                done += 1
            except StoreError:
                continue


def test_holders_that_remove_the_lock_file_as_they_go_never_overlap(lock_setup):
    import multiprocessing

    locks, store, _ = lock_setup
    context = multiprocessing.get_context("fork")
    failures = context.Queue()
    marker = str(locks.parent / "held")
    workers = [context.Process(target=_take_turns, args=(str(store), str(locks), marker, 25, failures)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    seen = []
    while not failures.empty():
        seen.append(failures.get())
    assert seen == [] and all(w.exitcode == 0 for w in workers)
    assert _lock_files(locks) == []
