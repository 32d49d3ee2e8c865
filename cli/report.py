"""``hnmine report``: calls :func:`hnmine.report.write_report`."""

from __future__ import annotations

from pathlib import Path

import typer

from hnmine.errors import InputError
from hnmine.report.config import ReportConfig  # light: the options' declarations

from .common import ConfigFile, app, fail
from .options import config_command

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
@config_command(ReportConfig)
def report(cfg: ReportConfig, config: ConfigFile = None) -> None:
    """What was mined: hardness, margins, users, popularity, false negatives; per round for a run."""
    cfg.validate()
    path, test = Path(cfg.path), Path(cfg.test) if cfg.test else None
    if cfg.format == "json" and cfg.out is None:
        from hnmine.report.stats import build_report, to_json

        typer.echo(to_json(build_report(path, test)))
        return
    target = write_report_or_fail(path, Path(cfg.out) if cfg.out else path / "report.html", test, cfg.format,
                                  cfg.overwrite)
    typer.echo(f"wrote {target}")
