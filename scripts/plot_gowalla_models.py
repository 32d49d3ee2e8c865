"""docs/img/gowalla-models.png: Gowalla test Recall@20 / NDCG@20 of hnmine's models (session 8 measurements).

The figures are the `hnmine evaluate` outputs recorded in docs/training.md (session 8) and the published
baselines of ../shared/datasets/README.md; rerun scripts/gowalla_blend.sh to measure them again.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MODELS = [  # (label, recall@20, ndcg@20, published?)
    ("MF-BPR\n(published)", 0.1291, 0.1109, True),
    ("hnmine svd\nfactors d=64", 0.1194, 0.0973, False),
    ("hnmine train\nd=64", 0.1709, 0.1350, False),
    ("LightGCN\n(published)", 0.1830, 0.1554, True),
    ("SimpleX\n(published)", 0.1872, 0.1557, True),
    ("hnmine svd\nlowpass d=1024", 0.1874, 0.1566, False),
    ("hnmine blend\n0.1 lowpass", 0.1916, 0.1590, False),
]

fig, ax = plt.subplots(figsize=(9, 3.8))
x = range(len(MODELS))
colors = ["#bbbbbb" if published else "#3b75af" for *_, published in MODELS]
ax.bar([i - 0.2 for i in x], [m[1] for m in MODELS], 0.4, color=colors, label="Recall@20")
ax.bar([i + 0.2 for i in x], [m[2] for m in MODELS], 0.4, color=colors, alpha=0.55, label="NDCG@20")
for i, m in enumerate(MODELS):
    ax.text(i - 0.2, m[1] + 0.002, f"{m[1]:.4f}", ha="center", fontsize=7)
ax.axhline(0.19, color="#c44e52", lw=1, ls="--")
ax.text(-0.45, 0.1915, "target 0.19", color="#c44e52", fontsize=8, ha="left", va="bottom")
ax.set_xticks(list(x), [m[0] for m in MODELS], fontsize=8)
ax.set_ylim(0, 0.215)
ax.set_ylabel("test split")
ax.set_title("Gowalla (LightGCN split): Recall@20 (solid) and NDCG@20 (light); grey = published", fontsize=9)
fig.tight_layout()
fig.savefig("docs/img/gowalla-models.png", dpi=110)
