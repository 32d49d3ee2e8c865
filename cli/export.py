"""``hnmine export``: calls :func:`hnmine.embed.export.export_embeddings`."""

from __future__ import annotations

import typer

from hnmine.embed.config import ExportConfig  # light: the options' declarations

from .common import ConfigFile, app
from .options import config_command

EXPORT_EXAMPLE = """Example:

  hnmine export --model model.pt --out-dir emb/
"""


@app.command(epilog=EXPORT_EXAMPLE)
@config_command(ExportConfig)
def export(cfg: ExportConfig, config: ConfigFile = None) -> None:
    """Write the model's unit-length user and item vectors in the input form of `hnmine mine`."""
    from hnmine.embed.export import export_embeddings

    report = export_embeddings(cfg.model, cfg.out_dir)
    typer.echo(f"wrote {report.user_path} ({report.users:,} users) and {report.item_path} ({report.items:,} items), "
               f"dim {report.dim}")
