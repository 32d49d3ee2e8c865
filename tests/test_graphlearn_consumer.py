"""hnmine's GraphLearn files in the real consumer: GraphLearn 1.2.0a1 loads and samples them as intended.

The TorchEasyRec samplers read hnmine's tables through GraphLearn, whose loader drops a malformed row
with nothing but a log line. So these tests mine with the hnmine CLI, load the text files with the
public GraphLearn (``graph-learn==1.2.0a1``, wheels only for CPython <= 3.9) in a cached Python 3.9
virtual environment (``.venv-gl39/``), make the calls the four samplers make (see
``tests/graphlearn_probe.py``) and check what comes back against the parquet tables:

- every row is loaded (counts, and ids, weights, attrs and edges equal the parquet tables);
- no hard negative is a positive of its user;
- ``neighbor_sampler(["hard_neg_edge"], k, strategy="full")`` gives each user min(k, mined) hard
  negatives, the highest-weight ones, in descending weight order (ties compared as sets: GraphLearn's
  parallel loading does not keep the file order among equal weights for every user);
- ``negative_sampler("item", ..., strategy="node_weight")`` draws items as GraphLearn's alias table
  of the written weights dictates (proportional to the weight, except that the table's last column is
  never visited: see graphlearn_node_weight_probabilities) and never draws a weight-0 item (Pearson
  chi-square tests, exact p-value, alpha 1e-6: GraphLearn seeds its generator from
  ``std::random_device`` and has no seed to fix, so the threshold is set for a negligible false
  alarm rate instead);
- the conditional sampler over pos_edge never returns a positive of the user and only draws items
  from pos_edge;
- item attributes, declared the way TorchEasyRec declares them (every attr field a GraphLearn
  ``string``, converted to the training-data field's type afterwards, an empty value to null), come
  back equal to what was written (non-ASCII text and empty values included), and the item id attr is
  never null.

Python 3.9 is needed: set ``HNMINE_PYTHON39`` to its interpreter if it is neither
``/root/.pyenv/versions/3.9.18/bin/python`` nor ``python3.9`` on PATH. Without it the tests fail.
"""

from __future__ import annotations

import glob
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).with_name("graphlearn_probe.py")
GL_VENV = Path(os.environ.get("HNMINE_GL_VENV", REPO / ".venv-gl39"))
GL_REQUIREMENTS = ["graph-learn==1.2.0a1", "numpy<2"]
PYTHON39_DEFAULT = "/root/.pyenv/versions/3.9.18/bin/python"
ALPHA = 1e-6  # false-alarm probability of each statistical test (GraphLearn cannot be seeded)
DELIM = "\x02"
FACTS: dict[str, object] = {}  # measured values, printed at the end (pytest -s)


# --------------------------------------------------------------------------- the Python 3.9 env


def _python_version(python: str) -> str | None:
    try:
        done = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_python39() -> tuple[str | None, list[str]]:
    """The first Python 3.9 among: $HNMINE_PYTHON39, the pyenv 3.9.18 build, python3.9 on PATH, pyenv 3.9.*."""
    candidates = []
    if os.environ.get("HNMINE_PYTHON39"):
        candidates.append(os.environ["HNMINE_PYTHON39"])
    candidates.append(PYTHON39_DEFAULT)
    if shutil.which("python3.9"):
        candidates.append(shutil.which("python3.9"))
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.9*", "bin", "python")), reverse=True)
    for candidate in candidates:
        if _python_version(candidate) == "3.9":
            return candidate, candidates
    return None, candidates


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}): {' '.join(map(str, cmd))}\n"
                    f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}")
    return done


@pytest.fixture(scope="session")
def gl_python() -> str:
    """Python of the cached Python 3.9 venv with graph-learn; built on first use (about a minute)."""
    python = GL_VENV / "bin" / "python"
    stamp = GL_VENV / ".hnmine-graphlearn-requirements"
    wanted = "\n".join(GL_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted and _python_version(str(python)) == "3.9":
        check = subprocess.run([str(python), "-c", "import graphlearn"], capture_output=True, text=True,
                               cwd=GL_VENV, timeout=120)
        if check.returncode == 0:
            return str(python)
    base, tried = find_python39()
    if base is None:
        pytest.fail("GraphLearn consumer test needs CPython 3.9 (graph-learn 1.2.0a1 has wheels only for "
                    "CPython 3.6-3.9) and found none. Tried: " + ", ".join(tried)
                    + ". Install Python 3.9 (e.g. `pyenv install 3.9.18`) or set HNMINE_PYTHON39=/path/to/python3.9.")
    shutil.rmtree(GL_VENV, ignore_errors=True)
    _run([base, "-m", "venv", str(GL_VENV)], "creating the Python 3.9 venv", timeout=300)
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *GL_REQUIREMENTS],
         f"pip install {' '.join(GL_REQUIREMENTS)} into {GL_VENV}", timeout=900)
    _run([str(python), "-c", "import graphlearn"], "importing graphlearn", cwd=GL_VENV, timeout=120)
    stamp.write_text(wanted)
    return str(python)


