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
    """A log y axis (call it after plotting) with ticks at 1, 2 and 5 of each decade, or finer
    where that gives fewer than three, as plain numbers: a range inside one decade still reads."""
    import math

    from matplotlib.ticker import NullFormatter

    top = ax.dataLim.y1
    if not (math.isfinite(top) and top > 0):  # nothing positive drawn (every point failed): stay linear
        return
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if not (low > 0 and high > low):
        return
    ticks: list[float] = []
    for subs in ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)):
        ticks = [m * 10.0**k for k in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1) for m in subs if low <= m * 10.0**k <= high]
        if len(ticks) >= 3:
            break
    if len(ticks) < 3:  # a narrow range: evenly spaced round numbers
        from matplotlib.ticker import MaxNLocator

        ticks = [t for t in MaxNLocator(4).tick_values(low, high) if low <= t <= high and t > 0]
    if len(ticks) > 12:
        ticks = [t for t in ticks if math.isclose(t / 10.0 ** math.floor(math.log10(t) + 1e-9), 1.0)]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t:.3g}" for t in ticks])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(low, high)


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
