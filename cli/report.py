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


def write_report_or_fail(path: str | Path, out: str | Path, test: str | Path | None = None, fmt: str = "html",
                         overwrite: bool = False) -> str | Path:
    """The report, or one ``hnmine: error:`` line (bad input, or matplotlib missing for HTML)."""
    try:
        from hnmine.report import write_report

        return write_report(path, out, test, fmt, overwrite=overwrite)
    except ImportError as exc:
        fail(f"the HTML report needs matplotlib ({exc.name} missing): pip install 'hnmine[report]'")
    except InputError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


@app.command(epilog=REPORT_EXAMPLE)
def report(
    path: Annotated[Path, typer.Argument(help="A hnmine mine output (--out directory) or a hnmine run directory "
                                              "(either may be a URL).")],
    out: Annotated[Optional[Path], typer.Option(help="File to write (default: PATH/report.html; JSON: stdout); "
                                                    "a report hnmine wrote there is replaced.")] = None,
    test: Annotated[Optional[Path], typer.Option(help="Held-out positives: adds false-negative rates by rank.")] = None,
    format: Annotated[str, typer.Option("--format", help="html (one self-contained file) or json (the same numbers).")] = "html",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out that is not a report hnmine wrote.")] = False,
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
    target = write_report_or_fail(path, out or path / "report.html", test, format, overwrite)
    typer.echo(f"wrote {target}")