# --------------------------------------------------------------------------- running hnmine and the probe


def hnmine(*args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "hnmine", *map(str, args)], "hnmine " + str(args[0]), cwd=REPO, timeout=600)


def torcheasyrec_attr_types(field_types: list[str]) -> list[str]:
    """The GraphLearn attr types TorchEasyRec's four samplers declare for ``attr_fields``: ``string`` for
    every field of the training data, whatever its type (``BaseSampler.__init__`` in
    tzrec/datasets/sampler.py; only TDMSampler's own ``tree_level`` is declared ``int``)."""
    return ["string"] * len(field_types)


def torcheasyrec_values(texts: list[str], field_type: str) -> list[object]:
    """Sampled attr strings as TorchEasyRec hands them to the model (``_to_arrow_array``): for a
    non-string field an empty string becomes null, the rest is cast (pyarrow, safe=False)."""
    arrow_type = {"string": pa.string(), "int64": pa.int64(), "double": pa.float64()}[field_type]
    array = pa.array(texts, type=pa.string())
    if field_type != "string":
        array = pc.if_else(pc.equal(array, ""), pa.nulls(len(array), pa.string()), array).cast(arrow_type, safe=False)
    return array.to_pylist()


def probe(gl_python: str, out_dir: Path, work: Path, *, attr_types: list[str], num_hard_samples: list[int],
          draws: int, cond_pairs: list[tuple[int, int]], cond_expand: int = 20,
          cond_uniform_pair: tuple[int, int] | None = None, cond_uniform_draws: int = 0) -> dict:
    """Run graphlearn_probe.py on an hnmine output directory (in ``work``: GraphLearn logs into cwd)."""
    work.mkdir(parents=True, exist_ok=True)
    spec = {"dir": str(out_dir), "attr_types": attr_types, "attr_delimiter": DELIM,
            "num_hard_samples": num_hard_samples, "node_weight_draws": draws,
            "cond_pairs": [list(map(int, p)) for p in cond_pairs], "cond_expand": cond_expand,
            "cond_uniform_pair": list(map(int, cond_uniform_pair)) if cond_uniform_pair else None,
            "cond_uniform_draws": cond_uniform_draws}
    (work / "spec.json").write_text(json.dumps(spec))
    done = _run([gl_python, str(PROBE), "spec.json", "result.json"], "GraphLearn probe", cwd=work, timeout=600)
    rejected = [line for line in done.stderr.splitlines() if "does not match" in line or "Invalid" in line]
    assert not rejected, f"GraphLearn rejected rows of {out_dir}:\n" + "\n".join(rejected[:10])
    return json.loads((work / "result.json").read_text(encoding="utf-8"))


def read_edge_text(path: Path, id_dtype: type[pl.DataType] = pl.Int64) -> pl.DataFrame:
    """An edge table exactly as written (file order kept), parsed like GraphLearn: weight as float32."""
    return pl.read_csv(path, separator="\t", quote_char=None, has_header=True,
                       new_columns=["user_id", "item_id", "weight"],
                       schema_overrides={"user_id": id_dtype, "item_id": id_dtype, "weight": pl.Float32})


# --------------------------------------------------------------------------- statistics


def chi2_sf(stat: float, df: int) -> float:
    """Upper tail P(X >= stat) of a chi-square with ``df`` degrees of freedom (regularized gamma Q)."""
    a, x = df / 2.0, stat / 2.0
    if x <= 0:
        return 1.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:  # series for P, then Q = 1 - P
        term = total = 1.0 / a
        n = a
        for _ in range(100000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - math.exp(log_front) * total)
    tiny = 1e-300  # Lentz continued fraction for Q
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 100000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(log_front) * h


def pearson(observed: np.ndarray, expected: np.ndarray, min_expected: float = 5.0) -> tuple[float, int, float]:
    """Pearson chi-square over cells with expected >= min_expected, the others pooled into one cell."""
    big = expected >= min_expected
    obs = list(observed[big])
    exp = list(expected[big])
    if (~big).any():
        obs.append(observed[~big].sum())
        exp.append(expected[~big].sum())
    obs_a, exp_a = np.asarray(obs, float), np.asarray(exp, float)
    keep = exp_a > 0
    stat = float((((obs_a[keep] - exp_a[keep]) ** 2) / exp_a[keep]).sum())
    df = int(keep.sum()) - 1
    return stat, df, chi2_sf(stat, df)


