"""Load hnmine's GraphLearn text files with the real GraphLearn and make the samplers' calls.

Runs under Python 3.9 with ``graph-learn==1.2.0a1`` (the public GraphLearn has no newer wheels), in
a subprocess started by ``tests/test_graphlearn_consumer.py``; it only reports what GraphLearn
returned (as JSON) and leaves every judgement to the test.

The graph is built exactly as TorchEasyRec's HardNegativeSamplerV2 builds it (``user`` and ``item``
nodes, ``pos_edge`` as edge type ``edge``, ``hard_neg_edge``), and the calls are the ones its four
samplers make:

- NegativeSampler / HardNegativeSampler: ``negative_sampler("item", k, strategy="node_weight")``;
- NegativeSamplerV2 / HardNegativeSamplerV2: ``negative_sampler("edge", k, strategy="random",
  conditional=True)``;
- HardNegativeSampler(V2): ``neighbor_sampler(["hard_neg_edge"], num_hard_sample, strategy="full")``.

Usage: python graphlearn_probe.py SPEC.json OUT.json (run it in a scratch directory: GraphLearn
writes its log files into the working directory).

SPEC keys: dir (the hnmine output directory), attr_types (GraphLearn attr types; the test passes
what TorchEasyRec declares: "string" for every attr field),
attr_delimiter, num_hard_samples (list of num_hard_sample values to try), node_weight_draws,
cond_pairs ([[user, item], ...] positive pairs to condition on), cond_expand, cond_batch (pairs per
request; GraphLearn excludes the positives of every earlier user of the request too, and after a few
failed retries gives up and may return positives, so requests are kept small), and optionally
cond_uniform_pair ([user, item]) with cond_uniform_draws for a coverage count of the pos_edge pool.
"""

import json
import os
import sys
import time

import graphlearn as gl
import numpy as np

BATCH = 1024


def _iterate_nodes(g, node_type):
    sampler = g.node_sampler(node_type, batch_size=BATCH, strategy="by_order")
    ids, weights, ints, floats, strings = [], [], [], [], []
    while True:
        try:
            nodes = sampler.get()
        except gl.OutOfRangeError:
            break
        ids.append(nodes.ids.reshape(-1))
        weights.append(nodes.weights.reshape(-1))
        if nodes.int_attrs is not None:
            ints.append(nodes.int_attrs.reshape(len(ids[-1]), -1))
        if nodes.float_attrs is not None:
            floats.append(nodes.float_attrs.reshape(len(ids[-1]), -1))
        if nodes.string_attrs is not None:
            strings.append(nodes.string_attrs.reshape(len(ids[-1]), -1))
    out = {
        "ids": np.concatenate(ids).tolist() if ids else [],
        "weights": np.concatenate(weights).astype(np.float64).tolist() if weights else [],
    }
    if ints:
        out["int_attrs"] = np.concatenate(ints).tolist()
    if floats:
        out["float_attrs"] = np.concatenate(floats).astype(np.float64).tolist()
    if strings:
        out["string_attrs"] = [[str(v) for v in row] for row in np.concatenate(strings)]
    return out


def _iterate_edges(g, edge_type):
    sampler = g.edge_sampler(edge_type, batch_size=BATCH, strategy="by_order")
    src, dst, weights = [], [], []
    while True:
        try:
            edges = sampler.get()
        except gl.OutOfRangeError:
            break
        src.append(edges.src_ids.reshape(-1))
        dst.append(edges.dst_ids.reshape(-1))
        weights.append(edges.weights.reshape(-1))
    if not src:
        return {"src": [], "dst": [], "weights": []}
    return {
        "src": np.concatenate(src).tolist(),
        "dst": np.concatenate(dst).tolist(),
        "weights": np.concatenate(weights).astype(np.float64).tolist(),
    }


