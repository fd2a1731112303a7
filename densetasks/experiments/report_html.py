"""The report as one self-contained HTML page: every image inlined as base64 PNG.

No scripts, fonts or style sheets are fetched: the page opens offline and can be mailed.
Runs appear by their short labels; hovering a shortened one shows the full run name (an HTML
``title``), and the footnote under the table lists them all.
"""

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from densetasks.experiments.report_plots import Figure

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
tr.delta td { font-weight: bold; background: #f3f3f3; }
.legend { color: #555; max-width: 60em; }
figure { display: inline-block; margin: 4px; text-align: center; font-size: 0.8em; }
img.sample { image-rendering: pixelated; width: 160px; }
"""


def render_html(
    report: dict[str, Any],
    table: tuple[list[str], list[list[str]]],
    notes: Sequence[str],
    figures: Sequence[Figure],
    samples: dict[str, list[Path]],
) -> str:
    """The page: summary, comparison table with its notes, plots, sample pictures per run."""
    header, rows = table
    full_names = {label: name for name, label in report.get("labels", {}).items() if label != name}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>densetasks report</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>densetasks report</h1>",
        f"<p>Split: <code>{escape(report['split'])}</code>.</p>",
        "<table><thead><tr>" + "".join(_header_cell(cell, full_names) for cell in header),
        "</tr></thead><tbody>",
    ]
    for row in rows:
        css = ' class="delta"' if row[0].startswith("Δm") else ""
        parts.append(f"<tr{css}>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>")
    parts.append("</tbody></table>")
    parts += [f'<p class="legend">{escape(note)}</p>' for note in notes]
    for figure in figures:
        parts += [f"<h2>{escape(figure.title)}</h2>", _img(figure.png, figure.title, "")]
    if samples:
        parts.append("<h2>Sample predictions</h2>")
        for name, images in samples.items():
            label = report.get("labels", {}).get(name, name)
            parts.append(f"<h3{_title(full_names.get(label))}>{escape(label)}</h3><div>")
            parts += [
                f"<figure>{_img(image.read_bytes(), image.stem, 'sample')}"
                f"<figcaption>{escape(image.stem)}</figcaption></figure>"
                for image in images
            ]
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _header_cell(cell: str, full_names: dict[str, str]) -> str:
    """A ``<th>``; a shortened run label (``label`` or ``label (n=3)``) gets its full name as
    the tooltip."""
    label = cell.split(" (n=", 1)[0]
    return f"<th{_title(full_names.get(label))}>{escape(cell)}</th>"


def _title(full_name: str | None) -> str:
    return f' title="{escape(full_name)}"' if full_name else ""


def _img(png: bytes, alt: str, css_class: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    css = f' class="{css_class}"' if css_class else ""
    return f'<img{css} alt="{escape(alt)}" src="data:image/png;base64,{data}">'
