"""``hnmine blend``: calls :func:`hnmine.embed.blend.write_blend`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hnmine.errors import InputError

from .common import ConfigFile, app, fail

BLEND_EXAMPLE = """Example:

  hnmine svd --positives train.txt --dim 1024 --out-dir lowpass/
  hnmine export --model model.pt --out-dir trained/
  hnmine blend lowpass/ trained/ --weight 0.2 --out-dir blended/
  hnmine evaluate --users blended/user.parquet --items blended/item.parquet --train train.txt --test valid.txt
"""


@app.command(epilog=BLEND_EXAMPLE)
def blend(
    a: Annotated[Path, typer.Argument(help="Model A's directory: user.parquet and item.parquet.")],
    b: Annotated[Path, typer.Argument(help="Model B's directory: user.parquet and item.parquet.")],
    out_dir: Annotated[Path, typer.Option(help="Directory for the blended user.parquet and item.parquet.")],
    weight: Annotated[float, typer.Option(help="Model A's share of the score, 0 to 1 (choose it on a "
                                                 "validation split).")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the random pairs that measure each model's score spread.")] = 0,
    config: ConfigFile = None,
) -> None:
    """Blend two two-tower models into one: vectors concatenated, so scores add with --weight.

    Each model's user vectors are made unit length and its scores scaled to unit spread first.
    """
    from hnmine.embed.blend import write_blend

    try:
        report = write_blend(a, b, out_dir, weight, seed)
    except InputError as exc:
        fail(exc)
    typer.echo(f"wrote {out_dir}/user.parquet ({report.users:,} users) and {out_dir}/item.parquet "
               f"({report.items:,} items), dim {report.dim}; dropped {report.users_dropped:,} users and "
               f"{report.items_dropped:,} items found in one model only")


