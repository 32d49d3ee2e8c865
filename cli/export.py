"""``hnmine export``: calls :func:`hnmine.embed.export.export_embeddings`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hnmine.errors import InputError

from .common import ConfigFile, app, fail

EXPORT_EXAMPLE = """Example:

  hnmine export --model model.pt --out-dir emb/
"""
@app.command(epilog=EXPORT_EXAMPLE)
def export(
    model: Annotated[Path, typer.Option(help="Model file written by hnmine train.")],
    out_dir: Annotated[Path, typer.Option(help="Directory for user.parquet and item.parquet.")],
    config: ConfigFile = None,
) -> None:
    """Write the model's unit-length user and item vectors in the input form of `hnmine mine`."""
    from hnmine.embed.export import export_embeddings

    try:
        report = export_embeddings(model, out_dir)
    except InputError as exc:
        fail(exc)
    typer.echo(f"wrote {report.user_path} ({report.users:,} users) and {report.item_path} ({report.items:,} items), "
               f"dim {report.dim}")


