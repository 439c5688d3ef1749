"""The batch runner's report: the run's results.json rendered as markdown and as one HTML page.

Both are rendered from the same run dict (the content of results.json): run info (preset, device,
versions), a summary table of the notebooks, then per notebook its status, error, recorded results
and figures. Built for ``vislearn run`` (``vislearn.course.runner``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..results import format_value


def _run_info(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    versions = run.get("versions", {})
    rows = [("preset", run["preset"]), ("device", run["device"]), ("started", run["started"]),
            ("finished", run["finished"] or "(still running or interrupted)")]
    if run.get("seconds") is not None:
        rows.append(("total time", f"{run['seconds']:.1f} s"))
    rows += [(name, str(value)) for name, value in versions.items() if value is not None]
    return rows


def _summary_rows(run: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(stem, entry.get("title", stem), entry["status"], f"{entry['seconds']:.1f}")
            for stem, entry in run["notebooks"].items()]


def error_line(error: Mapping[str, Any]) -> str:
    where = f" in cell {error['cell_index']}" if error.get("cell_index") is not None else ""
    return f"{error['ename']}{where}: {error['evalue']}"


def _md(text: Any) -> str:
    """A value safe inside a markdown table cell: pipes and angle brackets escaped, one line."""
    return re.sub(r"([|<>])", r"\\\1", str(text)).replace("\n", " ")


def render_markdown(run: Mapping[str, Any]) -> str:
    """The run as a markdown report: run info, a summary table, then every notebook's results."""
    failed = [stem for stem, entry in run["notebooks"].items() if entry["status"] != "ok"]
    lines = [f"# vislearn run: preset {run['preset']}", ""]
    lines += [f"**{len(run['notebooks']) - len(failed)} ok, {len(failed)} failed**"
              + (f" ({', '.join(failed)})" if failed else ""), ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_md(v)} |" for k, v in _run_info(run)] + [""]
    lines += ["## Summary", "", "| notebook | title | status | seconds |", "|---|---|---|---:|"]
    lines += [f"| [{stem}](#{stem}) | {_md(title)} | {status} | {secs} |"
              for stem, title, status, secs in _summary_rows(run)]
    for stem, entry in run["notebooks"].items():
        lines += ["", f'<a id="{stem}"></a>', "", f"## {stem}: {entry.get('title', stem)}", ""]
        lines += [f"Status: **{entry['status']}** in {entry['seconds']:.1f} s. "
                  f"Executed notebook: [{entry['notebook']}]({entry['notebook']})"
                  + (f" ({entry['kept']})" if entry.get("kept") else ""), ""]
        if entry["error"]:
            lines += [f"**Error:** `{error_line(entry['error'])}`", ""]
            tail = entry["error"].get("traceback", "").strip().splitlines()[-15:]
            if tail:
                lines += ["```", *tail, "```", ""]
        if entry["results"]:
            lines += ["| metric | value |", "|---|---:|"]
            lines += [f"| {_md(k)} | {_md(format_value(v))} |" for k, v in entry["results"].items()]
            lines += [""]
        elif not entry["error"]:
            lines += ["No results recorded.", ""]
        for figure in entry["figures"]:
            lines += [f"![{Path(figure).stem}]({figure})", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #176f2c; font-weight: bold; } .failed, .interrupted { color: #b00020; font-weight: bold; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; font-size: 0.85rem; }
figure { margin: 0.5rem 0 1.5rem; } img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9rem; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _html_table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; every cell must already be escaped HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(run: Mapping[str, Any]) -> str:
    """The run as one HTML page (figures linked by relative path), same content as the markdown."""
    failed = [stem for stem, entry in run["notebooks"].items() if entry["status"] != "ok"]
    title = f"vislearn run: preset {run['preset']}"
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p><strong>{len(run['notebooks']) - len(failed)} ok, {len(failed)} failed</strong>"
             + (f" ({_e(', '.join(failed))})" if failed else "") + "</p>",
             _html_table(["", ""], [(_e(k), _e(v)) for k, v in _run_info(run)]),
             "<h2>Summary</h2>",
             _html_table(["notebook", "title", "status", "seconds"],
                         [(f'<a href="#{_e(stem)}">{_e(stem)}</a>', _e(title_),
                           f'<span class="{_e(status)}">{_e(status)}</span>', _e(secs))
                          for stem, title_, status, secs in _summary_rows(run)], numeric=[3])]
    for stem, entry in run["notebooks"].items():
        parts += [f'<h2 id="{_e(stem)}">{_e(stem)}: {_e(entry.get("title", stem))}</h2>',
                  f'<p>Status: <span class="{_e(entry["status"])}">{_e(entry["status"])}</span> in '
                  f'{entry["seconds"]:.1f} s. Executed notebook: '
                  f'<a href="{_e(entry["notebook"])}">{_e(entry["notebook"])}</a>'
                  + (f' ({_e(entry["kept"])})' if entry.get("kept") else "") + '</p>']
        if entry["error"]:
            parts.append(f"<p><strong>Error:</strong> <code>{_e(error_line(entry['error']))}</code></p>")
            if entry["error"].get("traceback"):
                parts.append(f"<details><summary>Traceback</summary><pre>{_e(entry['error']['traceback'])}"
                             "</pre></details>")
        if entry["results"]:
            parts.append(_html_table(["metric", "value"],
                                     [(_e(k), _e(format_value(v))) for k, v in entry["results"].items()],
                                     numeric=[1]))
        elif not entry["error"]:
            parts.append("<p>No results recorded.</p>")
        for figure in entry["figures"]:
            parts.append(f'<figure><img src="{_e(figure)}" alt="{_e(Path(figure).stem)}" loading="lazy">'
                         f"<figcaption>{_e(Path(figure).stem)}</figcaption></figure>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