def _full_neighbors(g, edge_type, user_ids, k):
    """What HardNegativeSampler(V2).get does: neighbor_sampler(...).get(user_ids).layer_nodes(1)."""
    sampler = g.neighbor_sampler([edge_type], k, strategy="full")
    counts, dst, weights = [], [], []
    for start in range(0, len(user_ids), BATCH):
        batch = np.asarray(user_ids[start:start + BATCH], dtype=np.int64)
        layer = sampler.get(batch)
        nodes = layer.layer_nodes(1)
        edges = layer.layer_edges(1)
        counts.extend(int(c) for c in nodes.offsets)
        dst.extend(int(i) for i in nodes.ids.reshape(-1))
        weights.extend(float(w) for w in edges.weights.reshape(-1))
    return {"counts": counts, "dst": dst, "weights": weights}


def main():
    spec_path, out_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    d = spec["dir"]
    started = time.time()
    g = (
        gl.Graph()
        .node(os.path.join(d, "user.txt"), node_type="user", decoder=gl.Decoder(weighted=True))
        .node(
            os.path.join(d, "item.txt"),
            node_type="item",
            decoder=gl.Decoder(weighted=True, attr_types=spec["attr_types"], attr_delimiter=spec["attr_delimiter"]),
        )
        .edge(os.path.join(d, "pos_edge.txt"), edge_type=("user", "item", "edge"), decoder=gl.Decoder(weighted=True))
        .edge(
            os.path.join(d, "hard_neg_edge.txt"),
            edge_type=("user", "item", "hard_neg_edge"),
            decoder=gl.Decoder(weighted=True),
        )
    )
    g.init()
    out = {"graphlearn_version": gl.__version__, "stats": {k: int(v[0]) for k, v in g.get_stats().items()}}

    out["user"] = _iterate_nodes(g, "user")
    out["item"] = _iterate_nodes(g, "item")
    out["pos_edge"] = _iterate_edges(g, "edge")
    out["hard_neg_edge"] = _iterate_edges(g, "hard_neg_edge")

    users = out["user"]["ids"]
    out["full"] = {str(k): _full_neighbors(g, "hard_neg_edge", users, k) for k in spec["num_hard_samples"]}

    # Node-weight negative sampling. GraphLearn leaves out the ids of the request batch (the
    # "items not in batch" of NegativeSampler), so the batch holds one id that is not an item:
    # then every draw comes from the plain node-weight distribution.
    draws = int(spec["node_weight_draws"])
    expand = 1000
    sampler = g.negative_sampler("item", expand, strategy="node_weight")
    dummy = np.full(BATCH, int(spec.get("absent_id", -1)), dtype=np.int64)
    sampled = []
    while sum(len(s) for s in sampled) < draws:
        sampled.append(sampler.get(dummy).ids.reshape(-1))
    ids, counts = np.unique(np.concatenate(sampled)[:draws], return_counts=True)
    out["node_weight"] = {"ids": ids.tolist(), "counts": counts.tolist(), "draws": draws}

    # Conditional negative sampling over pos_edge (NegativeSamplerV2 / HardNegativeSamplerV2).
    pairs = np.asarray(spec["cond_pairs"], dtype=np.int64).reshape(-1, 2)
    cond = g.negative_sampler("edge", int(spec["cond_expand"]), strategy="random", conditional=True)
    cond_out = []
    cond_batch = int(spec.get("cond_batch", 16))
    for start in range(0, len(pairs), cond_batch):
        chunk = pairs[start:start + cond_batch]
        nodes = cond.get(chunk[:, 0], chunk[:, 1])
        cond_out.extend(nodes.ids.reshape(len(chunk), -1).tolist())
    out["conditional"] = {"pairs": pairs.tolist(), "samples": cond_out}

    # Many conditional draws for one (user, positive) pair: how evenly the V2 samplers' easy
    # negatives cover the pos_edge item pool.
    if spec.get("cond_uniform_pair"):
        user, item = spec["cond_uniform_pair"]
        sampler = g.negative_sampler("edge", 1000, strategy="random", conditional=True)
        drawn = [sampler.get(np.array([user], dtype=np.int64), np.array([item], dtype=np.int64)).ids.reshape(-1)
                 for _ in range(int(spec["cond_uniform_draws"]) // 1000)]
        ids, counts = np.unique(np.concatenate(drawn), return_counts=True)
        out["conditional_uniform"] = {"pair": [user, item], "ids": ids.tolist(), "counts": counts.tolist()}

    g.close()
    out["seconds"] = time.time() - started
    with open(out_path, "w") as f:
        json.dump(out, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
