"""The report as one self-contained HTML page: every image inlined as base64 PNG.

No scripts, fonts or style sheets are fetched: the page opens offline and can be mailed.
Runs appear by their short labels; hovering a shortened one shows the full run name (an HTML
``title``), and the footnote under the table lists them all.

The page reads in a 1280-px window and on a laptop without scrolling sideways: plots shrink
to the page's width, a table too wide for it scrolls inside its own box, and the sample rows
wrap. A sample row is the input, then per task its label and prediction side by side over
their shared key, shown at the width the run drew the key at
(:data:`~densetasks.engine.logs.SAMPLE_KEY_WIDTH`), so its words are at their own size.
"""

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from densetasks.engine.logs import SAMPLE_KEY_WIDTH
from densetasks.experiments.report_plots import Figure
from densetasks.experiments.report_samples import SampleSet, TaskPair, samples_caption

GAP = 8
"""Pixels between the label and the prediction of a pair."""
TILE = (SAMPLE_KEY_WIDTH - GAP) // 2
"""Width of a sample picture on the page: two of them and the gap fill the key's width."""

_STYLE = f"""
body {{ font-family: system-ui, sans-serif; color: #222; line-height: 1.4;
       max-width: 1200px; margin: 1.5em auto; padding: 0 1.5em; }}
.table {{ overflow-x: auto; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:nth-child(-n+2), td:nth-child(-n+2) {{ text-align: left; }}
tr.delta td {{ font-weight: bold; background: #f3f3f3; }}
.legend, .caption, .summary {{ color: #555; max-width: 60em; overflow-wrap: anywhere; }}
img.plot {{ max-width: 100%; height: auto; }}
.sample {{ display: flex; flex-wrap: wrap; gap: 12px 20px; align-items: flex-start;
          margin: 0 0 18px; }}
figure {{ margin: 0; font-size: 0.85em; }}
figcaption {{ color: #444; margin-bottom: 3px; }}
figure.pair {{ width: {SAMPLE_KEY_WIDTH}px; }}
.pictures {{ display: flex; gap: {GAP}px; }}
img.picture {{ width: {TILE}px; height: auto; image-rendering: pixelated; }}
img.key {{ display: block; width: {SAMPLE_KEY_WIDTH}px; margin-top: 3px; }}
"""


def render_html(
    report: dict[str, Any],
    summary: str,
    table: tuple[list[str], list[list[str]]],
    notes: Sequence[str],
    figures: Sequence[Figure],
    samples: dict[str, SampleSet],
) -> str:
    """The page: what is compared (``summary``), the comparison table with its notes, the
    plots, and the sample pictures of each run."""
    header, rows = table
    full_names = {label: name for name, label in report.get("labels", {}).items() if label != name}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>densetasks report</title><style>{_STYLE}</style></head><body>",
        "<h1>densetasks report</h1>",
        f'<p class="summary">{escape(summary)}</p>',
        '<div class="table"><table><thead><tr>'
        + "".join(_header_cell(cell, full_names) for cell in header),
        "</tr></thead><tbody>",
    ]
    for row in rows:
        css = ' class="delta"' if row[0].startswith("Δm") else ""
        parts.append(f"<tr{css}>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>")
    parts.append("</tbody></table></div>")
    parts += [f'<p class="legend">{escape(note)}</p>' for note in notes]
    for figure in figures:
        parts += [f"<h2>{escape(figure.title)}</h2>", _img(figure.png, figure.title, "plot")]
    if samples:
        parts.append("<h2>Sample predictions</h2>")
        for name, sample_set in samples.items():
            label = report.get("labels", {}).get(name, name)
            parts += [
                f"<h3{_title(full_names.get(label))}>{escape(label)}</h3>",
                f'<p class="caption">{escape(samples_caption(sample_set))}</p>',
                *_sample_rows(sample_set),
            ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _sample_rows(sample_set: SampleSet) -> list[str]:
    """One flex row per image: the input, then a figure per task (label | prediction over
    their key)."""
    parts = []
    for row in sample_set.rows:
        parts.append(f'<div class="sample" data-sample="{row.index}">')
        if row.input is not None:
            parts.append(
                '<figure class="tile" data-task="input"><figcaption>input</figcaption>'
                f"{_picture(row.input, 'input')}</figure>"
            )
        parts += [_pair(pair) for pair in row.pairs]
        parts.append("</div>")
    return parts


def _pair(pair: TaskPair) -> str:
    """A task's figure: caption in words, label and prediction side by side, the key."""
    pictures = [
        (kind, path)
        for kind, path in (("label", pair.label), ("prediction", pair.prediction))
        if path
    ]
    caption = f"{pair.task}: {' | '.join(kind for kind, _ in pictures)}"
    images = "".join(_picture(path, f"{pair.task} {kind}", kind) for kind, path in pictures)
    key = "" if pair.key is None else _img(pair.key.read_bytes(), f"{pair.task} key", "key")
    return (
        f'<figure class="pair" data-task="{escape(pair.task)}">'
        f'<figcaption>{escape(caption)}</figcaption><div class="pictures">{images}</div>'
        f"{key}</figure>"
    )


def _picture(path: Path, alt: str, kind: str = "input") -> str:
    return _img(path.read_bytes(), alt, "picture", f' data-kind="{kind}"')


def _header_cell(cell: str, full_names: dict[str, str]) -> str:
    """A ``<th>``; a shortened run label (``label`` or ``label (n=3)``) gets its full name as
    the tooltip."""
    label = cell.split(" (n=", 1)[0]
    return f"<th{_title(full_names.get(label))}>{escape(cell)}</th>"


def _title(full_name: str | None) -> str:
    return f' title="{escape(full_name)}"' if full_name else ""


def _img(png: bytes, alt: str, css_class: str, attributes: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<img class="{css_class}"{attributes} alt="{escape(alt)}" '
        f'src="data:image/png;base64,{data}">'
    )
