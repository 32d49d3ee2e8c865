"""Benchmark hnmine mining against this machine's GEMM peak, raw FAISS search and two baselines.

Not a test (pytest does not collect ``benchmarks/``). Every measurement runs in its own subprocess so
that its peak RSS (``ru_maxrss``) is its own. Usage (from the repository root, after ``make setup`` and
``.venv/bin/pip install -e ".[bench]"``)::

    .venv/bin/python benchmarks/bench_mine.py all --out bench-out

writes ``bench-out/results.json``, ``bench-out/results.md`` and ``bench-out/time_vs_catalog.png``.
Single cases: ``benchmarks/bench_mine.py case KIND --json '{...}'`` (see :func:`run_case`).

Timings on a shared machine are noisy: every timed case is repeated (``--repeat``) and the median kept.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOWALLA = Path(os.environ.get("HNMINE_GOWALLA", ROOT.parent / "shared" / "datasets" / "gowalla"))
LO, HI, NUM_NEG, DIM = 101, 500, 10, 64


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------------------- inputs
def gemm_peak(size: int = 4096, repeat: int = 5) -> dict:
    """fp32 GEMM rate of numpy and torch on size x size (median of ``repeat``), GFLOP/s."""
    import torch

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    out = {}
    for name, fn in (("numpy", lambda: a @ a), ("torch", lambda t=torch.from_numpy(a): t @ t)):
        fn()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = 2 * size**3 / statistics.median(times) / 1e9
    out["peak"] = max(out["numpy"], out["torch"])
    return out


def synthetic(out_dir: Path, n_users: int, n_items: int, seed: int = 0, clusters: int = 256) -> dict:
    """Clustered embeddings (a mixture of ``clusters`` gaussians, d=64) and ~20 positives per user."""
    import polars as pl

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, DIM)).astype(np.float32)

    def draw(n: int) -> np.ndarray:
        which = rng.integers(0, clusters, n)
        return (centers[which] + 0.7 * rng.standard_normal((n, DIM), dtype=np.float32)).astype(np.float32)

    for name, n in (("user", n_users), ("item", n_items)):
        vecs = draw(n)
        pl.DataFrame(
            {"id": np.arange(n, dtype=np.int64), "embedding": pl.Series(vecs, dtype=pl.Array(pl.Float32, DIM))}
        ).write_parquet(out_dir / f"{name}.parquet")
    counts = rng.integers(5, 40, n_users)
    with open(out_dir / "train.txt", "w") as handle:
        for user, count in enumerate(counts):
            items = rng.choice(n_items, size=count, replace=False)
            handle.write(f"{user} " + " ".join(map(str, items)) + "\n")
    return {
        "users": str(out_dir / "user.parquet"),
        "items": str(out_dir / "item.parquet"),
        "positives": str(out_dir / "train.txt"),
    }


def gowalla(out_dir: Path) -> dict:
    """SVD factors (d=64) of the real Gowalla train split (``hnmine svd --form factors``, as measured)."""
    if not (out_dir / "item.parquet").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "hnmine",
                "svd",
                "--positives",
                str(GOWALLA / "train.txt"),
                "--dim",
                str(DIM),
                "--form",
                "factors",
                "--out-dir",
                str(out_dir),
            ],
            check=True,
            capture_output=True,
        )
    return {
        "users": str(out_dir / "user.parquet"),
        "items": str(out_dir / "item.parquet"),
        "positives": str(GOWALLA / "train.txt"),
    }


def load(inputs: dict, max_users: int | None = None):
    from hnmine.io.embeddings import EmbeddingSource
    from hnmine.io.positives import index_positives, read_positives

    users = EmbeddingSource(inputs["users"]).read_all()
    items = EmbeddingSource(inputs["items"]).read_all()
    if max_users:
        users.ids, users.vectors = users.ids[:max_users], users.vectors[:max_users]
    positives = index_positives(read_positives(inputs["positives"]), users.ids, items.ids)
    return users, items, positives


# ------------------------------------------------------------------------------------------ cases
def case_mine(p: dict) -> dict:
    """hnmine mine end to end (read -> retrieve -> select -> write), the library call the CLI makes."""
    from hnmine.mining.pipeline import MineConfig, mine

    start = time.perf_counter()
    report = mine(
        MineConfig.of(
            users=p["users"],
            items=p["items"],
            positives=p["positives"],
            out=p["out"],
            rank_window=f"{LO}:{HI}",
            num_hard=NUM_NEG,
            index=p.get("index", "exact"),
            precision=p.get("precision", "auto"),
            nprobe=p.get("nprobe", 64),
            nlist=p.get("nlist"),
            ef_search=p.get("ef_search", 512),
            audit_sample=p.get("audit_sample", 0),
            chunk_size=p.get("chunk_size", 16384),
            formats=["parquet"],
            overwrite=True,
        )
    )
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "timings": report.timings,
        "gemm_precision": report.gemm_precision,
        "users": report.users,
        "items": report.items,
        "rows": report.rows.get("hard_neg_edge"),
        "audit": report.audit,
    }


def case_retrieve(p: dict) -> dict:
    """retrieve_window alone on the first ``users`` users (already in memory), chunked like ``mine``."""
    from hnmine.mining.retrieval import IndexSpec, ItemIndex, retrieve_window

    users, items, positives = load(p, p.get("users_n"))
    built = time.perf_counter()
    spec = IndexSpec(kind=p.get("index", "exact"), nprobe=p.get("nprobe", 64), nlist=p.get("nlist"),
                     precision=p.get("precision", "auto"))
    index = ItemIndex(items.vectors, spec)
    built = time.perf_counter() - built
    chunk = p.get("chunk_size", 16384)
    if p.get("warm"):  # load the compiled kernels first (as ``mine`` does), so only the search is timed
        indptr, rows = positives.slice(0, min(256, len(users)))
        retrieve_window(index, users.vectors[: len(indptr) - 1], indptr, rows, LO, HI)
    start = time.perf_counter()
    for first in range(0, len(users), chunk):
        stop = min(first + chunk, len(users))
        indptr, rows = positives.slice(first, stop)
        retrieve_window(index, users.vectors[first:stop], indptr, rows, LO, HI)
    return {"retrieve_s": time.perf_counter() - start, "index_s": built, "users": len(users), "items": len(items)}


def case_faiss(p: dict) -> dict:
    """Raw FAISS IndexFlatIP.search(k=HI) of the same queries: the floor any FAISS-based miner pays."""
    import faiss

    users, items, positives = load(p, p.get("users_n"))
    if p.get("blas_bs"):
        faiss.cvar.distance_compute_blas_database_bs = p["blas_bs"]
    index = faiss.IndexFlatIP(items.vectors.shape[1])
    index.add(items.vectors)
    chunk = p.get("chunk_size", 16384)
    if not p.get("hnmine_depths"):
        start = time.perf_counter()
        for first in range(0, len(users), chunk):
            index.search(users.vectors[first : first + chunk], HI)
        return {"search_s": time.perf_counter() - start, "users": len(users), "items": len(items)}
    # The FAISS work hnmine's output needs: each user to HI + its positives (ranks among
    # non-positives), in hnmine's depth levels and calls, with hnmine's FAISS settings, nothing else.
    from hnmine.mining.retrieval import ItemIndex, call_depths

    index = ItemIndex(items.vectors)

    counts = np.diff(positives.indptr)
    searched = 0
    start = time.perf_counter()
    for first in range(0, len(users), chunk):
        depths = call_depths(counts[first : first + chunk], HI, len(items.vectors))
        for depth in np.unique(depths):
            rows = first + np.flatnonzero(depths == depth)
            index.search(users.vectors[rows], int(depth))  # ItemIndex.search: FAISS with hnmine's settings
            searched += int(depth) * len(rows)
    return {"search_s": time.perf_counter() - start, "users": len(users), "items": len(items),
            "mean_depth": searched / len(users)}


def case_flagembedding(p: dict) -> dict:
    """FlagEmbedding's ``scripts/hn_mine.py`` (``find_knn_neg``) as published, fed precomputed vectors.

    Its steps, kept as they are there: ``batch_search`` calls FAISS flat with 64 queries at a time
    (its default ``batch_size``; ``search_batch_size`` is never passed to it) to depth ``range_max``
    and converts the results with ``.tolist()``; the window ``[range_min, range_max)`` of those ranks
    (positives counted in the ranks) minus the query's positives, checked by list membership;
    ``random.sample`` of ``negative_number``; users left short are topped up from random corpus
    items that are not positives; one jsonl line per query. Only the embedding step is replaced (by
    the vectors hnmine mines from) and ids stand for texts.
    """
    import faiss

    t0 = time.perf_counter()
    users, items, positives = load(p)
    t1 = time.perf_counter()
    index = faiss.IndexFlatIP(items.vectors.shape[1])
    index.add(np.asarray(items.vectors, dtype=np.float32))
    all_inxs: list[list[int]] = []
    batch_size = int(p.get("search_batch_size", 64)) or len(users)  # 0: one call for all queries
    for start in range(0, len(users), batch_size):
        batch = np.asarray(users.vectors[start : start + batch_size], dtype=np.float32)
        _, inxs = index.search(batch, k=HI)
        all_inxs.extend(inxs.tolist())
    t2 = time.perf_counter()
    random.seed(0)
    corpus = items.ids.tolist()
    lines = []
    for u in range(len(users)):
        pos = [corpus[i] for i in positives.item_rows[positives.indptr[u] : positives.indptr[u + 1]].tolist()]
        filtered = []
        for inx in all_inxs[u][LO - 1 : HI]:
            if inx == -1:
                break
            if corpus[inx] not in pos:
                filtered.append(inx)
        if len(filtered) > NUM_NEG:
            filtered = random.sample(filtered, NUM_NEG)
        neg = [corpus[i] for i in filtered]
        if len(neg) < NUM_NEG:
            samples = random.sample(corpus, NUM_NEG - len(neg) + len(pos))
            neg.extend([s for s in samples if s not in pos][: NUM_NEG - len(neg)])
        lines.append({"query": int(users.ids[u]), "pos": pos, "neg": neg})
    t3 = time.perf_counter()
    with open(p["out"], "w") as handle:
        for line in lines:
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    t4 = time.perf_counter()
    return {
        "wall_s": t4 - t0,
        "timings": {"read": t1 - t0, "retrieve": t2 - t1, "select": t3 - t2, "write": t4 - t3},
        "users": len(users),
        "search_batch_size": batch_size,
    }


class _Precomputed:
    """A stand-in for SentenceTransformer whose encode_* return precomputed vectors for 'u<id>'/'i<id>'."""

    def __init__(self, user_vecs: dict, item_vecs: np.ndarray, item_index: dict) -> None:
        import torch

        self.device = torch.device("cpu")
        self._users, self._items, self._item_index = user_vecs, item_vecs, item_index

    def get_embedding_dimension(self) -> int:
        return self._items.shape[1]

    def encode_query(self, texts, **_):
        return np.stack([self._users[t] for t in texts])

    def encode_document(self, texts, **_):
        return self._items[[self._item_index[t] for t in texts]]

    def similarity(self, a, b):
        import torch

        return torch.as_tensor(a) @ torch.as_tensor(b).T

    def similarity_pairwise(self, a, b):
        import torch

        return (torch.as_tensor(a) * torch.as_tensor(b)).sum(-1)


def case_st(p: dict) -> dict:
    """sentence-transformers mine_hard_negatives on the same embeddings (precomputed, via _Precomputed)."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    t0 = time.perf_counter()
    users, items, positives = load(p, p.get("users_n"))
    anchors, docs = [], []
    for u in range(len(users)):
        for i in positives.item_rows[positives.indptr[u] : positives.indptr[u + 1]]:
            anchors.append(f"u{users.ids[u]}")
            docs.append(f"i{items.ids[i]}")
    corpus = [f"i{x}" for x in items.ids]
    user_vecs = {f"u{x}": v for x, v in zip(users.ids, users.vectors, strict=True)}
    model = _Precomputed(user_vecs, items.vectors, {t: k for k, t in enumerate(corpus)})
    dataset = Dataset.from_dict({"anchor": anchors, "positive": docs})
    t1 = time.perf_counter()
    mined = mine_hard_negatives(
        dataset,
        model,
        corpus=corpus,
        range_min=LO - 1,
        range_max=HI,
        num_negatives=NUM_NEG,
        sampling_strategy="random",
        output_format="n-tuple",
        use_faiss=p.get("use_faiss", True),
        verbose=False,
    )
    t2 = time.perf_counter()
    mined.to_parquet(p["out"])
    t3 = time.perf_counter()
    return {
        "wall_s": t3 - t0,
        "timings": {"read": t1 - t0, "mine": t2 - t1, "write": t3 - t2},
        "users": len(users),
        "rows": len(mined),
    }


