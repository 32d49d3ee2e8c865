"""``hnmine report``: what was mined, as one self-contained HTML file (or JSON).

- :mod:`hnmine.mining.sketch` (in the miner): the window sample ``hnmine mine`` records in its manifest;
- :mod:`hnmine.report.stats`: the numbers, from streaming passes over a published output or a run;
- :mod:`hnmine.report.html`: the page (matplotlib charts inlined as SVG; needs the ``report`` extra).

Importing this package imports neither the polars passes nor matplotlib.
"""

from __future__ import annotations

__all__ = ["build_report", "render_html", "write_report"]


def __getattr__(name: str):  # lazy: matplotlib only when a page is drawn
    if name in ("build_report", "write_report"):
        from hnmine.report import stats

        return getattr(stats, name)
    if name == "render_html":
        from hnmine.report.html import render_html

        return render_html
    raise AttributeError(name)
