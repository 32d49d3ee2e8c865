"""Render the report's numbers as one self-contained HTML page.

Charts are matplotlib figures inlined as SVG (text kept as text, so it scales and stays crisp); no
script, no external file, no network: the page opens from a file:// URL. CSS makes figures and
tables fit a laptop or a phone-width screen.
"""

from __future__ import annotations

import html
import io
import json
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["render_html"]

NEG, WIN, POS, ACCENT = "#d1495b", "#30638e", "#edae49", "#00798c"

CSS = """
:root { --fg: #1d2330; --muted: #5b6472; --line: #d9dde3; --bg: #ffffff; --card: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
main { max-width: 980px; margin: 0 auto; padding: 1rem 1rem 3rem; }
h1 { font-size: 1.6rem; margin: .5rem 0 .25rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .5rem; padding-top: .5rem; border-top: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.25rem 0 .25rem; }
p.path, .muted { color: var(--muted); overflow-wrap: anywhere; }
nav ul { display: flex; flex-wrap: wrap; gap: .25rem 1rem; padding: 0; list-style: none; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(9.5rem, 1fr)); gap: .6rem; margin: 1rem 0; }
.card { background: var(--card); border-radius: 8px; padding: .6rem .8rem; }
.card .v { font-size: 1.3rem; font-weight: 600; }
.card .k { color: var(--muted); font-size: .85rem; }
figure { margin: 1rem 0; }
figure svg { width: 100%; height: auto; display: block; min-width: 560px; }  /* narrower: scroll sideways */
figcaption { color: var(--muted); font-size: .9rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .9rem; margin: .5rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: .25rem .6rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: .85rem; overflow-wrap: anywhere; }
@media (max-width: 600px) { body { font-size: 15px; } main { padding: .5rem .6rem 2rem; } h1 { font-size: 1.3rem; } }
"""


def _svg(fig: plt.Figure, key: str) -> str:
    """The figure as an inline <svg> (ids salted by ``key``: several SVGs share one document)."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": key}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", buf.getvalue(), flags=re.S)  # a timestamp: same input, same page
    start = text.index("<svg")
    return f'<svg role="img" aria-label="{html.escape(key)}"' + text[start + 4 :]


def _figure(fig: plt.Figure, key: str, caption: str) -> str:
    return (f'<figure id="fig-{key}" class="chart"><div class="scroll">{_svg(fig, key)}</div>'
            f"<figcaption>{caption}</figcaption></figure>")


def _fig(panels: int = 1, height: float = 3.2) -> tuple[plt.Figure, Any]:
    with plt.style.context("default"):
        fig, axes = plt.subplots(1, panels, figsize=(9.2, height))  # ~1:1 with the page's 980 px column
    for ax in np.atleast_1d(axes):
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def _axes(ax: Any, xlabel: str, ylabel: str, fontsize: int | None = 8) -> None:
    """A panel's axis labels and its legend (``fontsize`` None: matplotlib's)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=fontsize)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _cards(items: list[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}</div></div>'
        for k, v in items) + "</div>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{html.escape(_fmt(c))}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
        else f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{html.escape(title)}</h2>{body}</section>'


# ------------------------------------------------------------------------------------ mined output
def _score_chart(s: dict[str, Any]) -> str:
    score = s["score"]
    edges = np.asarray(score["edges"])
    neg = np.asarray(score["negatives"], dtype=float)
    fig, ax = _fig()
    ax.bar(edges[:-1], neg / max(neg.sum(), 1), width=np.diff(edges), align="edge", color=NEG, alpha=0.75,
           label="chosen negatives")
    if score.get("window"):
        ax.stairs(score["window"], edges, color=WIN, linewidth=2, label="whole window (sampled users)")
    _axes(ax, "score (last bin: that score and above)", "share", fontsize=None)
    return _figure(fig, "score", "Scores of the chosen negatives against every item of the rank window. Chosen "
                   "negatives to the right of the window are harder than a uniform draw from it.")


