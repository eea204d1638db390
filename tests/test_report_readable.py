"""The report as a reader gets it: every log axis has numbers on it whatever its range, a store
of several runs says which it shows and how to show the others, and a cbs report opens with its
verdict."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from browser import find_chromium, load_page
from harness import report
from harness.analysis import cbs
from harness.analysis.convergence import analyze
from harness.drivers.plan import plan_flags
from harness.drivers.sweep import run_sweep
from harness.report import figures
from harness.report.plot import log_axis, log_ticks, pyplot, tick_labels
from harness.store.schema import Status
from harness.store.sqlite import Store

NARROW = {"dataset": "blobs", "dataset_sizes": "200", "batch_sizes": "16,32", "steps": "40", "repeats": "2", "devices": "cpu",
          "target": "rel:0.3", "noise_samples": "64", "check_every": "10", "sample_interval": "20ms"}

TINY_RUN = ("--devices", "cpu", "--dataset-sizes", "200", "--batch-sizes", "16,32", "--steps", "20", "--quiet", "--no-report")


def _browser_or_skip():
    if find_chromium() is None:
        pytest.skip("no chromium on PATH: apt-get install -y chromium")


# ---------------------------------------------------------------- 1. numbers on every log axis


def _number(label: str) -> float:
    return float(label.replace(",", ""))


def _labels_in_view(axis) -> list[str]:
    """The non-empty major tick labels of ``axis`` inside its view, as drawn (visible)."""
    ax = axis.axes
    low, high = sorted(ax.get_ylim() if axis is ax.yaxis else ax.get_xlim())
    locs = axis.get_majorticklocs()
    labels = axis.get_major_formatter().format_ticks(locs)
    ticks = axis.get_major_ticks(len(locs))
    return [text for loc, text, tick in zip(locs, labels, ticks)
            if low - 1e-12 * abs(low) <= loc <= high + 1e-12 * abs(high) and text.strip() and tick.label1.get_visible()]


RANGES = {
    "within a decade": (60_000, 90_000), "within 10%": (1.00, 1.08), "within 0.01%": (5_000.0, 5_000.4),
    "a single value": (0.25, 0.25), "many decades": (1e-6, 1e7), "tiny values": (2e-7, 3e-7), "across one decade": (0.031, 0.36),
}


@pytest.mark.parametrize("which", ["x", "y"])
@pytest.mark.parametrize("name", list(RANGES))
def test_a_log_axis_reads_as_numbers_at_any_range(name, which):
    plt, _ = pyplot()
    low, high = RANGES[name]
    fig, ax = plt.subplots()
    values = np.geomspace(low, high, 5)
    ax.plot(values, values) if which == "x" else ax.plot(range(5), values)
    log_axis(ax, which)
    fig.canvas.draw()
    axis = ax.xaxis if which == "x" else ax.yaxis
    labels = _labels_in_view(axis)
    assert len(labels) >= 2, (name, labels)
    assert len(set(labels)) == len(labels), labels
    locs = [t for t in axis.get_majorticklocs()]
    for loc, label in zip(locs, axis.get_major_formatter().format_ticks(locs)):
        assert math.isclose(_number(label), loc, rel_tol=1e-6), (label, loc)  # the label is the tick's value, not a rounding of it
    assert len(labels) <= (12 if which == "y" else 7)
    plt.close(fig)


def test_tick_labels_are_plain_numbers():
    assert tick_labels([50_000, 70_000, 100_000]) == ["50,000", "70,000", "100,000"]
    assert tick_labels([0.0315, 0.033]) == ["0.0315", "0.033"]
    assert tick_labels([2e-7, 1e9]) == ["2e-7", "1e9"]
    assert log_ticks(8, 1024, powers_of_two=True) == [8, 16, 32, 64, 128, 256, 512, 1024]


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """A real sweep of two close batch sizes: throughput, steps and time to target each within a
    decade."""
    path = tmp_path_factory.mktemp("narrow") / "s.sqlite"
    with Store(path) as store:
        run_id = run_sweep(plan_flags(**NARROW), store, progress=False)
        data = report.load(store, [run_id])
    return path, data


def _squeeze(values: pd.Series, low: float, high: float) -> pd.Series:
    """``values`` mapped in order onto [low, high] on a log scale (low == high: all equal)."""
    ranks = values.rank(method="first") - 1
    span = max(ranks.max(), 1)
    return low * (high / low) ** (ranks / span)


def _search_points(points: pd.DataFrame) -> pd.DataFrame:
    """The sweep's points as a tune run's trials: one pruned, learning rates a few percent apart."""
    trials = points.copy()
    trials["lr"] = 0.1 * (1 + 0.02 * np.arange(len(trials)))
    trials.loc[trials.index[0], "status"] = Status.PRUNED
    return trials


def _measured(samples_low: int, samples_high: int, batch: int) -> cbs.Measured:
    curve = tuple(cbs.CriticalBatch(int(s), batch, (8, batch), 2 * batch, ((8, 1.0), (batch, 1.01), (2 * batch, 1.2)))
                  for s in np.linspace(samples_low, samples_high, 4))
    runs = (cbs.RunSummary("constant B0", (8,), 1000, 1.0, 1000, 1.0, 1.0), cbs.RunSummary("ramp", (8, batch), 300, 1.0, 280, 0.4, 0.45))
    return cbs.Measured(b0=8, lr0=0.1, tolerance=0.05, curve=curve, checkpoint_losses=(), noise_scale=((samples_low, 60.0), (samples_high, 61.0)),
                        stages=(cbs.Stage(0, 8, 0.1), cbs.Stage(samples_low, batch, 0.4)), verification=runs,
                        base_samples=8000, branch_samples=16000)


def _every_figure(data, low: float, high: float) -> list:
    """Every figure builder over the store's data, its measured values squeezed into [low, high]."""
    ok = data.points[data.points["status"] == Status.OK].copy()
    for column in ("samples_per_s", "achieved_tflops"):
        ok[column] = _squeeze(ok[column], low, high)
    checks = data.checks.copy()
    has = checks["noise_scale"].notna()
    checks.loc[has, "noise_scale"] = _squeeze(checks.loc[has, "noise_scale"], 50 * low, 50 * high).to_numpy()
    groups = analyze(ok, checks)
    env = json.loads(data.runs["env_json"].iloc[-1])
    return [figures.throughput_figure(ok), figures.flops_figure(ok), figures.headline_figure(groups), *figures.target_figures(ok, checks, groups)[0],
            *figures.convergence_figures(ok, checks), *figures.memory_figures(ok, data.samples, env)[0],
            figures.search_figure(_search_points(data.points), checks), figures.cbs_figure(_measured(1000, 1200, 64))]


