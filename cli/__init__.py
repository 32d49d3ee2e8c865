"""hnmine's command line (installed as ``hnmine.cli``).

Help is printed by click's plain formatter unless ``TYPER_USE_RICH`` is set: typer's rich help
imports and renders for about 0.25 s, half of what ``hnmine mine --help`` may take
(docs/performance.md). Progress bars still use rich.
"""

import os

os.environ.setdefault("TYPER_USE_RICH", "0")
