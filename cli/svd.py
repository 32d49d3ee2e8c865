"""``hnmine svd``: calls :func:`hnmine.embed.svd.run_svd`."""

from __future__ import annotations

import typer

from hnmine.embed.config import SvdConfig  # light: the options' declarations

from .common import ConfigFile, app
from .options import config_command

SVD_EXAMPLE = """Example:

  hnmine svd --positives sample_data/train.txt --dim 64 --out-dir emb/
  hnmine svd --positives train.txt --dim 1024 --out-dir emb/      # GF-CF's filter, stronger with more dims
  hnmine svd --positives train.txt --form factors --out-dir emb/  # U sqrt(S), V sqrt(S)
"""


@app.command(epilog=SVD_EXAMPLE)
@config_command(SvdConfig)
def svd(cfg: SvdConfig, config: ConfigFile = None) -> None:
    """Embed users and items with a truncated SVD of the interaction matrix (no training needed).

    The default form is GF-CF's ideal low-pass filter: a two-tower whose user vector pools the user's
    history, a strong model on its own (docs/mine.md).

    Writes user.parquet and item.parquet (columns id, embedding) in the input form of `hnmine mine`.
    """
    from hnmine.embed.svd import run_svd

    user_path, item_path = run_svd(cfg)
    typer.echo(f"wrote {user_path} and {item_path}")
