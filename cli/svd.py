"""``hnmine svd``: calls :func:`hnmine.embed.svd.write_svd_embeddings`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hnmine.errors import InputError

from .common import ConfigFile, app, fail

SVD_EXAMPLE = """Example:

  hnmine svd --positives sample_data/train.txt --dim 64 --out-dir emb/
  hnmine svd --positives train.txt --dim 1024 --out-dir emb/      # GF-CF's filter, stronger with more dims
  hnmine svd --positives train.txt --form factors --out-dir emb/  # U sqrt(S), V sqrt(S)
"""


@app.command(epilog=SVD_EXAMPLE)
def svd(
    positives: Annotated[Path, typer.Option(help="Users' positives: parquet, CSV/TSV or LightGCN text.")],
    out_dir: Annotated[Path, typer.Option(help="Directory for user.parquet and item.parquet.")],
    dim: Annotated[int, typer.Option(help="Embedding dimension.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed of the randomized SVD.")] = 0,
    form: Annotated[str, typer.Option(
        help="lowpass: GF-CF's ideal low-pass filter (user = history pooled over item factors); "
        "factors: U sqrt(S) and V sqrt(S).")] = "lowpass",
    item_degree_power: Annotated[float, typer.Option(
        help="lowpass: item vectors scaled by degree^p, history items by degree^-p (0.5: GF-CF).")] = 0.5,
    positives_format: Annotated[str, typer.Option(help="auto|parquet|csv|lightgcn.")] = "auto",
    user_column: Annotated[str, typer.Option(help="User id column of the positives.")] = "user_id",
    item_column: Annotated[str, typer.Option(help="Item id column of the positives.")] = "item_id",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads of the SVD, at least 1 (default: all cores).")] = None,
    config: ConfigFile = None,
) -> None:
    """Embed users and items with a truncated SVD of the interaction matrix (no training needed).

    The default form is GF-CF's ideal low-pass filter: a two-tower whose user vector pools the user's
    history, a strong model on its own (docs/mine.md).

    Writes user.parquet and item.parquet (columns id, embedding) in the input form of `hnmine mine`.
    """
    from hnmine.embed.svd import FORMS, write_svd_embeddings
    from hnmine.io.positives import read_positives
    from hnmine.options import one_of

    try:
        table = read_positives(positives, fmt=positives_format, user_column=user_column, item_column=item_column)
        user_path, item_path = write_svd_embeddings(table, out_dir, dim=dim, seed=seed,
                                                    form=one_of(form, FORMS, "--form"),
                                                    item_degree_power=item_degree_power, threads=threads)
    except InputError as exc:
        fail(exc)
    typer.echo(f"wrote {user_path} and {item_path}")