@pytest.mark.parametrize("low, high", [(60_000, 90_000), (1_000, 1_080), (500, 500), (0.5, 5e6)], ids=["decade", "10%", "single", "decades"])
def test_every_log_axis_of_every_figure_shows_numbers(narrow, monkeypatch, low, high):
    """Each figure of the report built over a narrow range (and a wide one): every log axis of
    it (or the panel it shares its axis with) shows at least two numbers inside the view."""
    drawn = []
    original = figures.png

    def keep(fig):
        drawn.append(fig)
        return original(fig)  # draws it (savefig), as the report does

    monkeypatch.setattr(figures, "png", keep)
    built = _every_figure(narrow[1], low, high)
    assert all(f is not None for f in built) and len(drawn) == len(built) >= 10
    log_axes = 0
    for fig, figure in zip(drawn, built):
        for ax in fig.axes:
            for axis, shared in ((ax.xaxis, ax.get_shared_x_axes()), (ax.yaxis, ax.get_shared_y_axes())):
                if axis.get_scale() not in ("log", "symlog"):
                    continue
                log_axes += 1
                name = "x" if axis is ax.xaxis else "y"
                siblings = [getattr(s, f"{name}axis") for s in shared.get_siblings(ax)]
                best = max((_labels_in_view(a) for a in siblings), key=len)
                assert len(best) >= 2, f"{figure.title}: the {name} axis ({ax.get_ylabel() if name == 'y' else ax.get_xlabel()}) shows {best}"
    assert log_axes >= 12


def test_a_narrow_range_report_in_a_real_browser(narrow, tmp_path):
    _browser_or_skip()
    path, _ = narrow
    with Store.open_existing(path) as store:
        out = report.write(report.load(store), tmp_path / "narrow.html")
    page = load_page(out.resolve().as_uri())
    assert page.failed == [] and page.console == [] and page.exceptions == []
    assert page.images >= 8  # every figure decoded and laid out
    shot = tmp_path / "narrow.png"
    shot.write_bytes(page.screenshot_png)
    assert shot.stat().st_size > 50_000


# ---------------------------------------------------------------- 2. a store of several runs


def test_three_repeat_runs_are_reported_pooled(cli, tmp_path):
    """``run --runs 3`` (three processes, the real CLI): ``report --store`` shows all three,
    pooled as repeats, and says so."""
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", *TINY_RUN, "--runs", "3", "--store", store)
    assert code == 0, err
    with Store.open_existing(store) as s:
        ids = s.run_ids()
    assert len(ids) == 3
    code, out, err = cli("report", "--store", store, "-o", tmp_path / "r.html")
    assert code == 0 and "report:" in out
    assert f"the report shows 3 runs, pooled as repeats ({', '.join(ids)})" in err
    page = (tmp_path / "r.html").read_text()
    assert f"3 runs: {', '.join(ids)} · 6 points" in page
    assert "This page pools <b>3 runs</b> of the same sweep" in page and "other-runs" not in page
    assert page.count('<tr class="">') == 6  # every run's points in the table


