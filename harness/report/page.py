"""The HTML report: DataFrames from the store in, one self-contained HTML file out.

Inline CSS, figures as base64 PNG, the points as a CSV data URI, a few lines of inline script to
sort the table: nothing is fetched, so the file opens from disk and travels by mail. Built with
pandas, seaborn/matplotlib and a jinja2 template; never imports torch. Every figure has a
caption saying how to read it and an alt text; a section without data says so instead.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.analysis import convergence
from harness.report import figures
from harness.report.plot import Figure
from harness.report.tables import OTHERS_SHOWN, points_table, run_kind, summary_html
from harness.store.schema import Status, spec_of

SECTIONS = ("Summary", "Throughput", "Phase breakdown", "Convergence", "Time and steps to target", "Memory and utilisation", "Points")


@dataclass
class Section:
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    html: str = ""

    @property
    def anchor(self) -> str:
        return self.title.lower().replace(" ", "-")


@dataclass(frozen=True)
class ReportData:
    runs: pd.DataFrame
    points: pd.DataFrame
    checks: pd.DataFrame
    samples: pd.DataFrame
    others: pd.DataFrame | None = None
    """The store's runs the page does not show (``runs`` rows with ``points`` and ``ok``
    counts), listed with the command that shows each; None: not known."""
    store: str | None = None
    """The store's path as given, for those commands."""


def load(store, run_ids: list[str] | None = None) -> ReportData:
    """The runs to report and their points, checks and samples: the given ones, or the latest
    with the runs just before it that repeat it (``repeats_of_latest``); and the store's other
    runs, which the page lists."""
    every = store.load("runs")
    runs = store.select_runs(run_ids) if run_ids else repeats_of_latest(every)
    others = every[~every["run_id"].isin(runs)]
    if len(others):  # the points of those the page lists (the latest few), counted
        status = store.load("points", list(others["run_id"].tail(OTHERS_SHOWN)))[["run_id", "status"]]
        counts = status.assign(ok=status["status"] == Status.OK).groupby("run_id")["ok"].agg(["size", "sum"])
        others = others.assign(points=others["run_id"].map(counts["size"]).fillna(0).astype(int),
                               ok=others["run_id"].map(counts["sum"]).fillna(0).astype(int))
    return ReportData(store.load("runs", runs), store.load("points", runs), store.load("checks", runs), store.load("samples", runs),
                      others=others, store=str(store.path))


