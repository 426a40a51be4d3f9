"""HTML building blocks of the QC report: escaped text, tables, figures, the before/after widget.

Everything is inline (CSS, JS, base64 PNG images): the page makes no network request.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

CSS = """
:root { --ink: #1d2433; --muted: #5b6478; --line: #e3e7ef; --bg: #f5f7fb; --card: #ffffff;
        --accent: #2457c5; --good: #1a7f4b; --warn: #b26a00; --bad: #b42318; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #17223b; color: #fff; padding: 22px 32px 18px; }
header h1 { margin: 0 0 4px; font-size: 21px; font-weight: 600; letter-spacing: .2px; }
header .sub { color: #b9c3d9; font-size: 13px; }
header .sub code { color: #fff; background: rgba(255,255,255,.08); }
nav { position: sticky; top: 0; z-index: 5; background: #ffffffee; border-bottom: 1px solid var(--line);
      padding: 8px 32px; display: flex; gap: 18px; flex-wrap: wrap; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { scroll-margin-top: 48px; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 40px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
          padding: 16px 20px 18px; margin: 0 0 18px; }
h2 { font-size: 16px; margin: 0 0 10px; font-weight: 600; }
h3 { font-size: 13px; margin: 14px 0 6px; color: var(--muted); font-weight: 600;
     text-transform: uppercase; letter-spacing: .4px; }
p.note { color: var(--muted); font-size: 12.5px; margin: 6px 0 0; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
code { background: #eef1f7; padding: 1px 4px; border-radius: 3px; word-break: break-all; }
pre { background: #f3f5f9; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      overflow: auto; max-height: 360px; margin: 6px 0 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; background: #fafbfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: #fbfcfe; }
.card .k { color: var(--muted); font-size: 12px; }
.card .v { font-size: 20px; font-weight: 600; margin-top: 2px; font-variant-numeric: tabular-nums; }
.card .d { color: var(--muted); font-size: 12px; }
.good { color: var(--good); } .warn { color: var(--warn); } .bad { color: var(--bad); }
figure { margin: 8px 0 4px; }
figure img { max-width: 100%; height: auto; display: block; border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
.compare .stack { position: relative; display: inline-block; max-width: 100%; }
.compare .stack img { display: block; max-width: 100%; height: auto; }
.compare .stack img.top { position: absolute; left: 0; top: 0; }
.controls { display: flex; align-items: center; gap: 10px; margin: 8px 0 2px; font-size: 13px; }
.controls input[type=range] { width: 260px; accent-color: var(--accent); }
.controls button { border: 1px solid var(--accent); background: #fff; color: var(--accent); border-radius: 5px;
                   padding: 4px 12px; font: inherit; cursor: pointer; }
.controls button.on { background: var(--accent); color: #fff; }
.controls .state { color: var(--muted); min-width: 46px; }
.bar { display: inline-block; height: 8px; border-radius: 4px; background: #9db4e8; vertical-align: middle; }
.status { font-size: 12px; color: var(--bad); }
details summary { cursor: pointer; color: var(--accent); margin-top: 6px; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 0 0 28px; }
"""

JS = """
document.querySelectorAll('[data-compare]').forEach(function (box) {
  var top = box.querySelector('img.top');
  var slider = box.querySelector('input[type=range]');
  var button = box.querySelector('button');
  var state = box.querySelector('.state');
  var names = [box.getAttribute('data-a'), box.getAttribute('data-b')];
  var timer = null;
  function show(value) {
    top.style.opacity = String(value / 100);
    state.textContent = 'showing ' + (value >= 50 ? names[1] : names[0]);
  }
  slider.addEventListener('input', function () { show(Number(slider.value)); });
  button.addEventListener('click', function () {
    if (timer !== null) {
      clearInterval(timer); timer = null; button.classList.remove('on'); button.textContent = 'Flicker';
      return;
    }
    button.classList.add('on'); button.textContent = 'Stop';
    timer = setInterval(function () {
      slider.value = Number(slider.value) >= 50 ? 0 : 100; show(Number(slider.value));
    }, 650);
  });
  show(Number(slider.value));
});
"""


def esc(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A short human form of a number (or '–' for None); other values are escaped as text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return esc(value)


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes, caption: str = "", alt: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{png_uri(png)}" alt="{esc(alt or caption)}">{cap}</figure>'


def compare(before: bytes, after: bytes, name_a: str, name_b: str, caption: str = "") -> str:
    """Two same-size images stacked; a slider cross-fades from ``name_a`` to ``name_b``, a button flickers."""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure class="compare" data-compare data-a="{esc(name_a)}" data-b="{esc(name_b)}">'
            f'<div class="stack"><img class="bottom" src="{png_uri(before)}" alt="{esc(name_a)}">'
            f'<img class="top" src="{png_uri(after)}" alt="{esc(name_b)}"></div>'
            f'<div class="controls"><span>{esc(name_a)}</span>'
            f'<input type="range" min="0" max="100" value="100" aria-label="{esc(name_a)} to {esc(name_b)}">'
            f'<span>{esc(name_b)}</span><button type="button">Flicker</button><span class="state"></span></div>'
            f"{cap}</figure>")


def table(header: Sequence[str] | None, rows: Iterable[Sequence[str]], numeric: Sequence[bool] | None = None,
          total_last: bool = False) -> str:
    """A table from already-escaped cell HTML (``header`` None: no header row); ``numeric`` right-aligns."""
    rows = list(rows)
    width = len(header) if header is not None else max((len(r) for r in rows), default=0)
    numeric = numeric or [False] * width
    cls = lambda i: ' class="num"' if numeric[i] else ""  # noqa: E731
    head = ("<thead><tr>" + "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(header)) + "</tr></thead>"
            if header is not None else "")
    body = []
    for r, row in enumerate(rows):
        tr = ' class="total"' if total_last and r == len(rows) - 1 else ""
        body.append(f"<tr{tr}>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def card(key: str, value: str, detail: str = "", tone: str = "") -> str:
    cls = f"v {tone}" if tone else "v"
    d = f'<div class="d">{detail}</div>' if detail else ""
    return f'<div class="card"><div class="k">{esc(key)}</div><div class="{cls}">{value}</div>{d}</div>'


@dataclass(frozen=True)
class Section:
    """A titled part of the page; ``anchor`` is its id for the navigation bar."""

    anchor: str
    title: str
    body: str

    @property
    def html(self) -> str:
        return f'<section id="{esc(self.anchor)}"><h2>{esc(self.title)}</h2>{self.body}</section>'


def page(title: str, subtitle: str, sections: Sequence[Section], footer: str) -> str:
    """The whole document: header, navigation to each section, the sections, footer and the script."""
    links = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><div class=\"sub\">{subtitle}</div></header><nav>{links}</nav>"
            f"<main>{''.join(s.html for s in sections)}</main><footer>{footer}</footer>"
            f"<script>{JS}</script></body></html>\n")
