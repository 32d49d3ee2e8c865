# cli/ installs as hnmine.cli (pyproject.toml package-dir): mypy checks it as the package cli
from hnmine.cli.main import main  # type: ignore[import-not-found]

main()