def _rank_chart(s: dict[str, Any]) -> str:
    rank, window = s["rank"], s["window"]
    edges = np.asarray(rank["bucket_edges"])
    neg = np.asarray(rank["negatives"], dtype=float)
    fig, (a, b) = _fig(2)
    a.bar(edges[:-1], neg / max(neg.sum(), 1), width=np.diff(edges), align="edge", color=NEG, alpha=0.75,
          label="chosen negatives")
    a.axhline(1 / len(neg), color=WIN, linewidth=2, label="whole window")
    _axes(a, "rank among non-positives", "share")
    centers = (edges[:-1] + edges[1:]) / 2
    means = [np.nan if v is None else v for v in rank["mean_score"]]
    b.plot(centers, means, "o", color=NEG, markersize=4, label="chosen negatives")
    if window.get("ranks"):
        b.plot(window["ranks"], [np.nan if v is None else v for v in window["score_by_rank"]], color=WIN,
               linewidth=2, label="whole window")
    _axes(b, "rank among non-positives", "mean score")
    return _figure(fig, "rank", "Left: where in the window the chosen negatives sit (the window itself is one "
                   "item per rank: flat). Right: mean score at each rank: how fast hardness falls off "
                   "with rank.")


def _margin_chart(s: dict[str, Any]) -> str:
    m = s["margin"]
    if not m:
        return '<p class="muted">No margin sample: the output has no parquet table or no user has positives.</p>'
    edges = np.asarray(m["edges"])
    fig, ax = _fig()
    ax.bar(edges[:-1], m["negatives"], width=np.diff(edges), align="edge", color=NEG, alpha=0.75,
           label="chosen negatives")
    ax.stairs(m["window"], edges, color=WIN, linewidth=2, label="whole window")
    if edges[0] <= 0 <= edges[-1]:
        ax.axvline(0, color="black", linestyle="--", linewidth=1, label="user's median positive")
    _axes(ax, "negative's score − the user's median positive score", "share")
    return _figure(fig, "margin", f"Margins against the user's own positives ({m['negative_rows']:,} negatives "
                   f"of {s['window'].get('sample_users', 0):,} sampled users). Right of 0: a negative "
                   f"scored above the user's typical positive ({_pct(m['share_above_median_positive'])} of them); "
                   f"{_pct(m['share_above_min_positive'])} score above the user's weakest positive.")


def _users_chart(s: dict[str, Any]) -> str:
    u = s["users"]
    labels = ["complete"] + [f"short: {k}" for k in u["short"]] + [f"empty: {k}" for k in u["empty"]]
    values = [u["complete"] or 0, *u["short"].values(), *u["empty"].values()]
    colors = [ACCENT] + [POS] * len(u["short"]) + [NEG] * len(u["empty"])
    fig, (a, b) = _fig(2)
    bars = a.barh(labels[::-1], values[::-1], color=colors[::-1])
    a.bar_label(bars, labels=[f"{v:,}" for v in values[::-1]], fontsize=8, padding=2)
    a.margins(x=0.15)
    a.set_xlabel("users")
    counts = {int(k): v for k, v in u["negatives_per_user"].items()}
    empty = sum(u["empty"].values())
    if empty:
        counts[0] = counts.get(0, 0) + empty
    b.bar(list(counts), list(counts.values()), color=WIN)
    b.axvline(u["needed"], color="black", linestyle="--", linewidth=1, label=f"asked for: {u['needed']}")
    b.set_xlabel("negatives per user")
    b.set_ylabel("users")
    if counts:
        b.set_yscale("log")
    b.legend(fontsize=8)
    return _figure(fig, "users", "Left: users that got every negative asked for, and why the others got fewer "
                   "(catalog: too few non-positive items; index: an approximate index returned too few; "
                   "filters: score caps or margins removed them; item-cap: --max-item-negatives). "
                   "Right: negatives per user.")


def _popularity_chart(s: dict[str, Any]) -> str:
    p = s["popularity"]
    fig, (a, b) = _fig(2)
    x = np.arange(1, 11)
    a.bar(x - 0.2, p["deciles"]["negatives"], 0.4, color=NEG, label="mined negatives")
    a.bar(x + 0.2, p["deciles"]["positives"], 0.4, color=POS, label="positives")
    a.set_xticks(x)
    _axes(a, "catalog decile by popularity (1 = most popular)", "share of rows")
    grid = np.linspace(0, 1, len(p["lorenz"]["negatives"]))
    b.plot(grid, p["lorenz"]["negatives"], color=NEG, linewidth=2, label=f"mined negatives (Gini {_fmt(p['gini_negatives'], 3)})")
    b.plot(grid, p["lorenz"]["positives"], color=POS, linewidth=2, label=f"positives (Gini {_fmt(p['gini_positives'], 3)})")
    b.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle=":", label="every item equal")
    _axes(b, "share of catalog items (least used first)", "share of rows")
    return _figure(fig, "popularity", "Left: which popularity deciles of the catalog the mined negatives come "
                   "from, against the positives. Right: Lorenz curves; the further below the diagonal, the "
                   "more the rows concentrate on few items.")