def weight_bins(weights: np.ndarray, bins: int) -> np.ndarray:
    """Bin index per item: items sorted by weight, cut into ``bins`` groups of equal total weight."""
    order = np.argsort(weights, kind="stable")
    cum = np.cumsum(weights[order]) / weights.sum()
    upper = np.concatenate([[0.0], cum[:-1]])  # mass below each item decides its bin
    out = np.empty(len(weights), dtype=np.int64)
    out[order] = np.minimum((upper * bins).astype(np.int64), bins - 1)
    return out


def graphlearn_node_weight_probabilities(weights: np.ndarray) -> np.ndarray:
    """The distribution GraphLearn's node_weight sampler really draws from, for weights in storage order.

    A float32 port of ``AliasMethod::Build`` / ``AliasMethod::Sample`` in graph-learn
    (``graphlearn/core/operator/sampler/alias_method.cc``). Its sampler draws the column uniformly from
    ``[0, n - 1)``, so the last column of the alias table is never visited: every other column gets
    1/(n-1) instead of 1/n, the item in the last storage slot keeps only what other columns alias to it,
    and the item that column aliases to loses that share. Otherwise the draws are proportional to the
    weights (total variation from w/sum(w) at most 2/n).
    """
    w = np.asarray(weights, dtype=np.float32)
    n = len(w)
    total = np.float32(np.sum(w, dtype=np.float64))
    average = np.float32(1.0 / n)
    probs = np.empty(n, dtype=np.float32)
    alias = np.arange(n)
    low: list[int] = []
    high: list[int] = []
    for i in range(n):
        prob = np.float32(w[i] / total)
        probs[i] = np.float32(prob * np.float32(n))
        if prob < average:
            low.append(i)
        elif prob > average:
            high.append(i)
    while low and high:
        small, big = low.pop(), high.pop()
        probs[big] = np.float32(np.float32(probs[big] - np.float32(1.0)) + probs[small])
        alias[small] = big
        if probs[big] < 1.0:
            low.append(big)
        elif probs[big] > 1.0:
            high.append(big)
    probs[low + high] = 1.0
    keep = np.clip(probs[: n - 1].astype(np.float64), 0.0, 1.0)
    out = np.zeros(n)
    np.add.at(out, np.arange(n - 1), keep / (n - 1))
    np.add.at(out, alias[: n - 1], (1.0 - keep) / (n - 1))
    return out


# --------------------------------------------------------------------------- the checks