def test_runs_of_different_sweeps_are_listed_with_the_command_that_shows_each(cli, tmp_path):
    store = tmp_path / "s.sqlite"
    for workers in (0, 1, 2):
        code, _, err = cli("run", *TINY_RUN, "--loader", "dataloader", "--workers", workers, "--store", store)
        assert code == 0, err
    with Store.open_existing(store) as s:
        first, second, last = s.run_ids()
    code, _, err = cli("report", "--store", store, "-o", tmp_path / "latest.html")
    assert code == 0 and f"the report shows run {last}; it lists the store's 2 other runs" in err
    page = (tmp_path / "latest.html").read_text()
    assert f"{last} · 2 points · 2 other runs in the store" in page and f"This page shows run <b>{last}</b>" in page
    for other, workers in ((first, 0), (second, 1)):
        assert f"<code>batchbench report --store {store} --run {other}</code>" in page
        assert f"workers {workers} (shown: 2)" in page
    together = f"batchbench report --store {store} --run {first} {second} {last}"
    assert f"<code>{together}</code>" in page  # the three side by side, in one command
    code, _, err = cli(*together.split()[1:], "-o", tmp_path / "all.html")
    page = (tmp_path / "all.html").read_text()
    assert code == 0 and "This page shows 3 runs side by side" in page and "workers: 0 / 1 / 2" in page and "other-runs" not in page
    assert "the report shows 3 runs, side by side" in err and page.count('<dl class="env">') == 1  # one machine, named once
    assert all(f"· workers {w}" in page for w in (0, 1, 2))  # an answer each
    code, _, _ = cli("report", "--store", store, "--run", first, "-o", tmp_path / "first.html")
    page = (tmp_path / "first.html").read_text()
    assert code == 0 and f"This page shows run <b>{first}</b>" in page and f"--run {last}</code>" in page and "workers 2 (shown: 0)" in page


def _runs(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"run_id": f"r{i}", "started_at": f"2026-01-0{i + 1}", "finished_at": None, "spec_hash": h, "spec_json": spec, "env_json": env}
                         for i, (h, spec, env) in enumerate(rows)])


def test_only_the_latest_runs_of_one_sweep_on_one_machine_pool():
    from harness.report.page import repeats_of_latest

    a, b, env, other_env = ("a", '{"workers": [0]}'), ("b", '{"workers": [2]}'), '{"git_commit": "1"}', '{"git_commit": "2"}'
    assert repeats_of_latest(_runs((*a, env), (*a, env), (*a, env))) == ["r0", "r1", "r2"]
    assert repeats_of_latest(_runs((*a, env), (*b, env), (*a, env), (*a, env))) == ["r2", "r3"]  # contiguous ones only
    assert repeats_of_latest(_runs((*a, other_env), (*a, env))) == ["r1"]  # other code: before and after, not repeats
    assert repeats_of_latest(_runs(("cbs:x", "{}", env), ("cbs:x", "{}", env))) == ["r1"]  # a cbs run alone
    assert repeats_of_latest(_runs()) == []


def test_runs_shown_together_are_repeats_side_by_side_or_a_warning():
    from harness.report.tables import how_shown, shown_runs_html

    env = '{"git_commit": "1"}'
    assert how_shown(_runs(("a", '{"lr": 0.1}', env), ("a", '{"lr": 0.1}', env)))[0] == "repeats"
    assert how_shown(_runs(("a", '{"seed": 0}', env), ("b", '{"seed": 1}', env))) == ("repeats", ["seed"], [])  # other seeds: repeats still
    assert how_shown(_runs(("a", '{"dataset_sizes": [200]}', env), ("b", '{"dataset_sizes": [400]}', env))) == ("apart", ["dataset_sizes"], [])
    mixed = _runs(("a", '{"lr": 0.1}', env), ("b", '{"lr": 0.2}', env))
    assert how_shown(mixed) == ("mixed", ["lr"], [])
    warning = shown_runs_html(mixed, "s.sqlite")
    assert 'class="warn"' in warning and "lr: 0.1 / 0.2" in warning and "batchbench report --store s.sqlite --run r0" in warning
    assert how_shown(_runs(("a", "{}", env), ("a", "{}", '{"git_commit": "2"}'))) == ("mixed", [], ["git_commit"])


# ---------------------------------------------------------------- 3. the cbs verdict