def _per_item_chart(s: dict[str, Any]) -> str:
    per = s["popularity"]["per_item"]
    edges = np.asarray(per["edges"], dtype=float)
    fig, ax = _fig()
    if len(edges) > 1:
        ax.bar(edges[:-1], per["items"], width=np.diff(edges), align="edge", color=NEG, alpha=0.8)
    if sum(per["items"]):  # log axes need something to show
        ax.set_xscale("log")
        ax.set_yscale("log")
    if per["cap"]:
        ax.axvline(per["cap"], color="black", linestyle="--", linewidth=1.5, label=f"--max-item-negatives {per['cap']}")
        ax.legend(fontsize=8)
    ax.set_xlabel("users given the item as a negative")
    ax.set_ylabel("items")
    cap = (f" {per['items_at_cap']:,} items reach the cap of {per['cap']}." if per["cap"]
           else " No --max-item-negatives cap was set.")
    return _figure(fig, "per-item", f"How many users got each mined item as a negative (max {per['max']:,})." + cap)


def _fn_chart(s: dict[str, Any]) -> str:
    fn = s["false_negatives"]
    edges = np.asarray(fn["bucket_edges"])
    fig, ax = _fig()
    rates = [np.nan if r is None else r for r in fn["rate_by_bucket"]]
    ax.bar(edges[:-1], rates, width=np.diff(edges), align="edge", color=NEG, alpha=0.8, label="by rank bucket")
    if fn["rate"] is not None:
        ax.axhline(fn["rate"], color="black", linestyle="--", linewidth=1, label=f"all: {_pct(fn['rate'], 2)}")
    _axes(ax, "rank among non-positives", "false-negative rate")
    return _figure(fig, "false-negatives", "Share of the chosen negatives that are held-out positives of their "
                   f"user in {html.escape(fn['test'])}, by rank: the top of the window holds the most.")


def _mined_sections(s: dict[str, Any], prefix: str = "", title: str = "") -> list[tuple[str, str, str]]:
    u, p = s["users"], s["popularity"]
    lo, hi = s["rank_window"]
    cards = [("rows", _fmt(s["rows"])), ("rank window", f"{lo}:{hi}"),
             ("users complete", f"{_fmt(u['complete'])} / {_fmt(u['total'])}"),
             ("users short / empty", f"{sum(u['short'].values()):,} / {sum(u['empty'].values()):,}"),
             ("median score", _fmt(s["score"]["summary"].get("median"))),
             ("distinct items", f"{p['distinct_mined_items']:,} ({_pct(p['distinct_share'])})"),
             ("Gini, negatives", _fmt(p["gini_negatives"], 3))]
    if s.get("margin"):
        cards.append(("above median positive", _pct(s["margin"]["share_above_median_positive"])))
    if s.get("false_negatives"):
        cards.append(("false-negative rate", _pct(s["false_negatives"]["rate"], 2)))
    top = _table(["items", "share of mined negatives", "share of positives"],
                 [[k, _pct(v["negatives"]), _pct(v["positives"])] for k, v in p["top_shares"].items()])
    sections = [
        (f"{prefix}overview", "Overview", _cards(cards)),
        (f"{prefix}hardness", "Hardness: scores and ranks", _score_chart(s) + _rank_chart(s)),
        (f"{prefix}margins", "Margins against the user's positives", _margin_chart(s)),
        (f"{prefix}users", "Users: complete, short, empty", _users_chart(s)),
        (f"{prefix}popularity", "Popularity of the mined items",
         _popularity_chart(s) + "<h3>Share held by the most popular items</h3>" + top + _per_item_chart(s)),
    ]
    if s.get("false_negatives"):
        sections.append((f"{prefix}false-negatives", "False negatives", _fn_chart(s)))
    m = s["manifest"]
    options = _table(["option", "value"], [[k, json.dumps(v) if not isinstance(v, str) else v]
                                           for k, v in (m.get("options") or {}).items()])
    inputs = _table(["input", "path", "bytes", "sha256"],
                    [[k, v["path"], v["bytes"], v["sha256"][:16] + "…"] for k, v in (m.get("inputs") or {}).items() if v])
    timings = _table(["stage", "seconds"], [[k, v] for k, v in s["timings"].items()])
    versions = _table(["package", "version"], [[k, v] for k, v in (m.get("versions") or {}).items()])
    command = html.escape(" ".join(m.get("command") or []))
    sections.append((f"{prefix}manifest", "Options and inputs",
                     f"<p><code>{command}</code></p><p class='muted'>{html.escape(str(m.get('started_at')))} → "
                     f"{html.escape(str(m.get('finished_at')))}</p>" + options + "<h3>Inputs</h3>" + inputs
                     + "<h3>Seconds per stage</h3>" + timings + "<h3>Versions</h3>" + versions))
    return [(k, title + t, b) for k, t, b in sections]


