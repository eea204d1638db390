"""matplotlib plumbing shared by every figure: a headless backend, one theme, PNGs inlined as
base64, log2 batch-size axes, median lines with min-max bands, palettes and series labels."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import pandas as pd

from harness.store.schema import PHASES
from harness.analysis.keys import GROUP_KEYS, say

PHASE_COLORS = dict(zip(PHASES, ("#4C72B0", "#DD8452", "#55A868", "#8172B3")))


@dataclass(frozen=True)
class Figure:
    title: str
    caption: str
    alt: str
    png_base64: str


def png(fig) -> str:
    for ax in fig.axes:  # minor tick labels are most of the layout time, and little help
        ax.minorticks_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    return plt, sns


def log2_axis(ax, values) -> None:
    """A batch-size axis: log2, a tick at each batch size that was run, except those closer
    than 0.6 octave to a kept one (718 beside 512 and 1024 would overlap); powers of two and
    the largest size are kept first."""
    ax.set_xscale("log", base=2)
    ticks = sorted({int(v) for v in values if v and v > 0})
    if not ticks:
        return
    import math

    preferred = sorted(ticks, key=lambda t: (t != ticks[-1], t & (t - 1) != 0, t))
    kept: list[int] = []
    for tick in preferred:
        if all(abs(math.log2(tick) - math.log2(other)) >= 0.6 for other in kept):
            kept.append(tick)
    kept.sort()
    while len(kept) > 14:  # very wide ranges: every other tick
        kept = kept[::2] if kept[-1] == kept[::2][-1] else kept[::2] + [kept[-1]]
    ax.set_xticks(kept)
    ax.set_xticklabels([str(t) for t in kept], rotation=45 if len(kept) > 8 else 0)
    ax.minorticks_off()


def log_y(ax) -> None:
    """A log y axis (call it after plotting) whose ticks read as numbers whatever its range."""
    log_axis(ax, "y")


def log_axis(ax, which: str = "y", *, powers_of_two: bool = False) -> None:
    """Put ``ax``'s ``which`` axis ("x" or "y") on a log scale, after plotting, with numeric
    labels at ticks inside the view however narrow or wide the range: matplotlib's own log
    ticks sit only at decades, so a range inside one decade (a throughput axis from 60,000 to
    90,000 samples/s) would have no label at all. ``powers_of_two``: ticks at powers of two
    where there are at least two (batch sizes)."""
    import math

    from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter, NullLocator

    axis = ax.yaxis if which == "y" else ax.xaxis
    box = ax.dataLim
    top = box.y1 if which == "y" else box.x1
    if not (math.isfinite(top) and top > 0):  # nothing positive drawn (every point failed): stay linear
        return
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    get_lim, set_lim = (ax.get_ylim, ax.set_ylim) if which == "y" else (ax.get_xlim, ax.set_xlim)
    low, high = get_lim()
    if not (low > 0 and high > low):
        return
    ticks = log_ticks(low, high, max_ticks=12 if which == "y" else 7, powers_of_two=powers_of_two)
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FixedFormatter(tick_labels(ticks)))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())
    set_lim(low, high)


def log_ticks(low: float, high: float, max_ticks: int = 12, powers_of_two: bool = False) -> list[float]:
    """Round ticks between ``low`` and ``high`` (both > 0): powers of two when asked, else
    decades, or 1-2-5 of each decade, or 1-1.5-2-3-5-7, whichever first gives three; inside a
    narrow range, evenly spaced round numbers; over many decades, decades only, then every few."""
    import math

    def inside(values) -> list[float]:
        return sorted({float(v) for v in values if low * (1 - 1e-9) <= v <= high * (1 + 1e-9)})

    ticks: list[float] = []
    if powers_of_two:
        ticks = inside(2.0**k for k in range(math.floor(math.log2(low)), math.ceil(math.log2(high)) + 1))
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for subs in ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)):
        if len(ticks) >= (2 if powers_of_two else 3):
            break
        ticks = inside(m * 10.0**k for k in decades for m in subs)
    if len(ticks) < 3:  # a narrow range: evenly spaced round numbers
        from matplotlib.ticker import MaxNLocator

        ticks = inside(t for t in MaxNLocator(4, steps=[1, 2, 2.5, 5, 10], min_n_ticks=3).tick_values(low, high) if t > 0)
    if len(ticks) < 2:  # narrower than round numbers go: the two ends
        ticks = [low, high]
    if len(ticks) > max_ticks and not powers_of_two:
        ticks = [t for t in ticks if _is_decade(t)]
    return ticks[::math.ceil(len(ticks) / max_ticks)]


def _is_decade(value: float) -> bool:
    import math

    return math.isclose(value, 10.0 ** round(math.log10(value)), rel_tol=1e-9)


def tick_labels(ticks: list[float]) -> list[str]:
    """Each tick as a plain number with as few digits as tell it from its neighbours
    (``0.0005``, ``27.5``, ``120,000``), in powers of ten only far from 1 (``2e-7``)."""
    import math

    digits = 1
    while digits < 15 and len({f"{t:.{digits}g}" for t in ticks}) < len(ticks):
        digits += 1
    labels = []
    for t in ticks:
        shown = next((p for p in range(1, digits + 3) if math.isclose(float(f"{t:.{p}g}"), t, rel_tol=1e-12)), digits)
        if not 1e-4 <= abs(t) < 1e9:
            labels.append(f"{t:.{shown}g}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e"))
            continue
        decimals = max(0, shown - 1 - math.floor(math.log10(abs(t))))
        labels.append(f"{t:,.{decimals}f}")
    return labels


def symlog_x(ax, linthresh: float) -> None:
    """An x axis from 0 that is linear up to ``linthresh`` and logarithmic above (steps or
    samples from 0 over several decades), its ticks as plain numbers."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: tick_labels([value])[0] if value > 0 else "0"))


def series_label(points: pd.DataFrame) -> pd.Series:
    """Series label per point: every configuration key that varies among the points (they are
    never pooled), or device and dataset size where none does."""
    shown = [k for k in GROUP_KEYS if k in points and points[k].astype(str).nunique() > 1] or ["device", "dataset_size"]
    label = None
    for column in shown:
        phrase = "N={}" if column == "dataset_size" else None
        part = points[column].map(lambda value, c=column, p=phrase: say(c, "-" if value is None or value != value else value, p))
        label = part if label is None else label + " · " + part
    return label


def lines(ax, data: pd.DataFrame, xy: tuple[str, str], hue: str, colors: dict, *, band: bool = True, marker: str | None = None, lw: float = 1.3) -> None:
    """One line per ``hue`` value of the columns ``xy``: the median over repeats at each x, with
    a band from the minimum to the maximum (plain pandas + matplotlib: seaborn's bootstrap is
    too slow here)."""
    x, y = xy
    for key, group in data.groupby(hue, sort=True):
        stats = group.groupby(x)[y].agg(["median", "min", "max"]).dropna()
        if stats.empty:
            continue
        color = colors.get(key)
        ax.plot(stats.index, stats["median"], marker=marker, color=color, lw=lw, label=str(key), markersize=4)
        if band and (stats["max"] > stats["min"]).any():
            ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, lw=0)


def palette(values, name: str = "viridis") -> dict:
    import seaborn as sns

    values = sorted(values)
    return dict(zip(values, sns.color_palette(name, len(values))))
