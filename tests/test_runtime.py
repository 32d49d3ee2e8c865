"""Runtime set-up: thread waiting and kernel cache defaults, lazy imports (fast ``--help``, no torch to mine).

Each check runs a fresh interpreter: the set-up happens once per process, at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hnmine import runtime

HEAVY = ("torch", "faiss", "numba", "polars", "pyarrow")


def python(code: str, env: dict[str, str | None] | None = None, cwd: Path | None = None) -> str:
    """Run ``code`` in a fresh interpreter with ``env`` applied (None removes a variable); its stdout."""
    full = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    done = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def loaded_after(argv: list[str]) -> list[str]:
    """The heavy modules a CLI invocation has imported by the time it exits."""
    code = (
        "import sys\nfrom hnmine.cli.main import main\n"
        f"sys.argv = {['hnmine', *argv]!r}\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(repr(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    return eval(python(code).strip().splitlines()[-1])


def test_help_imports_no_heavy_library():
    assert loaded_after(["--help"]) == []
    assert loaded_after(["mine", "--help"]) == []
    assert loaded_after(["run", "--help"]) == []
    assert loaded_after(["svd", "--help"]) == []  # the config classes of svd, evaluate, report: light modules


def test_mine_on_a_small_job_does_not_load_torch_or_pandas(sample_embeddings, tmp_path):
    """torch is only for training; pandas (installed with the ray extra) costs ~0.3 s of every start and
    comes in through pyarrow's ``read_table`` and ``to_numpy`` when they are used."""
    users, items = sample_embeddings
    code = (
        "import json, sys\nfrom hnmine import MineConfig, mine\n"
        f"report = mine(MineConfig.of(users={str(users)!r}, items={str(items)!r}, "
        f"positives={str(hnmine_root() / 'sample_data' / 'train.txt')!r}, out={str(tmp_path / 'o')!r}))\n"
        "print(json.dumps({'index': report.index, 'torch': 'torch' in sys.modules, 'pandas': 'pandas' in sys.modules}))"
    )
    result = json.loads(python(code).strip().splitlines()[-1])
    assert result == {"index": "flat", "torch": False, "pandas": False}


def hnmine_root() -> Path:
    return Path(__file__).resolve().parents[1]


def test_defaults_set_before_the_runtimes_start(tmp_path):
    code = "import os, hnmine\nprint(os.environ['OMP_WAIT_POLICY'], os.environ['NUMBA_CACHE_DIR'])"
    out = python(code, {"OMP_WAIT_POLICY": None, "NUMBA_CACHE_DIR": None, "HNMINE_CACHE_DIR": str(tmp_path)})
    assert out.split() == ["PASSIVE", str(tmp_path / "numba")]
    out = python(code, {"OMP_WAIT_POLICY": None, "NUMBA_CACHE_DIR": None, "HNMINE_CACHE_DIR": None,
                        "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert out.split() == ["PASSIVE", str(tmp_path / "xdg" / "hnmine" / "numba")]


def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("HNMINE_CACHE_DIR", str(tmp_path / "h"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert runtime.cache_dir() == tmp_path / "h"
    monkeypatch.delenv("HNMINE_CACHE_DIR")
    assert runtime.cache_dir() == tmp_path / "x" / "hnmine"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert runtime.cache_dir() == Path.home() / ".cache" / "hnmine"


def test_user_settings_win(tmp_path):
    code = "import os, hnmine\nprint(os.environ['OMP_WAIT_POLICY'], os.environ['NUMBA_CACHE_DIR'])"
    out = python(code, {"OMP_WAIT_POLICY": "ACTIVE", "NUMBA_CACHE_DIR": str(tmp_path / "mine"),
                        "HNMINE_CACHE_DIR": str(tmp_path / "other")})
    assert out.split() == ["ACTIVE", str(tmp_path / "mine")]


def test_kernels_cached_in_the_user_cache_dir(tmp_path):
    """A compiled kernel lands in HNMINE_CACHE_DIR (so a read-only install still caches), and is reused."""
    code = (
        "import numpy as np\nfrom hnmine.mining import kernels\n"
        "keys = np.array([3, 1, 2], dtype=np.uint64)\nkernels._sort_keys(keys, np.empty_like(keys))\n"
        "stats = kernels._sort_keys.stats\n"
        "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()), stats.cache_path)"
    )
    env: dict[str, str | None] = {"NUMBA_CACHE_DIR": None, "HNMINE_CACHE_DIR": str(tmp_path)}
    hits, misses, path = python(code, env).split()
    assert (hits, misses) == ("0", "1") and Path(path).is_relative_to(tmp_path / "numba")
    assert list((tmp_path / "numba").rglob("*.nbi")), "no kernel index in the cache directory"
    hits, misses, _ = python(code, env).split()
    assert (hits, misses) == ("1", "0")


def test_package_exports_stay_functions():
    import hnmine.mining.pipeline  # the lazy export resolves to the function, whatever was imported before

    assert callable(hnmine.mine) and hnmine.mine.__name__ == "mine"
    assert hnmine.MineConfig.__module__ == "hnmine.mining.config"
