"""The figure and the HTML page of ``tagger report``: each version's top tags' live predicted
rate against the reference, and the live metrics over time; the page embeds the PNG, so it is
one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.dates as mdates
import matplotlib.pyplot as plt

from trainer.live_data import Timeline, VersionWindow, tag_rows, version_note

# metric -> line style in the over-time panel; the colour tells the version
METRIC_STYLES = {"micro_f1": "-", "p_at_1": "--", "recall_at_5": ":"}


def figure_png(windows: list[VersionWindow], over_time: Timeline) -> bytes:
    """One PNG: a bar panel per version (live vs reference predicted rate of its top tags) and,
    below, the live metrics of every version per time bucket."""
    fig = plt.figure(figsize=(max(8.0, 5.0 * len(windows)), 8))
    grid = fig.add_gridspec(2, len(windows))
    for i, w in enumerate(windows):
        ax = fig.add_subplot(grid[0, i])
        tags = w.top_tags[::-1]
        rates = [w.figures.tag_rates.get(tag, (0.0, None)) for tag in tags]
        positions = range(len(tags))
        ax.barh([p + 0.2 for p in positions], [live for live, _ in rates], 0.4, label="live")
        ax.barh(
            [p - 0.2 for p in positions],
            [ref or 0.0 for _, ref in rates],
            0.4,
            label="reference" if w.profile is not None else "reference (none)",
        )
        ax.set_yticks(list(positions), tags, fontsize=8)
        ax.set(title=f"{w.version}\npredicted rate of its top tags", xlabel="share of rows")
        ax.legend(loc="lower right", fontsize=8)
    over = fig.add_subplot(grid[1, :])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, w in enumerate(windows):
        for metric, style in METRIC_STYLES.items():
            points = [
                (t, getattr(f, metric))
                for t, f in zip(over_time.times, over_time.figures[w.version], strict=True)
                if f is not None and getattr(f, metric) is not None
            ]
            if points:
                over.plot(
                    mdates.date2num([t for t, _ in points]),
                    [v for _, v in points],
                    style,
                    marker="o",
                    color=colours[i % len(colours)],
                    label=f"{w.version} {metric}",
                )
    over.xaxis_date()
    over.set(title="live metrics on the rows with feedback, per time bucket", ylim=(0, 1))
    over.grid(alpha=0.3)
    if over.get_legend_handles_labels()[0]:
        over.legend(fontsize=7, loc="lower left")
    else:
        over.text(0.5, 0.5, "no feedback in the window", ha="center", transform=over.transAxes)
    over.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def write_html(
    path: Path,
    windows: list[VersionWindow],
    table: list[tuple[str, list[str]]],
    png: bytes,
    source: str,
) -> None:
    """A page with the metric table, each version's top-tag rates and the figure inline."""
    esc = html.escape
    head = "".join(f"<th>{esc(w.version)}</th>" for w in windows)
    body = "".join(
        f"<tr><th>{esc(name)}</th>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
        for name, cells in table
    )
    notes = "".join(
        f"<p>{esc(w.version)}: {esc(version_note(w))}</p>" for w in windows if version_note(w)
    )
    tags = "".join(
        f"<h2>Top tags of {esc(w.version)}</h2><table><tr><th>tag</th><th>live</th>"
        "<th>reference</th></tr>"
        + "".join(
            f"<tr><td>{esc(t)}</td><td>{esc(live)}</td><td>{esc(ref)}</td></tr>"
            for t, live, ref in tag_rows(w)
        )
        + "</table>"
        for w in windows
    )
    image = base64.b64encode(png).decode("ascii")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tagger report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style></head>
<body><h1>Live figures</h1><p>{esc(source)}; cells: live / reference</p>
<table><tr><th></th>{head}</tr>{body}</table>{notes}{tags}
<h2>Per-tag rates and metrics over time</h2>
<img alt="per-tag rates and live metrics over time" src="data:image/png;base64,{image}">
</body></html>
"""
    path.write_text(page, encoding="utf-8")