# ---------------------------------------------------------------------------------------------- run
def _metrics_chart(s: dict[str, Any]) -> str:
    rounds = s["rounds"]
    x = [r["round"] for r in rounds]
    fig, axes = _fig(2)
    best = s["best"]["round"] if s.get("best") else None
    for ax, metric in zip(axes, ("recall", "ndcg"), strict=True):
        keys = sorted({(split, k) for r in rounds for split, m in r["metrics"].items() for k in m if k.startswith(metric)})
        for split, key in keys:
            ys = [r["metrics"].get(split, {}).get(key, np.nan) for r in rounds]
            ax.plot(x, ys, marker="o", linestyle="-" if split == "valid" else "--", label=f"{split} {key}")
            if best is not None and best in x:
                ax.plot([best], [ys[x.index(best)]], marker="*", markersize=14, color="black", linestyle="none")
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", linewidth=1.5)
        ax.set_xticks(x)
        ax.set_xlabel("round")
        ax.set_title("Recall@K" if metric == "recall" else "NDCG@K", fontsize=10)
        ax.legend(fontsize=7, loc="best")
    caption = ("Validation (solid) and test (dashed) per round; round 0 is trained without hard negatives. "
               + (f"★ and the dotted line: the best round by validation {s['best']['metric']} (round {best})."
                  if best is not None else "No validation split: no best round."))
    return _figure(fig, "run-metrics", caption)


def _churn_chart(s: dict[str, Any]) -> str:
    pairs = [(r["round"], r["churn"]) for r in s["rounds"] if r.get("churn")]
    if not pairs:
        return '<p class="muted">Fewer than two rounds mined: nothing to compare.</p>'
    fig, ax = _fig()
    bars = ax.bar([f"{r - 1}→{r}" for r, _ in pairs], [c["mean_overlap"] or 0 for _, c in pairs], color=ACCENT,
                  width=0.5)
    ax.bar_label(bars, labels=[_fmt(c["mean_overlap"], 3) for _, c in pairs], padding=2)
    ax.set_xlim(-0.75, len(pairs) - 0.25)
    ax.set_ylim(0, 1)
    ax.set_xlabel("rounds")
    ax.set_ylabel("mean overlap (Jaccard)")
    return _figure(fig, "churn", "How much each user's negatives stay the same from one round to the next: the "
                   "mean over users of |A∩B| / |A∪B|. Low overlap: the new model moved, and so did its hard items.")


def _drift_chart(s: dict[str, Any]) -> str:
    mined = [(r["round"], r["mined"]) for r in s["rounds"] if r.get("mined")]
    if not mined:
        return '<p class="muted">No round mined.</p>'
    x = [r for r, _ in mined]
    fig, (a, b) = _fig(2)
    for ax, key in ((a, "score"), (b, "rank")):
        med = [m[key].get("median", np.nan) for _, m in mined]
        ax.fill_between(x, [m[key].get("p05", np.nan) for _, m in mined], [m[key].get("p95", np.nan) for _, m in mined],
                        color=NEG, alpha=0.2, label="5th–95th percentile")
        ax.plot(x, med, marker="o", color=NEG, label="median")
        ax.set_xticks(x)
        ax.set_xlabel("round")
        ax.set_ylabel(key)
    b.plot(x, [m["rank_window"][0] for _, m in mined], color=WIN, linestyle="--", label="window LO / HI")
    b.plot(x, [m["rank_window"][1] for _, m in mined], color=WIN, linestyle="--")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    return _figure(fig, "drift", "Hardness drift: the chosen negatives' score and rank per round (each round mines "
                   "with the previous round's model, so scores are on that model's scale).")


def _fn_rounds_chart(s: dict[str, Any]) -> str:
    rounds = [r for r in s["rounds"] if r["false_negative_rate"]]
    if not rounds:
        return '<p class="muted">No held-out split to measure false negatives on.</p>'
    fig, ax = _fig()
    splits = sorted({k for r in rounds for k in r["false_negative_rate"]})
    for split in splits:
        ys = [r["false_negative_rate"].get(split) for r in rounds]
        ax.plot([r["round"] for r in rounds], [np.nan if y is None else y for y in ys], marker="o", label=split)
    ax.set_xticks([r["round"] for r in rounds])
    _axes(ax, "round", "false-negative rate")
    return _figure(fig, "fn-rounds", "Share of each round's mined negatives that are held-out positives of their user.")