CASES = {
    "mine": case_mine,
    "retrieve": case_retrieve,
    "faiss": case_faiss,
    "flagembedding": case_flagembedding,
    "st": case_st,
    "gemm": lambda p: gemm_peak(),
}


THREADS: int | None = None  # --threads: every case (and the GEMM peak) runs with this many threads


def run_case(kind: str, params: dict, threads: int | None = None) -> dict:
    """Run one case in a fresh interpreter; returns its JSON plus peak_rss_mib."""
    env = dict(os.environ)
    threads = threads or THREADS
    if threads:
        for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    proc = subprocess.run(
        [sys.executable, __file__, "case", kind, "--json", json.dumps(params)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def repeated(kind: str, params: dict, repeat: int, key: str) -> dict:
    """Median of ``repeat`` runs by ``key`` (the runs themselves are kept under 'runs')."""
    runs = [run_case(kind, params) for _ in range(repeat)]
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    med = statistics.median(r[key] for r in good)
    best = min(good, key=lambda r: abs(r[key] - med))
    return {**best, key: med, "runs": [r[key] for r in good], "peak_rss_mib": max(r["peak_rss_mib"] for r in good)}


# ------------------------------------------------------------------------------------------ suite
PARTS = ("gowalla", "approx", "scale", "rss", "approx1m")


def suite(
    out: Path,
    repeat: int,
    quick: bool,
    parts: tuple[str, ...] = PARTS,
    nprobes: tuple[int, ...] = (4, 8, 16, 32, 64, 128),
) -> dict:
    """Run the chosen parts; results of parts not run are kept from an earlier results.json."""
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "results.json"
    results: dict = json.loads(saved.read_text()) if saved.exists() else {}
    results.setdefault("conditions", {})
    results["conditions"].update(
        {
            "cpus": os.cpu_count(),
            "repeat": repeat,
            f"loadavg_start_{'+'.join(parts)}": os.getloadavg(),
            f"started_{'+'.join(parts)}": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    results["conditions"]["threads"] = THREADS or os.cpu_count()
    results["gemm"] = run_case("gemm", {})  # in a case process: the same thread settings as the cases
    peak = results["gemm"]["peak"]
    print("GEMM", results["gemm"], flush=True)
    gw = gowalla(out / "gowalla-emb")

    if "gowalla" in parts:  # 1. Gowalla size, end to end, against raw FAISS and the two baselines.
        g = {}
        for name, index, precision in (("flat", "flat", "auto"), ("exact", "exact", "auto"), ("exact_fp32", "exact", "fp32")):
            g[f"hnmine_{name}"] = repeated(
                "mine", {**gw, "out": str(out / f"mined-{name}"), "index": index, "precision": precision}, repeat, "wall_s"
            )
            print("gowalla", name, g[f"hnmine_{name}"], flush=True)
        g["faiss_search"] = repeated("faiss", gw, repeat, "search_s")
        print("gowalla faiss", g["faiss_search"], flush=True)
        g["faiss_search_hnmine_depths"] = repeated("faiss", {**gw, "hnmine_depths": True}, repeat, "search_s")
        print("gowalla faiss at hnmine's depths", g["faiss_search_hnmine_depths"], flush=True)
        g["flagembedding"] = repeated("flagembedding", {**gw, "out": str(out / "flag.jsonl")}, repeat, "wall_s")
        print("gowalla flag", g["flagembedding"], flush=True)
        g["flagembedding_one_call"] = repeated(
            "flagembedding", {**gw, "out": str(out / "flag1.jsonl"), "search_batch_size": 0}, repeat, "wall_s"
        )
        print("gowalla flag, one FAISS call", g["flagembedding_one_call"], flush=True)
        g["sentence_transformers"] = repeated("st", {**gw, "out": str(out / "st.parquet")}, 1, "wall_s")
        print("gowalla st", g["sentence_transformers"], flush=True)
        results["gowalla"] = g

    if "approx" in parts:  # 2. IVF on the trained (SVD) Gowalla embeddings: speed vs exact, audited recall.
        approx = {"exact_retrieve": {}, "ivf": []}
        for index in ("flat", "exact"):
            approx["exact_retrieve"][index] = repeated("retrieve", {**gw, "index": index}, repeat, "retrieve_s")
        for nprobe in nprobes:
            speed = repeated("retrieve", {**gw, "index": "ivf", "nprobe": nprobe}, repeat, "retrieve_s")
            audit = run_case(
                "mine",
                {**gw, "out": str(out / f"mined-ivf{nprobe}"), "index": "ivf", "nprobe": nprobe, "audit_sample": 1000},
            )
            approx["ivf"].append({"nprobe": nprobe, "speed": speed, "audit": audit.get("audit")})
            print("approx", nprobe, speed.get("retrieve_s"), audit.get("audit"), flush=True)
        results["approx"] = approx
    _save(out, results)

    if not {"scale", "rss", "approx1m"} & set(parts):
        return results
    # 3. Catalog size: exact retrieval on a user sample, 41k -> 1M items; linearity in users at the largest.
    sizes = [40_981, 100_000, 300_000, 1_000_000] if not quick else [40_981, 100_000]
    sample = 2048
    big = out / f"syn-{sizes[-1]}"
    big_data = {
        "users": str(big / "user.parquet"),
        "items": str(big / "item.parquet"),
        "positives": str(big / "train.txt"),
    }
    if "scale" in parts:
        scale = []
        for n in sizes:
            data = synthetic(out / f"syn-{n}", n_users=16384 if n == sizes[-1] else sample, n_items=n)
            row = {"items": n, "users": sample}
            for index in ("exact", "flat"):
                row[index] = repeated("retrieve", {**data, "index": index, "users_n": sample}, repeat, "retrieve_s")
            row["faiss_search"] = repeated("faiss", {**data, "users_n": sample}, repeat, "search_s")
            for index in ("exact", "flat"):
                row[f"gemm_fraction_{index}"] = 2 * sample * n * DIM / row[index]["retrieve_s"] / 1e9 / peak
            row["gemm_fraction_faiss"] = 2 * sample * n * DIM / row["faiss_search"]["search_s"] / 1e9 / peak
            scale.append(row)
            print(
                "scale",
                n,
                row["exact"]["retrieve_s"],
                row["flat"]["retrieve_s"],
                row["faiss_search"]["search_s"],
                flush=True,
            )
            _save(out, {**results, "scale": scale})
        results["scale"] = scale
        linear = []
        for users_n in (1024, 2048, 4096):
            row = {"users": users_n}
            for index in ("exact", "flat"):
                params = {**big_data, "index": index, "users_n": users_n}
                row[index] = repeated("retrieve", params, repeat, "retrieve_s")
            linear.append(row)
            print("linear", users_n, row["exact"]["retrieve_s"], row["flat"]["retrieve_s"], flush=True)
        results["linear_users"] = linear
        _save(out, results)
    if "rss" in parts:  # Peak RSS of the whole job at the largest catalog: must not grow with the users.
        rss = []
        for users_n in (4096, 16384):
            sub = _user_subset(big, sizes[-1], users_n)
            for index in ("flat", "exact"):
                r = run_case(
                    "mine",
                    {
                        **big_data,
                        "users": str(sub / "user.parquet"),
                        "index": index,
                        "out": str(out / f"mined-big-{users_n}-{index}"),
                    },
                )
                rss.append({"users": users_n, "index": index, **r})
                print("rss", users_n, index, r.get("peak_rss_mib"), r.get("wall_s"), flush=True)
        results["rss"] = rss
    if "approx1m" in parts:  # IVF where distances dominate: the 1M-item catalog, exact vs IVF, audited.
        sub = _user_subset(big, sizes[-1], 4096)
        a1m = {"users": sample, "exact_retrieve": {}, "ivf": []}
        for index in ("exact", "flat"):
            a1m["exact_retrieve"][index] = repeated("retrieve", {**big_data, "index": index, "users_n": sample,
                                                                 "warm": True}, repeat, "retrieve_s")
        for nprobe in (8, 16, 32, 64):
            speed = repeated("retrieve", {**big_data, "index": "ivf", "nprobe": nprobe, "users_n": sample, "warm": True}, repeat,
                             "retrieve_s")
            audit = run_case("mine", {**big_data, "users": str(sub / "user.parquet"), "index": "ivf", "nprobe": nprobe,
                                      "audit_sample": 500, "out": str(out / f"mined-1m-ivf{nprobe}")})
            a1m["ivf"].append({"nprobe": nprobe, "speed": speed, "audit": audit.get("audit")})
            print("approx1m", nprobe, speed.get("retrieve_s"), speed.get("index_s"), audit.get("audit"), flush=True)
            _save(out, {**results, "approx1m": a1m})
        results["approx1m"] = a1m
    results["conditions"]["loadavg_end"] = os.getloadavg()
    _save(out, results)
    return results


def _user_subset(big: Path, n_items: int, users_n: int) -> Path:
    """The first ``users_n`` users of the big synthetic catalog (made first if missing), in a sibling dir."""
    if not (big / "item.parquet").exists():
        synthetic(big, n_users=16384, n_items=n_items)
    sub = big.parent / f"{big.name}-u{users_n}"
    if not (sub / "user.parquet").exists():
        import polars as pl

        sub.mkdir(parents=True, exist_ok=True)
        pl.read_parquet(big / "user.parquet").head(users_n).write_parquet(sub / "user.parquet")
    return sub


def _ivf_rows(part: dict, references: list[float], build_format: str) -> list[str]:
    """Markdown rows of an IVF sweep: nprobe, retrieve s, build s, speed-up against each reference, recall."""
    rows = []
    for x in part["ivf"]:
        sp = x["speed"]
        recall = (x.get("audit") or {}).get("window_recall")
        ratios = " | ".join(f"{ref / sp['retrieve_s']:.2f}x" for ref in references)
        rows.append(
            f"| {x['nprobe']} | {sp['retrieve_s']:.2f} | {sp.get('index_s', 0):{build_format}} | {ratios} | "
            f"{recall if recall is None else round(recall, 4)} |"
        )
    return rows


def _save(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    try:
        (out / "results.md").write_text(markdown(results))
        plot(results, out / "time_vs_catalog.png")
    except (KeyError, IndexError, TypeError) as exc:  # a part not run yet
        print("report incomplete:", exc, flush=True)


def markdown(r: dict) -> str:
    peak = r["gemm"]["peak"]
    lines = [
        f"GEMM peak (fp32 4096^2, same run): numpy {r['gemm']['numpy']:.1f}, torch {r['gemm']['torch']:.1f} GFLOP/s"
    ]
    g = r.get("gowalla")
    if g:
        fs = g["faiss_search"]["search_s"]
        fl = g["hnmine_flat"]
        lines += [
            "",
            "| Gowalla 29,858 users x 40,981 items, d=64, 101:500, 10/user | wall s (median) | users/s "
            "| / hnmine flat | peak RSS MiB |",
            "|---|---|---|---|---|",
        ]
        for name in ("hnmine_flat", "hnmine_exact", "hnmine_exact_fp32", "flagembedding", "flagembedding_one_call",
                     "sentence_transformers"):
            if name not in g:
                continue
            x = g[name]
            if "error" in x:
                lines.append(f"| {name} | error | | | |")
                continue
            lines.append(
                f"| {name} | {x['wall_s']:.2f} | {x['users'] / x['wall_s']:,.0f} | "
                f"{x['wall_s'] / fl['wall_s']:.2f}x | {x['peak_rss_mib']:.0f} |"
            )
        lines.append(
            f"| raw FAISS IndexFlatIP.search k={HI} (search only) | {fs:.2f} | "
            f"{g['faiss_search']['users'] / fs:,.0f} | {fs / fl['wall_s']:.2f}x | "
            f"{g['faiss_search']['peak_rss_mib']:.0f} |"
        )
        if "faiss_search_bs4096" in g:
            fb = g["faiss_search_bs4096"]["search_s"]
            lines.append(
                f"| raw FAISS search k={HI}, blas database block 4096 (round 1 setting) | {fb:.2f} | "
                f"{g['faiss_search_bs4096']['users'] / fb:,.0f} | {fb / fl['wall_s']:.2f}x | "
                f"{g['faiss_search_bs4096']['peak_rss_mib']:.0f} |"
            )
        if "faiss_search_hnmine_depths" in g:
            fd = g["faiss_search_hnmine_depths"]
            lines.append(
                f"| raw FAISS search to hnmine's depths (hi + positives, mean {fd.get('mean_depth', 0):.0f}; "
                f"hnmine's FAISS settings) | {fd['search_s']:.2f} | {fd['users'] / fd['search_s']:,.0f} | "
                f"{fd['search_s'] / fl['wall_s']:.2f}x | {fd['peak_rss_mib']:.0f} |"
            )
        lines += [
            "",
            "| stages (s, median run) | read | index | retrieve | select | write | total |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in (n for n in ("hnmine_flat", "hnmine_exact", "hnmine_exact_fp32") if n in g):
            t = g[name]["timings"]
            lines.append(
                f"| {name} | "
                + " | ".join(f"{t.get(k, 0):.2f}" for k in ("read", "index", "retrieve", "select", "write", "total"))
                + " |"
            )
        for name in (n for n in ("hnmine_flat", "hnmine_exact", "hnmine_exact_fp32") if n in g):
            extra = f", GEMM {g[name].get('gemm_precision', 'fp32')}"
            if "faiss_search_hnmine_depths" in g:
                extra += f", / FAISS at hnmine's depths = {g[name]['wall_s'] / g['faiss_search_hnmine_depths']['search_s']:.2f}"
            for base in ("flagembedding", "flagembedding_one_call", "sentence_transformers"):
                if base in g and "wall_s" in g[base]:
                    extra += f", {base} / this = {g[base]['wall_s'] / g[name]['wall_s']:.2f}x"
            lines.append(
                f"\n{name}: end-to-end / raw FAISS search k={HI} = {g[name]['wall_s'] / fs:.2f}{extra}; runs "
                f"{[round(x, 2) for x in g[name]['runs']]}"
            )
        lines.append(
            f"\nraw FAISS runs {[round(x, 2) for x in g['faiss_search']['runs']]}; FlagEmbedding runs "
            f"{[round(x, 2) for x in g['flagembedding']['runs']]}"
        )
    a = r.get("approx")
    if a:
        ex = {k: v["retrieve_s"] for k, v in a["exact_retrieve"].items()}
        best = min(ex.values())
        lines += [
            "",
            f"Exact retrieve, all Gowalla users: flat {ex['flat']:.2f} s, exact {ex['exact']:.2f} s",
            "",
            "| IVF (Gowalla SVD d=64) nprobe | retrieve s | index build s | speed-up vs fastest exact "
            "| window recall (audit 1000 users) |",
            "|---|---|---|---|---|",
        ]
        lines += _ivf_rows(a, [best], ".2f")
    a1 = r.get("approx1m")
    if a1:
        ex = {k: v["retrieve_s"] for k, v in a1["exact_retrieve"].items()}
        lines += [
            "",
            f"1M items (synthetic clusters), {a1['users']} users, kernels loaded first: exact {ex['exact']:.2f} s, "
            f"flat {ex['flat']:.2f} s",
            "",
            "| IVF nprobe (nlist 4,000) | retrieve s | index build s | vs exact | vs flat | window recall (audit 500) |",
            "|---|---|---|---|---|---|",
        ]
        lines += _ivf_rows(a1, [ex["exact"], ex["flat"]], ".1f")
    if r.get("scale"):
        lines += [
            "",
            "| items | users | exact retrieve s | frac. of GEMM peak | flat retrieve s | frac. | "
            "raw FAISS k=500 s | frac. |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in r["scale"]:
            lines.append(
                f"| {s['items']:,} | {s['users']} | {s['exact']['retrieve_s']:.2f} | "
                f"{s['gemm_fraction_exact']:.2f} | {s['flat']['retrieve_s']:.2f} | "
                f"{s.get('gemm_fraction_flat', 0):.2f} | {s['faiss_search']['search_s']:.2f} | "
                f"{s.get('gemm_fraction_faiss', 0):.2f} |"
            )
    if r.get("linear_users"):
        lines += [
            "",
            "| 1M items: users | exact retrieve s | ms/user | flat retrieve s | ms/user |",
            "|---|---|---|---|---|",
        ]
        for x in r["linear_users"]:
            e, f = x["exact"]["retrieve_s"], x["flat"]["retrieve_s"]
            lines.append(
                f"| {x['users']} | {e:.2f} | {e / x['users'] * 1000:.2f} | {f:.2f} | {f / x['users'] * 1000:.2f} |"
            )
    if r.get("rss"):
        lines += ["", "| 1M items, whole job: users | index | wall s | peak RSS MiB |", "|---|---|---|---|"]
        for x in r["rss"]:
            if "error" in x:
                lines.append(f"| {x['users']} | {x['index']} | error | |")
                continue
            lines.append(f"| {x['users']} | {x['index']} | {x['wall_s']:.1f} | {x['peak_rss_mib']:.0f} |")
    lines.append(f"\nconditions: {r['conditions']}; GEMM peak used for fractions: {peak:.1f} GFLOP/s")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not r.get("scale"):  # nothing to plot yet (the scale part was not run)
        return
    items = [s["items"] for s in r["scale"]]
    users = r["scale"][0]["users"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(items, [s["exact"]["retrieve_s"] for s in r["scale"]], "o-", label="hnmine --index exact (retrieve)")
    ax.plot(items, [s["flat"]["retrieve_s"] for s in r["scale"]], "s-", label="hnmine --index flat (retrieve)")
    ax.plot(items, [s["faiss_search"]["search_s"] for s in r["scale"]], "^--", label=f"raw FAISS search k={HI}")
    peak = r["gemm"]["peak"]
    ax.plot(items, [2 * users * n * DIM / peak / 1e9 for n in items], "k:", label="GEMM at measured peak")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalog size (items)")
    ax.set_ylabel(f"seconds for {users} users (d={DIM}, window {LO}:{HI})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("all")
    a.add_argument("--out", default="bench-out")
    a.add_argument("--repeat", type=int, default=3)
    a.add_argument("--quick", action="store_true")
    a.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    a.add_argument("--threads", type=int, default=None,
                   help="threads for every case (OMP/NUMBA/BLAS); 1 gives stable figures on a shared machine")
    a.add_argument("--nprobes", default="4,8,16,32,64,128", help="IVF nprobe values for the approx part")
    c = sub.add_parser("case")
    c.add_argument("kind", choices=sorted(CASES))
    c.add_argument("--json", default="{}")
    m = sub.add_parser("markdown")
    m.add_argument("--out", default="bench-out")
    args = parser.parse_args()
    if args.cmd == "case":
        result = CASES[args.kind](json.loads(args.json))
        result["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(result))
    elif args.cmd == "markdown":
        r = json.loads((Path(args.out) / "results.json").read_text())
        (Path(args.out) / "results.md").write_text(markdown(r))
        plot(r, Path(args.out) / "time_vs_catalog.png")
    else:
        nprobes = tuple(int(x) for x in args.nprobes.split(","))
        global THREADS
        THREADS = args.threads
        suite(Path(args.out), args.repeat, args.quick, tuple(args.parts.split(",")), nprobes)


if __name__ == "__main__":
    main()
