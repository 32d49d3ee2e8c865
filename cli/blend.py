"""``hnmine blend``: calls :func:`hnmine.embed.blend.write_blend`."""

from __future__ import annotations

import typer

from hnmine.embed.config import BlendConfig  # light: the options' declarations

from .common import ConfigFile, app
from .options import config_command

BLEND_EXAMPLE = """Example:

  hnmine svd --positives train.txt --dim 1024 --out-dir lowpass/
  hnmine export --model model.pt --out-dir trained/
  hnmine blend lowpass/ trained/ --weight 0.2 --out-dir blended/
  hnmine evaluate --users blended/user.parquet --items blended/item.parquet --train train.txt --test valid.txt
"""


@app.command(epilog=BLEND_EXAMPLE)
@config_command(BlendConfig)
def blend(cfg: BlendConfig, config: ConfigFile = None) -> None:
    """Blend two two-tower models into one: vectors concatenated, so scores add with --weight.

    Each model's user vectors are made unit length and its scores scaled to unit spread first.
    """
    from hnmine.embed.blend import write_blend

    report = write_blend(cfg.a, cfg.b, cfg.out_dir, cfg.weight, cfg.seed)
    out_dir = cfg.out_dir
    typer.echo(f"wrote {out_dir}/user.parquet ({report.users:,} users) and {out_dir}/item.parquet "
               f"({report.items:,} items), dim {report.dim}; dropped {report.users_dropped:,} users and "
               f"{report.items_dropped:,} items found in one model only")