def _time_chart(s: dict[str, Any]) -> str:
    rounds = s["rounds"]
    x = np.array([r["round"] for r in rounds])
    stages = ["read", "index", "retrieve", "select", "write"]
    fig, ax = _fig()
    bottom = np.zeros(len(rounds))
    colors = [ACCENT, "#9bc1bc", WIN, POS, "#8d6a9f"]
    train = np.array([r["train_seconds"] or 0.0 for r in rounds])
    ax.bar(x, train, color=NEG, label="train")
    bottom += train
    for stage, color in zip(stages, colors, strict=True):
        vals = np.array([(r.get("mined") or {}).get("timings", {}).get(stage, 0.0) for r in rounds])
        if vals.any():
            ax.bar(x, vals, bottom=bottom, color=color, label=f"mine: {stage}")
            bottom += vals
    mined_total = np.array([sum((r.get("mined") or {}).get("timings", {}).get(k, 0.0) for k in stages) for r in rounds])
    other = np.maximum(np.array([r["mine_seconds"] or 0.0 for r in rounds]) - mined_total, 0)
    if other.any():
        ax.bar(x, other, bottom=bottom, color="#bbbbbb", label="window choice, FN rate")
    ax.set_xticks(x)
    ax.set_xlabel("round")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.22))  # below: never over a bar
    return _figure(fig, "time", "Seconds per stage and round (evaluation and export not included).")


def _run_sections(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    rounds = s["rounds"]
    best = s.get("best")
    cards = [("rounds", str(len(rounds)))]
    if best:
        gain = best.get("gain_over_round_0")
        cards += [("best round", str(best["round"])), (f"best valid {best['metric']}", _fmt(best["value"])),
                  ("gain over round 0", "–" if gain is None else f"{100 * gain:+.2f}%")]
        over_control = best.get("gain_over_control")
        cards.append(("gain over the --no-hard control", "no control run" if over_control is None
                      else f"{100 * over_control:+.2f}% (its best: round {best['control']['round']})"))
    header = ["round", *sorted({f"{split} {k}" for r in rounds for split, m in r["metrics"].items() for k in m})]
    rows = [[r["round"]] + [r["metrics"].get(h.split(" ")[0], {}).get(h.split(" ")[1]) for h in header[1:]]
            for r in rounds]
    control = sorted({f"{split} {k}" for r in rounds for split, m in (r.get("control") or {}).items() for k in m})
    if control:  # the --no-hard control's metrics beside the mined rounds'
        header += [f"control {h}" for h in control]
        for row, r in zip(rows, rounds, strict=True):
            row += [(r.get("control") or {}).get(h.split(" ")[0], {}).get(h.split(" ")[1]) for h in control]
    table = _table(header, rows)
    sections = [
        ("overview", "Overview", _cards(cards)),
        ("metrics", "Recall and NDCG per round", _metrics_chart(s) + table),
        ("churn", "Churn between rounds", _churn_chart(s)),
        ("drift", "Hardness drift", _drift_chart(s)),
        ("fn-rounds", "False negatives per round", _fn_rounds_chart(s)),
        ("time", "Time per stage", _time_chart(s)),
    ]
    if s.get("latest_mined"):
        latest = s["latest_mined"]
        sections.append(("latest", f"Round {latest['round']}'s mined negatives",
                         f"<p class='muted'>The sections below describe <code>{html.escape(latest['path'])}</code>, "
                         "the last round's mined output.</p>"))
        sections += _mined_sections(latest, prefix="latest-", title=f"Round {latest['round']}: ")
    return sections


def render_html(stats: dict[str, Any]) -> str:
    """The whole page for :func:`hnmine.report.stats.build_report`'s numbers."""
    if stats["kind"] == "run":
        title, sections = "hnmine run report", _run_sections(stats)
    else:
        title, sections = "hnmine mined-output report", _mined_sections(stats)
    nav = "<nav><ul>" + "".join(f'<li><a href="#{k}">{html.escape(t)}</a></li>' for k, t, _ in sections) + "</ul></nav>"
    body = "".join(_section(k, t, b) for k, t, b in sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{title}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{title}</h1><p class='path'>{html.escape(stats['path'])}</p>{nav}{body}</main></body></html>\n"
    )