def repeats_of_latest(runs: pd.DataFrame) -> list[str]:
    """The latest run, and the runs just before it of the same sweep (the same spec) on the same
    machine and software (the same environment): ``batchbench run --runs N`` writes such runs,
    and the page pools them as repeats. A ``tune`` or ``cbs`` run is shown alone."""
    if runs.empty:
        return []
    rows = runs.assign(order=runs["started_at"].fillna("")).sort_values("order", kind="stable").to_dict("records")
    last = rows[-1]

    def key(row: dict) -> tuple:
        return row.get("spec_hash") or row.get("spec_json"), row.get("env_json")

    shown = [last]
    if run_kind(last.get("spec_hash")) == "sweep":
        for row in reversed(rows[:-1]):
            if key(row) != key(last):
                break
            shown.append(row)
    return [row["run_id"] for row in reversed(shown)]


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d2330;background:#f6f7f9;line-height:1.45}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#c9cfdb;font-size:13px}
nav{padding:8px 28px;background:#e9ecf2;font-size:13px}nav a{margin-right:14px;color:#2b4c8c;text-decoration:none}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:14px 20px;margin:18px 0}
h2{font-size:18px;margin:4px 0 10px}figure{margin:14px 0}figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:13px;color:#4a5263;margin-top:4px}figcaption b{color:#1d2330}
.answer{font-size:15px;background:#eef6ee;border-left:4px solid #55a868;padding:8px 12px;margin:6px 0}
.note{color:#4a5263;font-size:13px;background:#f3f5f8;border-left:3px solid #9aa7bd;padding:6px 10px}
.warn{color:#7a2e0e;background:#fff4ec;border-left:3px solid #e07b39;padding:6px 10px}
dl.env{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:13px;margin:0 0 10px}dt{color:#6a7285}dd{margin:0}
table{border-collapse:collapse;font-size:12px}th,td{border-bottom:1px solid #e6e8ee;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f0f2f6;cursor:pointer;position:sticky;top:0}table.rec td,table.rec th{text-align:left;white-space:normal}
tr.bad td{color:#9b2c2c}.scroll{max-height:520px;overflow:auto;border:1px solid #e6e8ee}.scroll.runs{max-height:260px;margin:0 0 12px}
</style></head><body>
<header><h1>{{ title }}</h1><p>{{ subtitle }}</p></header>
<nav>{% for s in sections %}<a href="#{{ s.anchor }}">{{ s.title }}</a>{% endfor %}</nav>
<main>
{% for s in sections %}<section id="{{ s.anchor }}"><h2>{{ s.title }}</h2>
{{ s.html }}
{% for n in s.notes %}<p class="note">{{ n }}</p>{% endfor %}
{% for f in s.figures %}<figure><img alt="{{ f.alt }}" src="data:image/png;base64,{{ f.png_base64 }}"><figcaption><b>{{ f.title }}.</b> {{ f.caption }}</figcaption></figure>{% endfor %}
</section>{% endfor %}
</main>
<script>
document.querySelectorAll("table#points th").forEach(function (th, i) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], rows = Array.from(body.rows), asc = th.dataset.asc !== "1";
    rows.sort(function (a, b) {
      var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    th.dataset.asc = asc ? "1" : "0";
  });
});
</script>
</body></html>
"""


def render(data: ReportData, title: str = "batchbench report") -> str:
    """The report of the given runs as one HTML string."""
    points = data.points
    ok = points[points["status"] == Status.OK] if len(points) else points
    env = spec_of(data.runs["env_json"].iloc[-1]) if len(data.runs) else {}
    groups = convergence.analyze(points, data.checks) if len(points) else []
    names = list(SECTIONS)
    if "world_size" in points and points["world_size"].fillna(1).max() > 1:
        names.insert(names.index("Throughput") + 1, "Data-parallel scaling")
    sections = {name: Section(name) for name in names}

    def add(name: str, figs, empty: str) -> None:
        figs = [f for f in (figs if isinstance(figs, list) else [figs]) if f is not None]
        sections[name].figures += figs
        if not figs:
            sections[name].notes.append(empty)

    if len(ok):
        add("Throughput", figures.throughput_figure(ok), "No throughput was measured (no point has measured steps).")
        flops = figures.flops_figure(ok)
        if flops is not None:
            sections["Throughput"].figures.append(flops)
        scaling = figures.scaling_figure(ok)
        if scaling is not None:
            sections["Data-parallel scaling"].figures.append(scaling)
        add("Phase breakdown", figures.phase_figures(ok), "No phase times were measured.")
        add("Convergence", figures.convergence_figures(ok, data.checks), "No loss checks were recorded.")
        figs, notes = figures.target_figures(ok, data.checks, groups)
        search = figures.search_figure(points, data.checks)
        sections["Time and steps to target"].figures += ([search] if search is not None else []) + figs
        sections["Time and steps to target"].notes += notes + target_notes(groups)
        figs, notes = figures.memory_figures(ok, data.samples, env)
        sections["Memory and utilisation"].figures += figs
        sections["Memory and utilisation"].notes += notes
    else:
        for name in names[1:-1]:
            sections[name].notes.append("No point finished with status ok, so there is nothing to plot.")
    measured = cbs_measured(data)
    if measured is not None:  # a cbs run has no target: its answer is the curve and the ramp, not a best batch size
        groups = []
    sections["Summary"].html = summary_html(data, ok, groups, target_note=measured is None)
    headline = figures.headline_figure(groups) if len(ok) else None
    if headline is not None:
        sections["Summary"].figures.append(headline)
    if measured is not None:
        cbs_summary(sections["Summary"], measured)
    sections["Points"].html = points_table(points) if len(points) else ""
    if not len(points):
        sections["Points"].notes.append("No points stored for this run.")
    return html_page(title, subtitle(data), list(sections.values()))


def subtitle(data: ReportData) -> str:
    """The runs shown (``3 runs: A, B, C``), the points, and how many more the store holds."""
    ids = list(data.runs["run_id"]) if len(data.runs) else []
    shown = ("no run" if not ids else ids[0] if len(ids) == 1 else f"{len(ids)} runs: {', '.join(ids)}")
    more = len(data.others) if data.others is not None else 0
    return f"{shown} · {len(data.points)} points" + (f" · {more} other run{'s' * (more > 1)} in the store (listed in the Summary)" if more else "")


def cbs_summary(section: Section, m) -> None:
    """A cbs run's Summary: its verdict first, in one line, then the curve's figure and the
    verification table."""
    from harness.analysis.cbs import verdict

    section.html = f"<p class=\"answer\" id=\"verdict\">{html.escape(verdict(m))}</p>" + section.html + cbs_html(m)
    figure = figures.cbs_figure(m)
    if figure is not None:
        section.figures.append(figure)


def cbs_measured(data):
    """A ``batchbench cbs`` run's curve, ramp and verification (None for other runs), with the
    tolerance the run used."""
    from harness.analysis import cbs

    if "role" not in data.points or not (data.points["role"] == "base").any():
        return None
    return cbs.measured(data.points, data.checks, cbs.tolerance_of(data.runs))


def cbs_html(m) -> str:
    """The verification of the ramp, as a table."""
    rows = "".join(
        f"<tr><td>{html.escape(v.name)}</td><td>{', '.join(map(str, dict.fromkeys(v.batches)))}</td><td>{v.steps:,}</td>"
        f"<td>{'-' if v.final_loss is None else f'{v.final_loss:.4g}'}</td>"
        f"<td>{'-' if v.steps_to_base_loss is None else f'{v.steps_to_base_loss:,}'}</td>"
        f"<td>{'-' if v.train_s_to_base_loss is None else f'{v.train_s_to_base_loss:.3g} s'}</td></tr>" for v in m.verification)
    corr = "-" if m.rank_correlation is None else f"{m.rank_correlation:.2f}"
    return ("<h3>Critical batch size and the ramp</h3>"
            f"<p>Rank correlation of the critical batch size with samples seen: {corr}. Branch compute: {m.branch_share:.1f}x the base "
            "run's samples.</p><table class=\"rec\"><thead><tr><th>run</th><th>batches</th><th>steps</th><th>final loss</th>"
            "<th>steps to the base run's final loss</th><th>training time to it</th></tr></thead><tbody>" + rows + "</tbody></table>")


def target_notes(groups) -> list[str]:
    """Per group: the target it was measured against, and a warning where the loss checks were
    too coarse for steps-to-target to mean much (the same words as ``batchbench analyze``)."""
    from harness.analysis.keys import group_label

    notes = []
    targets = {g.target for g in groups if g.target}
    if len(targets) == 1:
        notes.append(f"Target: {targets.pop()}.")
    for g in groups:
        if len(targets) > 1 and g.target:
            notes.append(f"Target of {group_label(g.key)}: {g.target}.")
        if g.coarse_checks:
            notes.append(f"Warning for {group_label(g.key)}: {g.coarse_note()}.")
    return [html.escape(n) for n in notes]


def html_page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The page around the sections: header, navigation, styles and the table-sorting script."""
    import jinja2

    template = jinja2.Environment(autoescape=False).from_string(TEMPLATE)
    return template.render(title=html.escape(title), subtitle=html.escape(subtitle), sections=sections)


def write(data: ReportData, output: str | Path, title: str = "batchbench report") -> Path:
    from harness.outputs import write_output

    return write_output(output, render(data, title), "-o")
