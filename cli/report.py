"""``hnmine report``: calls :func:`hnmine.report.write_report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hnmine.errors import InputError

from .common import ConfigFile, app, fail

REPORT_EXAMPLE = """Example:

  hnmine report mined/ --test sample_data/test.txt --out mined-report.html
  hnmine report runs/sample                      # writes runs/sample/report.html
  hnmine report mined/ --format json             # the same numbers as JSON, on stdout
"""


def write_report_or_fail(path: Path, out: Path, test: Path | None = None, fmt: str = "html") -> Path:
    """The report, or one ``hnmine: error:`` line (bad input, or matplotlib missing for HTML)."""
    try:
        from hnmine.report import write_report

        return write_report(path, out, test, fmt)
    except ImportError as exc:
        fail(f"the HTML report needs matplotlib ({exc.name} missing): pip install 'hnmine[report]'")
    except InputError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


@app.command(epilog=REPORT_EXAMPLE)
def report(
    path: Annotated[Path, typer.Argument(help="A hnmine mine output (--out directory) or a hnmine run directory.")],
    out: Annotated[Optional[Path], typer.Option(help="File to write (default: PATH/report.html; JSON: stdout).")] = None,
    test: Annotated[Optional[Path], typer.Option(help="Held-out positives: adds false-negative rates by rank.")] = None,
    format: Annotated[str, typer.Option("--format", help="html (one self-contained file) or json (the same numbers).")] = "html",
    config: ConfigFile = None,
) -> None:
    """What was mined: hardness, margins, users, popularity, false negatives; per round for a run."""
    if format not in ("html", "json"):
        fail(f"--format must be html or json, not '{format}'")
    if format == "json" and out is None:
        from hnmine.report.stats import build_report, to_json

        try:
            typer.echo(to_json(build_report(path, test)))
        except InputError as exc:
            fail(str(exc))
        return
    target = write_report_or_fail(path, out or path / "report.html", test, format)
    typer.echo(f"wrote {target}")
