"""``hnmine report``'s options (:class:`ReportConfig`), each declared once. Light: no heavy import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hnmine.errors import InputError
from hnmine.options import build_config, option

__all__ = ["REPORT_FORMATS", "ReportConfig"]

REPORT_FORMATS = ("html", "json")


@dataclass(frozen=True)
class ReportConfig:
    """Every option of ``hnmine report``: the output or run to report on, the page, the held-out positives."""

    path: str = option(help="A hnmine mine output (--out directory) or a hnmine run directory (either may be a "
                            "URL).", path=True, argument=True)
    out: str | None = option(None, help="File to write (default: PATH/report.html; JSON: stdout); a report hnmine "
                                        "wrote there is replaced.", path=True)
    test: str | None = option(None, help="Held-out positives: adds false-negative rates by rank.", path=True)
    format: str = option("html", help="html (one self-contained file) or json (the same numbers).")
    overwrite: bool = option(False, help="Replace an existing --out that is not a report hnmine wrote.")

    @classmethod
    def of(cls, **options: Any) -> ReportConfig:
        return build_config(cls, options)

    def validate(self) -> None:
        if self.format not in REPORT_FORMATS:
            raise InputError(f"--format must be html or json, not '{self.format}'")