def check_consumer(out_dir: Path, result: dict, field_types: list[str], label: str, id_attr: int | None = None) -> None:
    """Everything GraphLearn loaded and sampled, against hnmine's parquet and text tables.

    ``field_types`` are the training-data types of the sampler's ``attr_fields`` (``int64``, ``double``
    or ``string``); ``id_attr`` the position of the item id among them, if listed.
    """
    tables = {name: pl.read_parquet(out_dir / f"{name}.parquet") for name in ("user", "item", "pos_edge", "hard_neg_edge")}
    facts: dict[str, object] = {"graphlearn": result["graphlearn_version"], "probe_seconds": round(result["seconds"], 2)}

    # 1. every row loaded
    stats = result["stats"]
    loaded = {"user": stats.get("user"), "item": stats.get("item"), "pos_edge": stats.get("edge"),
              "hard_neg_edge": stats.get("hard_neg_edge")}
    written = {name: frame.height for name, frame in tables.items()}
    for name in written:
        with open(out_dir / f"{name}.txt", "rb") as handle:
            lines = sum(1 for _ in handle) - 1
        assert lines == written[name], f"{label}: {name}.txt has {lines} rows, parquet {written[name]}"
    assert loaded == written, f"{label}: GraphLearn loaded {loaded}, hnmine wrote {written}"
    facts["rows"] = written

    users = tables["user"].sort("id")
    gl_user = pl.DataFrame({"id": result["user"]["ids"], "weight": result["user"]["weights"]}).sort("id")
    assert gl_user["id"].to_list() == users["id"].to_list()
    assert gl_user["weight"].to_list() == users["weight"].cast(pl.Float64).to_list()

    items = tables["item"].sort("id")
    gl_item_order = np.argsort(np.asarray(result["item"]["ids"]), kind="stable")
    gl_item_ids = np.asarray(result["item"]["ids"])[gl_item_order]
    assert gl_item_ids.tolist() == items["id"].to_list(), f"{label}: item ids differ"
    gl_item_weights = np.asarray(result["item"]["weights"])[gl_item_order]
    assert gl_item_weights.tolist() == items["weight"].cast(pl.Float64).to_list(), f"{label}: item weights differ"

    # 2. attributes, as TorchEasyRec reads them: GraphLearn strings, then converted to the field's type
    written_attrs = [value.split(DELIM) for value in items["attrs"].to_list()]
    assert all(len(fields) == len(field_types) for fields in written_attrs)
    got = [result["item"]["string_attrs"][i] for i in gl_item_order]
    for column, field_type in enumerate(field_types):
        written = [fields[column] for fields in written_attrs]
        texts = [values[column] for values in got]
        for item, want, text in zip(gl_item_ids, written, texts, strict=True):
            assert text == want, f"{label}: item {item} attr {column}: wrote {want!r}, GraphLearn gave {text!r}"
        values = torcheasyrec_values(texts, field_type)
        if field_type != "string":  # null exactly where hnmine wrote an empty value
            assert [v is None for v in values] == [t == "" for t in written], f"{label}: attr {column} nulls"
        if column == id_attr:  # the negatives' item id: never null, always the node's own id
            assert values == gl_item_ids.tolist(), f"{label}: the item id attr differs from the node id"
    facts["attr_values_checked"] = len(written_attrs) * len(field_types)

    # 3. edges, as multisets (GraphLearn's iteration order is its own)
    for name, key in (("pos_edge", "pos_edge"), ("hard_neg_edge", "hard_neg_edge")):
        gl_edges = sorted(zip(result[key]["src"], result[key]["dst"], result[key]["weights"], strict=True))
        frame = tables[name]
        want_edges = sorted(zip(frame["user_id"].to_list(), frame["item_id"].to_list(),
                                frame["weight"].cast(pl.Float64).to_list(), strict=True))
        assert gl_edges == want_edges, f"{label}: {name} edges differ"

    # 4. no hard negative is a positive of its user (on what GraphLearn holds)
    positives = defaultdict(set)
    for user, item in zip(result["pos_edge"]["src"], result["pos_edge"]["dst"], strict=True):
        positives[user].add(item)
    clashes = [(u, i) for u, i in zip(result["hard_neg_edge"]["src"], result["hard_neg_edge"]["dst"], strict=True)
               if i in positives[u]]
    assert not clashes, f"{label}: hard negatives that are positives of their user: {clashes[:10]}"

    # 5. full neighbour sampling: min(k, mined) per user, the highest weights, in descending order.
    # Among equal weights GraphLearn's order is not the file order: it loads a file in parallel chunks,
    # so a user whose rows straddle a chunk boundary gets them rotated, differently from run to run
    # (its std::sort by weight then keeps that order for ties). So ties are checked as sets, and how
    # often file order survived is only measured.
    text = read_edge_text(out_dir / "hard_neg_edge.txt")
    assert text.equals(tables["hard_neg_edge"].select("user_id", "item_id", "weight"))
    mined_rows: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for user, item, weight in zip(text["user_id"].to_list(), text["item_id"].to_list(),
                                  text["weight"].cast(pl.Float64).to_list(), strict=True):
        mined_rows[user].append((item, weight))
    user_ids = result["user"]["ids"]
    facts["full_sampling"] = {}
    for k, got in result["full"].items():
        k = int(k)
        pos = short = in_file_order = 0
        for user, count in zip(user_ids, got["counts"], strict=True):
            items_got = got["dst"][pos:pos + count]
            weights_got = got["weights"][pos:pos + count]
            pos += count
            mined = mined_rows.get(user, [])
            assert count == min(k, len(mined)), f"{label}: user {user} got {count} hard negatives, k={k}, mined {len(mined)}"
            assert all(a >= b for a, b in itertools.pairwise(weights_got)), (
                f"{label}: user {user} hard negatives not in descending weight order: {weights_got}")
            by_weight = sorted(mined, key=lambda row: -row[1])  # stable: file order among ties
            assert weights_got == [w for _, w in by_weight[:count]], (
                f"{label}: user {user}, k={k}: GraphLearn gave weights {weights_got}, the top {count} are "
                f"{[w for _, w in by_weight[:count]]}")
            assert set(zip(items_got, weights_got, strict=True)) <= set(mined), (
                f"{label}: user {user}: GraphLearn gave edges hnmine did not write")
            in_file_order += list(zip(items_got, weights_got, strict=True)) == by_weight[:count]
            short += count < k
        assert pos == len(got["dst"])
        facts["full_sampling"][k] = {"returned": pos, "users_below_k": short,
                                     "users_in_stable_weight_order": in_file_order, "users": len(user_ids)}

    # 6. node-weight negative sampling follows the item weights. The expected frequencies are those of
    # GraphLearn's alias table built from the weights hnmine wrote (in GraphLearn's storage order, i.e.
    # the by_order iteration order); how far that is from plain w/sum(w) is measured, not asserted.
    weights = items["weight"].cast(pl.Float64).to_numpy()
    draws = result["node_weight"]["draws"]
    sampled_ids = np.asarray(result["node_weight"]["ids"])
    where = np.searchsorted(gl_item_ids, sampled_ids)
    assert (where < len(gl_item_ids)).all() and (gl_item_ids[np.minimum(where, len(gl_item_ids) - 1)] == sampled_ids).all(), (
        f"{label}: node-weight sampling returned ids that are not items")
    counts = np.zeros(len(weights))
    counts[where] = result["node_weight"]["counts"]
    assert counts.sum() == draws
    zero = weights == 0
    assert counts[zero].sum() == 0, f"{label}: items of weight 0 were sampled {counts[zero].sum():.0f} times"
    ideal = weights / weights.sum()
    storage_order = np.argsort(gl_item_order)  # GraphLearn storage slot -> index into the id-sorted arrays
    model = np.zeros(len(weights))
    model[storage_order] = graphlearn_node_weight_probabilities(weights[storage_order])
    tv = 0.5 * np.abs(model - ideal).sum()
    assert tv <= 2.0 / len(weights) + 1e-6, f"{label}: GraphLearn's alias table is far from the weights (TV {tv})"
    stat, df, p = pearson(counts, draws * model)
    bins = weight_bins(weights, 20)
    b_stat, b_df, b_p = pearson(np.bincount(bins, counts, 20), np.bincount(bins, draws * model, 20))
    i_stat, _, i_p = pearson(counts, draws * ideal)
    worst = int(np.argmax(ideal - model))
    node = {"draws": draws, "items": len(weights), "zero_weight_items": int(zero.sum()),
            "per_item_chi2": round(stat, 1), "per_item_df": df, "per_item_p": p,
            "weight_bins_chi2": round(b_stat, 2), "weight_bins_df": b_df, "weight_bins_p": b_p,
            "alias_tv_from_ideal": tv, "per_item_chi2_vs_ideal_w_over_sum": round(i_stat, 1), "p_vs_ideal": i_p,
            "most_undersampled_item": {"id": int(gl_item_ids[worst]), "ideal": draws * ideal[worst],
                                       "graphlearn_expected": draws * model[worst], "observed": counts[worst]}}
    if len(np.unique(weights)) > 1:  # power: a sampler ignoring the weights would be rejected
        uniform = np.where(weights > 0, 1.0, 0.0)
        u_stat, _, u_p = pearson(counts, draws * uniform / uniform.sum())
        node["chi2_if_uniform"], node["p_if_uniform"] = round(u_stat, 1), u_p
        assert u_p < ALPHA, f"{label}: the node-weight test cannot tell the weights from uniform ({u_p})"
    facts["node_weight"] = node
    facts["storage_order_is_file_order"] = bool(
        (storage_order == np.searchsorted(gl_item_ids, tables["item"]["id"].to_numpy())).all())
    assert p > ALPHA, f"{label}: per-item node-weight frequencies do not follow the weights: {node}"
    assert b_p > ALPHA, f"{label}: node-weight frequencies per weight bin do not follow the weights: {node}"

    # 7. conditional negative sampling over pos_edge: never a positive of the user, only pos_edge items
    pool = set(result["pos_edge"]["dst"])
    n_cond = 0
    for (user, _item), samples in zip(result["conditional"]["pairs"], result["conditional"]["samples"], strict=True):
        bad = [s for s in samples if s in positives[user]]
        assert not bad, f"{label}: conditional sampler gave positives {bad} of user {user}"
        outside = [s for s in samples if s not in pool]
        assert not outside, f"{label}: conditional sampler gave items outside pos_edge: {outside}"
        n_cond += len(samples)
    facts["conditional_samples_checked"] = n_cond

    # 8. coverage of the V2 easy-negative pool: uniform over pos_edge items minus the user's positives.
    # GraphLearn draws them with the same alias method (all weights 1), whose last column is never
    # visited: one pool item is never drawn. Allowed: at most that one; the rest must be uniform (up to
    # GraphLearn's own occasional repeated pool entry, see below).
    if "conditional_uniform" in result:
        user, _item = result["conditional_uniform"]["pair"]
        drawn = dict(zip(result["conditional_uniform"]["ids"], result["conditional_uniform"]["counts"], strict=True))
        allowed = sorted(pool - positives[user])
        assert set(drawn) <= set(allowed), f"{label}: conditional draws outside pos_edge items minus positives"
        never = [i for i in allowed if i not in drawn]
        observed = np.array([drawn[i] for i in allowed if i in drawn], dtype=float)
        # GraphLearn's parallel loader now and then lists one pool item twice (seen once in CI: one item
        # drawn at twice the rate of the others, chi2 1535 on 231 df, no item never drawn), although the
        # edge table it loaded holds every hnmine row once (section 3). So an item's expected rate is its
        # multiplicity in GraphLearn's pool, read off as the nearest integer ratio to the median rate
        # (1,293 draws per item here, sd ~36), and at most two doubled entries are tolerated.
        multiplicity = np.maximum(np.rint(observed / np.median(observed)), 1.0)
        expected = observed.sum() * multiplicity / multiplicity.sum()
        u_stat, u_df, u_p = pearson(observed, expected)
        facts["v2_pool"] = {"draws": int(observed.sum()), "allowed_items": len(allowed), "never_drawn": never,
                            "expected_per_item": round(float(observed.sum()) / len(allowed), 1),
                            "graphlearn_repeated_pool_entries": int((multiplicity > 1).sum()),
                            "chi2_drawn_items": round(u_stat, 1), "df": u_df, "p": u_p}
        assert len(never) <= 1, f"{label}: {len(never)} allowed pool items were never drawn: {facts['v2_pool']}"
        assert (multiplicity > 1).sum() <= 2 and multiplicity.max() <= 2, (
            f"{label}: V2 easy negatives far from uniform over the pool: {facts['v2_pool']}")
        assert u_p > ALPHA, f"{label}: V2 easy negatives are not uniform over the pool: {facts['v2_pool']}"
    FACTS[label] = facts
    print(f"\n[{label}] " + json.dumps(facts, default=str))