def _run(name: str, batches, steps: int, loss: float, reached: int | None, reached_s: float | None, total_s: float) -> cbs.RunSummary:
    return cbs.RunSummary(name, tuple(batches), steps, loss, reached, reached_s, total_s)


def _cbs(ramp: cbs.RunSummary, *, curve=(32, 64, 128), lower: bool = False, stages=(8, 32, 128)) -> cbs.Measured:
    points = tuple(cbs.CriticalBatch(100 * 4**i, b, (8, b), None if lower else 2 * b, ()) for i, b in enumerate(curve))
    base = _run("constant B0", (8,), 1000, 0.50, 1000, 2.0, 2.0)
    return cbs.Measured(b0=8, lr0=0.1, tolerance=0.05, curve=points, checkpoint_losses=(), noise_scale=(),
                        stages=tuple(cbs.Stage(100 * i, b, 0.1) for i, b in enumerate(stages)), verification=(base, ramp),
                        base_samples=8000, branch_samples=8000)


def test_the_cbs_verdict_says_what_the_ramp_saved_or_that_it_never_reached_the_base_loss():
    reached = cbs.verdict(_cbs(_run("ramp", (8, 32, 128), 300, 0.49, 250, 0.5, 0.6)))
    assert reached.startswith("Critical batch size from 32 (after 100 samples) to 128 (after 1,600 samples), over 3 checkpoints of the base run at B0 = 8;")
    assert "the ramp 8 → 32 → 128 reached the base run's final loss 0.5 in 250 steps instead of 1,000 (75% fewer), 500 ms of training instead of 2 s." in reached
    close = cbs.verdict(_cbs(_run("ramp", (8, 32, 128), 300, 0.51, None, None, 0.6)))
    assert "ended within the 5% tolerance of the base run's final loss (0.51, 2.0% above 0.5) in 300 steps instead of 1,000 (70% fewer)" in close
    assert "without reaching 0.5 itself" in close
    never = cbs.verdict(_cbs(_run("ramp", (8, 32, 128), 300, 0.6, None, None, 0.6)))
    assert "the ramp 8 → 32 → 128 never reached the base run's final loss 0.5: it ended at 0.6, 20.0% above, beyond the 5% tolerance" in never
    assert "keep B0 = 8" in never
    flat = cbs.verdict(_cbs(_run("ramp", (8,), 1000, 0.5, 1000, 2.0, 2.0), curve=(8, 8, 8), lower=True, stages=(8,)))
    assert flat.startswith("Critical batch size at least 8 at every checkpoint (100 to 1,600 samples)")
    assert "never reached 2 x B0 = 16, so the ramp stays at B0" in flat
    for text in (reached, close, never, flat):
        assert "\n" not in text and text.endswith(".")


@pytest.fixture(scope="module")
def cbs_store(tmp_path_factory):
    """A tiny ``batchbench cbs`` run through the CLI, with its report."""
    from harness.cli import main

    where = tmp_path_factory.mktemp("cbs")
    code = main(["cbs", "--devices", "cpu", "--batch-sizes", "8", "--dataset-sizes", "512", "--epochs", "2", "--checkpoints", "3", "--quiet",
                 "--store", str(where / "c.sqlite"), "--report", str(where / "cbs.html")])
    assert code == 0
    return where / "c.sqlite", where / "cbs.html"


def test_a_cbs_report_opens_with_its_verdict(cbs_store, tmp_path):
    store, page_path = cbs_store
    with Store.open_existing(store) as s:
        data = report.load(s)
    m = cbs.measured(data.points, data.checks, cbs.tolerance_of(data.runs))
    page = page_path.read_text()
    summary = page[page.index('<section id="summary">'):]
    first = re.search(r"<h2>Summary</h2>\s*(<p[^>]*>)(.*?)</p>", summary)
    assert first and 'id="verdict"' in first.group(1) and "class=\"answer\"" in first.group(1)
    import html

    assert html.unescape(first.group(2)) == cbs.verdict(m)  # built from the analysis
    assert "Critical batch size" in first.group(2) and ("ramp" in first.group(2))
    _browser_or_skip()
    shot = load_page(page_path.resolve().as_uri())
    assert shot.failed == [] and shot.console == [] and shot.exceptions == [] and shot.section_ids[0] == "summary"
    (tmp_path / "cbs.png").write_bytes(shot.screenshot_png)


def test_cbs_and_analyze_print_the_verdict_the_report_opens_with(cbs_store, cli):
    store, _ = cbs_store
    with Store.open_existing(store) as s:
        data = report.load(s)
    m = cbs.measured(data.points, data.checks, cbs.tolerance_of(data.runs))
    code, out, err = cli("analyze", "--store", store)
    assert code == 0 and out.rstrip().endswith(cbs.verdict(m)), err
