"""The HTML report, checked as a reader gets it: in a real headless browser."""

import json
import sqlite3
import os
import re
import subprocess
import sys

import pytest

from browser import find_chromium, load_page
from conftest import ROOT, plugin
from harness import report
from harness.report.page import Section
from harness.drivers.plan import plan_flags
from harness.store.sqlite import Store
from harness.drivers.sweep import run_sweep

SMALL = {"dataset": "blobs", "dataset_sizes": "200,400", "batch_sizes": "1,4,16,full", "steps": "60", "repeats": "2", "devices": "cpu",
         "target": "rel:0.3", "noise_samples": "64", "check_every": "10", "sample_interval": "20ms"}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "s.sqlite"
    with Store(path) as store:
        run_id = run_sweep(plan_flags(**SMALL), store, progress=False)
    return path, run_id


def _browser_or_skip():
    if find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have chromium (.ci/run installs it)")
        pytest.skip("no chromium on PATH: apt-get install -y chromium")


def test_report_is_self_contained_with_every_section_and_figure(swept, tmp_path):
    path, run_id = swept
    with Store(path) as store:
        html = report.render(report.load(store, [run_id]))
    assert not re.search(r"https?://", html)
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", html)  # every resource is inline
    assert html.count("<img ") >= 6
    for section in report.SECTIONS:
        assert f"<h2>{section}</h2>" in html
    assert html.count("<figcaption>") == html.count("<img ") and 'alt=""' not in html
    assert "data:text/csv;base64," in html


def test_report_in_a_real_browser(swept, tmp_path):
    _browser_or_skip()
    path, run_id = swept
    with Store(path) as store:
        out = report.write(report.load(store, [run_id]), tmp_path / "report.html")
    page = load_page(out.resolve().as_uri())
    assert page.failed == [] and page.console == [] and page.exceptions == []
    assert all(url.startswith(("file:", "data:")) for url in page.requests), page.requests
    assert page.section_ids == [Section(s).anchor for s in report.SECTIONS]
    assert page.images >= 6  # every figure decoded and laid out
    shot = tmp_path / "report.png"
    shot.write_bytes(page.screenshot_png)
    assert shot.stat().st_size > 50_000


def test_the_browser_check_can_fail(tmp_path):
    _browser_or_skip()
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="missing.png"><script>console.error("boom"); undefinedCall();</script></body></html>')
    page = load_page(bad.as_uri())
    assert page.failed and page.console and page.exceptions


def test_partial_and_failed_data_give_a_report_that_says_so(tmp_path, cli):
    store = tmp_path / "s.sqlite"
    code, out, _ = cli("run", "--devices", "cpu", "--model", plugin("broken"), "--dataset-sizes", "100", "--batch-sizes", "4,8", "--steps", "5", "--quiet", "--store", store,
                       "--report", tmp_path / "failed.html")
    assert code == 1 and "report:" in out  # every point failed: exit 1, and the report still says why
    html = (tmp_path / "failed.html").read_text()
    assert "No point finished with status ok" in html and "bug in user model" in html
    code, _, _ = cli("run", "--devices", "cpu", "--dataset-sizes", "100", "--batch-sizes", "8", "--steps", "20", "--target", "none", "--quiet", "--store", store, "--report", tmp_path / "one.html")
    html = (tmp_path / "one.html").read_text()
    assert code == 0 and "No point reached a target" in html and html.count("<img ") >= 4


def test_run_writes_the_report_and_prints_its_path(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("run", "--devices", "cpu", "--dataset-sizes", "100", "--batch-sizes", "8,full", "--steps", "20", "--quiet", "--store", "s.sqlite")
    (line,) = [l for l in out.splitlines() if l.startswith("report: ")]
    assert code == 0 and (tmp_path / line.split(": ", 1)[1]).is_file() and line.startswith("report: reports/")
    code, out, _ = cli("run", "--devices", "cpu", "--dataset-sizes", "100", "--batch-sizes", "8", "--steps", "20", "--quiet", "--store", "s.sqlite", "--no-report")
    assert code == 0 and "report:" not in out


def test_compare_two_runs(tmp_path, cli):
    store = tmp_path / "s.sqlite"
    for _ in range(2):
        assert cli("run", "--devices", "cpu", "--dataset-sizes", "200", "--batch-sizes", "4,16", "--steps", "40", "--quiet", "--no-report", "--store", store)[0] == 0
    with Store(store) as s:
        a, b = s.run_ids()
    code, out, err = cli("report", "--store", store, "--compare", a, b, "-o", tmp_path / "cmp.html")
    assert code == 0, err
    html = (tmp_path / "cmp.html").read_text()
    assert "Ratios with 95% intervals" in html and html.count("<tr>") >= 3
    code, _, _ = cli("report", "--store", store, "--compare", f"{store}:{a}", str(store), "-o", tmp_path / "cmp2.html")
    assert code == 0
    code, _, err = cli("report", "--store", store, "--run", "nope")
    assert code == 2 and "--run" in err


def test_reporting_never_imports_torch():
    code = "import harness.report, harness.store.sqlite, harness.analysis.convergence, harness.analysis.memory, harness.cli, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_batch_size_ticks_never_overlap_and_a_narrow_log_range_still_has_ticks():
    from harness.report.plot import log2_axis, log_y, pyplot

    plt, _ = pyplot()
    fig, ax = plt.subplots()
    sizes = [2**k for k in range(12)] + [2400]
    ax.plot(sizes, range(len(sizes)))
    log2_axis(ax, sizes)
    ticks = [int(t) for t in ax.get_xticks()]
    assert 2400 in ticks and 2048 not in ticks, "2048 and 2400 are 0.23 octave apart: their labels would overlap"
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [0.031, 0.033, 0.036])
    log_y(ax)
    low, high = ax.get_ylim()
    assert len([t for t in ax.get_yticks() if low <= t <= high]) >= 2, "a time-to-target axis inside one decade needs more than one tick"
    plt.close("all")


def test_analyze_and_the_report_state_the_target_and_warn_on_coarse_checks(tmp_path, cli):
    """Checks every 100 steps: the crossings are refined after the sweep (no warning); a store
    from before refinement gets the warning, in analyze, the answer and the report."""
    store = tmp_path / "s.sqlite"
    sweep = ("run", "--devices", "cpu", "--dataset-sizes", "400", "--batch-sizes", "8,64,256", "--steps", "300", "--quiet", "--store", store)
    code, _, err = cli(*sweep, "--check-every", "100", "--report", tmp_path / "coarse.html")
    assert code == 0 and "crossed the relative target between coarse checks" in err
    code, out, _ = cli("analyze", "--store", store, "--json")
    (group,) = json.loads(out)
    assert group["target"].startswith("eval loss ≤") and "(rel:0.1:" in group["target"] and group["coarse_checks"] is False
    assert "Warning for" not in (tmp_path / "coarse.html").read_text()
    with sqlite3.connect(store) as conn:  # as a store written before refinement holds it
        assert conn.execute("select count(*) from points where refine_steps > 0").fetchone()[0] >= 1
        conn.execute("update points set steps_to_target_low = null, refine_steps = null")
    code, out, _ = cli("analyze", "--store", store)
    assert code == 0 and "  target: eval loss ≤ " in out
    assert "warning: the loss checks are coarse against steps-to-target" in out and "run the sweep again" in out
    assert "Caveats: steps to target are known only coarsely" in out
    assert cli("report", "--store", store, "-o", tmp_path / "old.html")[0] == 0
    page = (tmp_path / "old.html").read_text()
    assert "Target: eval loss ≤" in page and "Warning for digits · 400 samples · cpu" in page


