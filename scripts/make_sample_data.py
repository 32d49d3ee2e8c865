"""Derive sample_data/ from ../shared/datasets/gowalla (LightGCN split): every 10th user.

Keeps the sampled users' train and test lines as they are (original Gowalla remapped ids, so user
and item ids are sparse, not row numbers) and an item feature table with each item's original
Gowalla location id and a popularity bucket. Run from the repository root:

    python scripts/make_sample_data.py [--source ../shared/datasets/gowalla] [--every 10]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "gowalla")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "sample_data")
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    kept: dict[str, list[str]] = {}
    for split in ("train", "test"):
        lines = []
        for line in (args.source / f"{split}.txt").read_text().splitlines():
            tokens = line.split()
            if tokens and int(tokens[0]) % args.every == 0:
                lines.append(" ".join(tokens))
        kept[split] = lines
        (args.out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    popularity = Counter(item for line in kept["train"] + kept["test"] for item in line.split()[1:])
    org_ids = dict(
        reversed(line.split()) for line in (args.source / "item_list.txt").read_text().splitlines()[1:] if line.strip()
    )
    rows = ["id,location_id,popularity_bucket"]
    for item in sorted(popularity, key=int):
        bucket = min(len(str(popularity[item])), 3)  # 1: <10, 2: <100, 3: >=100 interactions
        rows.append(f"{item},{org_ids[item]},{bucket}")
    (args.out / "item_features.csv").write_text("\n".join(rows) + "\n")
    print(f"{len(kept['train'])} users, {len(popularity)} items -> {args.out}")


if __name__ == "__main__":
    main()
