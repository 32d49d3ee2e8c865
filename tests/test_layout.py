"""The package reads as the pipeline: data flows forward, and no stage imports a later one.

Every ``import`` in hnmine/ and cli/ (at the top of a module or inside a function) is checked against
the order of the stages below; a module may import its own stage and any earlier one. In tests/, no
test module imports another: what they share lives in tests/conftest.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# earlier stages first
STAGES = [
    ("hnmine.errors", "hnmine.options", "hnmine.progress", "hnmine.runtime", "hnmine.faults"),
    ("hnmine.io",),
    ("hnmine.mining",),
    ("hnmine.evaluate",),
    ("hnmine.training",),
    ("hnmine.embed",),
    ("hnmine.report",),
    ("hnmine.loop",),
    ("hnmine.cli", "hnmine.__main__"),
]


def stage_of(module: str) -> int | None:
    for number, prefixes in enumerate(STAGES):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return number
    return None


def modules() -> list[tuple[str, Path]]:
    found = [(".".join(("hnmine", *p.relative_to(ROOT / "hnmine").with_suffix("").parts)), p)
             for p in sorted((ROOT / "hnmine").rglob("*.py"))]
    found += [(".".join(("hnmine.cli", *p.relative_to(ROOT / "cli").with_suffix("").parts)), p)
              for p in sorted((ROOT / "cli").rglob("*.py"))]
    return [(name.removesuffix(".__init__"), path) for name, path in found]


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.startswith("hnmine.")}


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_no_stage_imports_a_later_one(module, path):
    own = stage_of(module)
    if own is None:
        assert module == "hnmine", f"{module} belongs to no stage: add it to STAGES"
        return
    later = sorted(name for name in imported(path) if (stage_of(name) or 0) > own)
    assert not later, f"{module} (stage {own}) imports later stages: {later}"


def imports_from_tests(path: Path) -> set[str]:
    """The modules of tests/ that ``path`` imports, relative imports resolved (``.x`` is ``tests.x``)."""
    local = {p.stem for p in (ROOT / "tests").glob("*.py")}
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(filter(None, ["tests", module]))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {name.removeprefix("tests.") for name in names
            if name.startswith("tests.") or name in local} & local


@pytest.mark.parametrize("path", sorted((ROOT / "tests").glob("test_*.py")), ids=lambda p: p.name)
def test_no_test_module_imports_another(path):
    others = sorted(imports_from_tests(path) - {"conftest"})
    assert not others, f"tests/{path.name} imports {others}: move what it shares into tests/conftest.py"


def test_conftest_imports_no_test_module():
    assert not imports_from_tests(ROOT / "tests" / "conftest.py")


def test_the_test_import_check_finds_imports(tmp_path):
    module = tmp_path / "test_x.py"
    module.write_text("from tests.test_train import TRAIN\nfrom . import test_mis\nfrom .conftest import SAMPLE\n"
                      "import test_svd\nfrom tests.conftest import ROOT\nimport numpy\n")
    assert imports_from_tests(module) == {"test_train", "test_mis", "test_svd", "conftest"}
