"""``hnmine run``: parses its options and calls :func:`hnmine.loop.runner.run`."""

from __future__ import annotations

import json

import typer

from hnmine.loop.config import RunConfig  # light: the options' declarations

from .common import ConfigFile, ConsoleProgress, Quiet, app
from .options import config_command

RUN_EXAMPLE = """Example:

  hnmine run --positives sample_data/train.txt --test sample_data/test.txt --iterations 3 --epochs 10 --out runs/sample
"""


@app.command(epilog=RUN_EXAMPLE)
@config_command(RunConfig)
def run(cfg: RunConfig, quiet: Quiet = False, config: ConfigFile = None) -> None:
    """Train → export → mine → retrain for N rounds; metrics per round, metrics.json and metrics.png."""
    from hnmine.io.storage import join, url
    from hnmine.loop.runner import metrics_table, run_directory, summary_line
    from hnmine.loop.runner import run as run_loop

    results = run_loop(cfg, ConsoleProgress(quiet))
    local, out = run_directory(cfg), url(cfg.out).rstrip("/")  # local: where the rounds are (a URL's work dir)
    table = metrics_table(results)
    import polars as pl

    with pl.Config(tbl_rows=100, tbl_cols=100, float_precision=4, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, tbl_width_chars=200):
        typer.echo(str(table))
    best_path = local / "best_round.json"
    if best_path.exists():  # written by the run when it has a validation split
        best = json.loads(best_path.read_text())
        typer.echo(f"{summary_line(best)}: {best['model'].replace(str(local.absolute()), out)}")
    typer.echo(f"wrote {join(out, 'metrics.json')}, {join(out, 'metrics.png')}"
               + (f" and {join(out, 'best_round.json')}" if best_path.exists() else ""))
    from .report import write_report_or_fail

    typer.echo(f"wrote {write_report_or_fail(local, join(out, 'report.html'), cfg.test)}")