def cond_pairs_from(pos_edge: pl.DataFrame, users: int) -> list[tuple[int, int]]:
    first = pos_edge.group_by("user_id", maintain_order=True).first().head(users)
    return list(zip(first["user_id"].to_list(), first["item_id"].to_list(), strict=True))


# --------------------------------------------------------------------------- sample_data


@pytest.fixture(scope="session")
def cli_svd_embeddings(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("emb")
    hnmine("svd", "--positives", "sample_data/train.txt", "--dim", "32", "--out-dir", out)
    return out


@pytest.mark.parametrize("edge_weight", ["score", "rank", "order", "uniform"])
def test_sample_data_in_graphlearn(gl_python, cli_svd_embeddings, tmp_path, edge_weight):
    sample_embeddings = cli_svd_embeddings
    out = tmp_path / "mined"
    hnmine("mine", "--users", sample_embeddings / "user.parquet", "--items", sample_embeddings / "item.parquet",
           "--positives", "sample_data/train.txt", "--item-features", "sample_data/item_features.csv",
           "--rank-window", "101:500", "--num-hard", "10", "--edge-weight", edge_weight, "--out", out, "--quiet")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["attr_fields"] == ["location_id", "popularity_bucket"]
    pos_edge = pl.read_parquet(out / "pos_edge.parquet")
    # the positives GraphLearn gets are exactly sample_data/train.txt
    pairs = set()
    for line in (REPO / "sample_data/train.txt").read_text().splitlines():
        user, *user_items = line.split()
        pairs.update((int(user), int(i)) for i in user_items)
    assert set(zip(pos_edge["user_id"].to_list(), pos_edge["item_id"].to_list(), strict=True)) == pairs
    assert pos_edge.height == len(pairs)
    fields = ["int64", "int64"]  # location_id, popularity_bucket
    result = probe(gl_python, out, tmp_path / "gl", attr_types=torcheasyrec_attr_types(fields),
                   num_hard_samples=[4, 10, 16], draws=2_000_000, cond_pairs=cond_pairs_from(pos_edge, 1000))
    check_consumer(out, result, fields, f"sample_data/{edge_weight}")


# --------------------------------------------------------------------------- a generated case


TITLES = ["Café crème {i}", "東京タワー {i}", "🎧 Kopfhörer ß {i}", "naïve “quoted” {i}", "", None, "plain {i}"]


def make_generated(root: Path, seed: int = 7) -> dict[str, Path]:
    """Users and items with int64 ids above 2**32, random embeddings (negative scores too), skewed
    popularity, items without positives (weight 0), users with few or no minable negatives, and an item
    feature table with non-ASCII, empty and missing values (and items absent from it)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    n_users, n_items, dim = 60, 240, 8
    user_ids = 3_000_000_000 + np.arange(n_users, dtype=np.int64) * 11
    item_ids = 5_000_000_000 + np.arange(n_items, dtype=np.int64) * 7
    for name, ids in (("user", user_ids), ("item", item_ids)):
        vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
        pl.DataFrame({"id": ids, "embedding": vectors}).write_parquet(root / f"{name}.parquet")
    popular = 1.0 / np.arange(1, 201) ** 1.1  # items 200.. never positive: weight 0
    rows = []
    for u, user in enumerate(user_ids):
        if u == 0:  # 5 non-positives: ranks 3..5 of the window 3:20 -> 3 hard negatives (short)
            chosen = np.arange(n_items - 5)
        elif u == 1:  # 2 non-positives: the window is empty -> no hard negatives
            chosen = np.arange(n_items - 2)
        else:
            chosen = rng.choice(200, size=int(rng.integers(2, 20)), replace=False, p=popular / popular.sum())
        rows += [(int(user), int(item_ids[c])) for c in chosen]
    pl.DataFrame(rows, schema={"user_id": pl.Int64, "item_id": pl.Int64}, orient="row").write_csv(root / "positives.csv")
    present = item_ids[:-6]  # the last 6 items have no feature row at all
    titles = [None if (t := TITLES[i % len(TITLES)]) is None else t.format(i=i) for i in range(len(present))]
    tags = ["" if i % 5 == 0 else f"k{i % 3}:v\x1dk{i % 4}:w ü" for i in range(len(present))]
    price = [None if i % 6 == 0 else int(i * 13) for i in range(len(present))]
    pl.DataFrame({"id": present, "title": titles, "tags": tags, "price": pl.Series(price, dtype=pl.Int64)}).write_parquet(
        root / "features.parquet")
    return {"users": root / "user.parquet", "items": root / "item.parquet", "positives": root / "positives.csv",
            "features": root / "features.parquet"}


@pytest.mark.parametrize("edge_weight", ["score", "rank", "uniform"])
def test_generated_strings_in_graphlearn(gl_python, tmp_path, edge_weight):
    inputs = make_generated(tmp_path / "in")
    out = tmp_path / "mined"
    hnmine("mine", "--users", inputs["users"], "--items", inputs["items"], "--positives", inputs["positives"],
           "--item-features", inputs["features"], "--attr-columns", "title,tags,price",
           "--rank-window", "3:20", "--num-hard", "6", "--edge-weight", edge_weight, "--out", out, "--quiet")
    items = pl.read_parquet(out / "item.parquet")
    attrs = items["attrs"].to_list()
    # the case really has what it is meant to have
    assert any("東京" in a for a in attrs) and any("🎧" in a for a in attrs)
    assert any(a.split(DELIM)[0] == "" for a in attrs) and DELIM * 2 in DELIM.join(attrs)
    assert (items["weight"] == 0).sum() > 0
    hard = pl.read_parquet(out / "hard_neg_edge.parquet")
    if edge_weight == "score":
        assert (hard["weight"] < 0).any() and (hard["weight"] > 0).any()
    per_user = hard.group_by("user_id").len()
    assert set(per_user["len"].to_list()) == {6, 3}  # and one user with none
    assert per_user.height == 59
    pos_edge = pl.read_parquet(out / "pos_edge.parquet")
    # users 0 and 1 have all but 5 and 2 of the pos_edge items as positives: GraphLearn's conditional
    # sampler gives up after a few retries and returns positives for them, so they are not asked
    ordinary = pos_edge.filter(pl.len().over("user_id") < 100)
    fields = ["string", "string", "int64"]  # title, tags, price
    result = probe(gl_python, out, tmp_path / "gl", attr_types=torcheasyrec_attr_types(fields),
                   num_hard_samples=[2, 6, 10], draws=2_000_000, cond_pairs=cond_pairs_from(ordinary, 60),
                   cond_expand=30, cond_uniform_pair=cond_pairs_from(ordinary, 1)[0], cond_uniform_draws=300_000)
    check_consumer(out, result, fields, f"generated/{edge_weight}")
    # the string attributes, spelled out
    by_id = dict(zip(result["item"]["ids"], result["item"]["string_attrs"], strict=True))
    first = int(items["id"][1])
    assert by_id[first] == ["東京タワー 1", "k1:v\x1dk1:w ü", "13"]
    assert by_id[int(items["id"][0])] == ["Café crème 0", "", ""]
    assert by_id[int(items["id"][-1])] == ["", "", ""]  # no feature row: all empty, row still loaded


def test_single_empty_attr_never_reaches_graphlearn(gl_python, tmp_path):
    """With one attr field, an empty value makes the attrs column empty, which GraphLearn reads as zero
    attributes and drops the whole item row ("The count of attributes does not match your decoder").
    hnmine must refuse such a table instead of writing a row the consumer silently loses."""
    inputs = make_generated(tmp_path / "in")
    out = tmp_path / "mined"
    done = subprocess.run([sys.executable, "-m", "hnmine", "mine", "--users", str(inputs["users"]),
                           "--items", str(inputs["items"]), "--positives", str(inputs["positives"]),
                           "--item-features", str(inputs["features"]), "--attr-columns", "title",
                           "--rank-window", "3:20", "--num-hard", "6", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 2, f"hnmine wrote a table GraphLearn would drop rows of:\n{done.stdout}\n{done.stderr}"
    assert "title" in done.stderr and "empty" in done.stderr
    assert not out.exists()
    # the same column without empty values loads completely
    features = pl.read_parquet(inputs["features"])
    features = features.with_columns(pl.col("title").fill_null("-").replace("", "-"))
    missing = pl.DataFrame({"id": pl.read_parquet(inputs["items"])["id"]}).join(features, on="id", how="anti")
    features = pl.concat([features, missing.with_columns(pl.lit("-").alias("title"), pl.lit("").alias("tags"),
                                                         pl.lit(None, dtype=pl.Int64).alias("price"))])
    features.write_parquet(tmp_path / "filled.parquet")
    hnmine("mine", "--users", inputs["users"], "--items", inputs["items"], "--positives", inputs["positives"],
           "--item-features", tmp_path / "filled.parquet", "--attr-columns", "title",
           "--rank-window", "3:20", "--num-hard", "6", "--out", out, "--quiet")
    pos_edge = pl.read_parquet(out / "pos_edge.parquet")
    result = probe(gl_python, out, tmp_path / "gl", attr_types=torcheasyrec_attr_types(["string"]),
                   num_hard_samples=[6], draws=200_000,
                   cond_pairs=cond_pairs_from(pos_edge.filter(pl.len().over("user_id") < 100), 20))
    check_consumer(out, result, ["string"], "generated/single-attr")


def test_item_id_as_attr_in_graphlearn(gl_python, cli_svd_embeddings, tmp_path):
    """TorchEasyRec configs list the item id itself in attr_fields: --attr-columns may name the id column."""
    out = tmp_path / "mined"
    hnmine("mine", "--users", cli_svd_embeddings / "user.parquet", "--items", cli_svd_embeddings / "item.parquet",
           "--positives", "sample_data/train.txt", "--item-features", "sample_data/item_features.csv",
           "--attr-columns", "id,location_id,popularity_bucket", "--num-hard", "10", "--out", out, "--quiet")
    pos_edge = pl.read_parquet(out / "pos_edge.parquet")
    fields = ["int64", "int64", "int64"]  # item_id, location_id, popularity_bucket
    result = probe(gl_python, out, tmp_path / "gl", attr_types=torcheasyrec_attr_types(fields),
                   num_hard_samples=[10], draws=200_000, cond_pairs=cond_pairs_from(pos_edge, 64))
    check_consumer(out, result, fields, "sample_data/id-attr", id_attr=0)


def test_item_id_attr_of_items_without_features_in_graphlearn(gl_python, tmp_path):
    """Items absent from the feature table still carry their item id attr: the samplers take a
    negative's item id from the attrs, and an empty one would reach the trainer as a null item id."""
    inputs = make_generated(tmp_path / "in")  # its last 6 items have no feature row
    out = tmp_path / "mined"
    hnmine("mine", "--users", inputs["users"], "--items", inputs["items"], "--positives", inputs["positives"],
           "--item-features", inputs["features"], "--attr-columns", "id,title,price",
           "--rank-window", "3:20", "--num-hard", "6", "--out", out, "--quiet")
    assert json.loads((out / "manifest.json").read_text())["summary"]["items_without_features"] == 6
    pos_edge = pl.read_parquet(out / "pos_edge.parquet")
    fields = ["int64", "string", "int64"]  # item_id, title, price
    result = probe(gl_python, out, tmp_path / "gl", attr_types=torcheasyrec_attr_types(fields),
                   num_hard_samples=[6], draws=200_000,
                   cond_pairs=cond_pairs_from(pos_edge.filter(pl.len().over("user_id") < 100), 20))
    check_consumer(out, result, fields, "generated/id-attr-without-features", id_attr=0)
    # the hard negatives as the trainer gets them: every one with an item id, the node's own
    by_id = dict(zip(result["item"]["ids"], result["item"]["string_attrs"], strict=True))
    hard_items = pl.read_parquet(out / "hard_neg_edge.parquet")["item_id"].unique().to_list()
    assert torcheasyrec_values([by_id[i][0] for i in hard_items], "int64") == hard_items
    absent = pl.read_parquet(inputs["items"])["id"].to_list()[-6:]
    assert [by_id[i] for i in absent] == [[str(i), "", ""] for i in absent]
