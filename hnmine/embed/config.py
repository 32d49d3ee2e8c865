"""The options of ``hnmine svd``, ``hnmine blend`` and ``hnmine export`` (:class:`SvdConfig`,
:class:`BlendConfig`, :class:`ExportConfig`), each declared once (:func:`hnmine.options.option`).

Light: no heavy import, so the command line builds the commands' options from it at ``--help`` time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from hnmine.options import build_config, one_of, option

__all__ = ["FORMS", "BlendConfig", "ExportConfig", "Form", "SvdConfig"]

Form = Literal["lowpass", "factors"]
FORMS: tuple[Form, ...] = ("lowpass", "factors")


@dataclass(frozen=True)
class SvdConfig:
    """Every option of ``hnmine svd``: the positives to factorise, and the SVD's form and size."""

    positives: str = option(help="Users' positives: parquet, CSV/TSV or LightGCN text.", path=True)
    out_dir: str = option(help="Directory for user.parquet and item.parquet.", path=True)
    dim: int = option(64, help="Embedding dimension.")
    seed: int = option(0, help="Random seed of the randomized SVD.")
    form: str = option("lowpass", help="lowpass: GF-CF's ideal low-pass filter (user = history pooled over item "
                                       "factors); factors: U sqrt(S) and V sqrt(S).")
    item_degree_power: float = option(0.5, help="lowpass: item vectors scaled by degree^p, history items by "
                                                "degree^-p (0.5: GF-CF).")
    positives_format: str = option("auto", help="auto|parquet|csv|lightgcn.")
    user_column: str = option("user_id", help="User id column of the positives.")
    item_column: str = option("item_id", help="Item id column of the positives.")
    threads: int | None = option(None, help="CPU threads of the SVD, at least 1 (default: all cores).")

    @classmethod
    def of(cls, **options: Any) -> SvdConfig:
        """A config from option values by option name (``dim=128``, ``form="factors"``)."""
        return build_config(cls, options)

    def checked_form(self) -> Form:
        """``form`` as a :data:`Form`; InputError naming ``--form`` if it is none."""
        return one_of(self.form, FORMS, "--form")


@dataclass(frozen=True)
class BlendConfig:
    """Every option of ``hnmine blend``: the two models' directories, model A's weight, the seed."""

    a: str = option(help="Model A's directory: user.parquet and item.parquet.", path=True, argument=True)
    b: str = option(help="Model B's directory: user.parquet and item.parquet.", path=True, argument=True)
    out_dir: str = option(help="Directory for the blended user.parquet and item.parquet.", path=True)
    weight: float = option(0.5, help="Model A's share of the score, 0 to 1 (choose it on a validation split).")
    seed: int = option(0, help="Seed of the random pairs that measure each model's score spread.")

    @classmethod
    def of(cls, **options: Any) -> BlendConfig:
        return build_config(cls, options)


@dataclass(frozen=True)
class ExportConfig:
    """Every option of ``hnmine export``: the model file and where its vectors go."""

    model: str = option(help="Model file written by hnmine train.", path=True)
    out_dir: str = option(help="Directory for user.parquet and item.parquet.", path=True)

    @classmethod
    def of(cls, **options: Any) -> ExportConfig:
        return build_config(cls, options)
