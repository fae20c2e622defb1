"""The report as one self-contained HTML file (figures inline as base64 PNG, inline CSS, no script, nothing fetched)
and as Markdown with the same numbers (figures as PNG files beside it)."""

from __future__ import annotations

import base64
import html

from vaekit.analysis.why.base import Section

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
.headline { font-size: 1.8rem; font-weight: 600; margin: .3rem 0; }
.verdict { padding: .5rem .8rem; border-left: 4px solid; margin: 1rem 0; }
.confirmed { border-color: #2a7; background: #eef9f2; } .unconfirmed { border-color: #c63; background: #fdf1ea; }
.missing { color: #a40; font-style: italic; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .2rem .5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { caption-side: top; text-align: left; color: #555; padding-bottom: .2rem; }
figure { margin: 1rem 0; } img { max-width: 100%; } figcaption { color: #555; font-size: 13px; }
section { page-break-inside: avoid; margin-bottom: 2.5rem; }
@media print { body { margin: 0; max-width: none; } .verdict { border-width: 2px; } }
"""


def to_html(title: str, intro: list[str], sections: list[Section]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(line)}</p>" for line in intro),
    ]
    for section in sections:
        parts.append(f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>')
        parts.append(f"<p>{html.escape(section.claim)}</p>")
        parts.append(f'<p class="headline" data-key="{section.key}">{html.escape(section.headline)}</p>')
        parts += [f'<p class="missing">{html.escape(line)}</p>' for line in section.missing]
        for table in section.tables:
            parts.append(f"<table><caption>{html.escape(table.caption)}</caption><tr>")
            parts += [f"<th>{html.escape(cell)}</th>" for cell in table.header]
            parts.append("</tr>")
            for row in table.rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
            parts.append("</table>")
        for caption, png in section.figures:
            data = base64.b64encode(png).decode("ascii")
            alt = html.escape(caption)
            parts.append(
                f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'
            )
        kind = "confirmed" if section.confirmed else "unconfirmed"
        parts.append(f'<p class="verdict {kind}">{html.escape(section.verdict)}.</p></section>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def figure_name(section: Section, index: int) -> str:
    return f"figures/{section.key}-{index + 1}.png"


def to_markdown(title: str, intro: list[str], sections: list[Section]) -> str:
    lines = [f"# {title}", "", *(f"{line}\n" for line in intro)]
    for section in sections:
        lines += [f"## {section.title}", "", section.claim, "", f"**{section.headline}**", ""]
        lines += [f"*{line}*\n" for line in section.missing]
        for table in section.tables:
            lines += [table.caption, "", _md_row(table.header), _md_row(["---"] * len(table.header))]
            lines += [_md_row(row) for row in table.rows] + [""]
        for index, (caption, _) in enumerate(section.figures):
            lines += [f"![{caption}]({figure_name(section, index)})", ""]
        lines += [f"> {section.verdict}.", ""]
    return "\n".join(lines)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
