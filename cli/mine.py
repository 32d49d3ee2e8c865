"""``hnmine mine``: parses its options (and a TOML config) and calls :func:`hnmine.mining.pipeline.mine`."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from hnmine.io.storage import join, url
from hnmine.mining.config import MineConfig  # light: the options' declarations

if TYPE_CHECKING:  # the library's modules load FAISS, numba and torch: each command imports what it runs
    from hnmine.mining.pipeline import MineReport


from .common import ConfigFile, ConsoleProgress, Quiet, app, log_line
from .options import config_command

MINE_EXAMPLE = """Example:

  hnmine mine --users emb/user.parquet --items emb/item.parquet --positives train.txt --rank-window 101:500 --num-hard 10 --out mined/
"""


def _counted(reasons: dict[str, int]) -> str:
    """``12 (catalog 10, filters 2)``: a total with its reasons."""
    total = f"{sum(reasons.values()):,}"
    return total + (" (" + ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items())) + ")" if reasons else "")


def print_report(report: MineReport) -> None:
    total_rows = ", ".join(f"{name} {rows:,}" for name, rows in report.rows.items())
    lines = [
        f"published {report.out}",
        f"users {report.users:,}: {report.users_complete:,} complete, "
        f"{_counted(report.users_short)} short, {_counted(report.users_empty)} empty",
        f"items {report.items:,} (dim {report.dim}); positives {report.positives:,} "
        f"({report.duplicate_positives:,} duplicates merged; {report.unknown_user_positives:,} with a user and "
        f"{report.unknown_item_positives:,} with an item that has no embedding, not written)",
        f"rows: {total_rows}",
    ]
    if report.score:
        lines.append("score: " + ", ".join(f"{k} {v:.4g}" for k, v in report.score.items()))
    if report.rank:
        lines.append("rank: " + ", ".join(f"{k} {v:.4g}" for k, v in report.rank.items()))
    if report.attr_fields != ["item_id"]:
        lines.append(f"item features: {report.items_without_features:,} items without a feature row")
    if report.audit:
        lines.append(f"audit: window recall {report.audit['window_recall']:.4f} over {report.audit['users']} users")
    if report.adaptive:
        lines.append("adaptive windows: " + ", ".join(f"{name} {b['users']:,} ({b['rank_window']})"
                                                        for name, b in report.adaptive.items()))
    lines.append("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in report.timings.items()))
    typer.echo("\n".join(lines))


def print_result(report: MineReport, cfg: MineConfig, json_summary: bool, html_report: bool, quiet: bool) -> None:
    if json_summary:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    if html_report:
        from .report import write_report_or_fail

        out = url(cfg.output.out)
        log_line(f"wrote {write_report_or_fail(out, join(out, 'report.html'))}", quiet)


# What mine and select print: their own options (not MineConfig's)
JsonSummary = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
HtmlReport = Annotated[bool, typer.Option("--report", help="Also write OUT/report.html (hnmine report).")]


@app.command(epilog=MINE_EXAMPLE)
@config_command(MineConfig)
def mine(
    cfg: MineConfig,
    dry_run: Annotated[bool, typer.Option(help="Print the plan (rows, depth, memory, time) and exit.")] = False,
    json_summary: JsonSummary = False,
    quiet: Quiet = False,
    html_report: HtmlReport = False,
    config: ConfigFile = None,
) -> None:
    """Mine hard negatives: FAISS top-K per user, ranks LO..HI among non-positives, sampler tables out.

    Writes hard_neg_edge, pos_edge, user and item tables as parquet and GraphLearn text,
    with manifest.json and _SUCCESS, into --out.
    """
    from hnmine.mining.pipeline import mine as run_mine
    from hnmine.mining.pipeline import plan

    if dry_run:
        result = plan(cfg)
        if json_summary:
            typer.echo(json.dumps(result.to_dict(), indent=2))
        else:
            for key, value in result.to_dict().items():
                if key == "estimated_peak_memory_bytes":
                    value = f"{value / 2**20:,.0f} MiB"
                elif key == "estimated_seconds":
                    value = f"{value:,.1f} s (from {result.sampled_users} sampled users)"
                typer.echo(f"{key.replace('_', ' ')}: {value}")
        return
    report = run_mine(cfg, progress=ConsoleProgress(quiet), command=["hnmine", *sys.argv[1:]])
    print_result(report, cfg, json_summary, html_report, quiet)
