"""hnmine report: its numbers against independent computations, the CLI, and the page in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hnmine.evaluate import false_negative_rate
from hnmine.io.positives import read_positives
from hnmine.mining.retrieval import Window
from hnmine.mining.sketch import WindowSketch
from hnmine.report.stats import build_report, churn
from tests.conftest import SAMPLE

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
MINED_SECTIONS = ["overview", "hardness", "margins", "users", "popularity", "false-negatives", "manifest"]
MINED_FIGURES = ["score", "rank", "margin", "users", "popularity", "per-item", "false-negatives"]
RUN_SECTIONS = ["overview", "metrics", "churn", "drift", "fn-rounds", "time", "latest-hardness"]
RUN_FIGURES = ["run-metrics", "churn", "drift", "fn-rounds", "time", "score", "popularity"]


@pytest.fixture(scope="module")
def mined(sample_embeddings, tmp_path_factory) -> Path:
    """sample_data mined through the CLI with --report and an item cap (so some users come out short)."""
    from hnmine.cli.main import app
    from typer.testing import CliRunner

    user, item = sample_embeddings
    out = tmp_path_factory.mktemp("report") / "mined"
    result = CliRunner().invoke(app, [
        "mine", "--users", str(user), "--items", str(item), "--positives", str(SAMPLE / "train.txt"),
        "--rank-window", "101:500", "--num-hard", "10", "--max-item-negatives", "20", "--out", str(out),
        "--quiet", "--report"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_mine_report_writes_html_beside_the_tables(mined):
    page = (mined / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == len(MINED_FIGURES) - 1  # no --test
    # nothing fetched: no script, stylesheet link, external image or font
    assert not re.search(r"<script|<link|<img|@import|url\((?!#)|src=|href=\"(?!#)", page)


def test_mined_numbers_match_the_tables(mined):
    stats = build_report(mined, SAMPLE / "test.txt", batch_rows=997)  # batches split users' rows
    edges = pl.read_parquet(mined / "hard_neg_edge.parquet")
    manifest = json.loads((mined / "manifest.json").read_text())
    assert stats["rows"] == edges.height == manifest["summary"]["rows"]["hard_neg_edge"]
    assert sum(stats["rank"]["negatives"]) == edges.height
    per_user = edges.group_by("user_id").len()["len"].value_counts().sort("len")
    assert stats["users"]["negatives_per_user"] == {str(k): v for k, v in per_user.iter_rows()}
    assert stats["users"]["short"] == manifest["summary"]["users_short"]
    pop = stats["popularity"]
    assert pop["distinct_mined_items"] == edges["item_id"].n_unique()
    assert pop["per_item"]["max"] == edges.group_by("item_id").len()["len"].max() <= 20
    assert pop["per_item"]["items_at_cap"] == int((edges.group_by("item_id").len()["len"] == 20).sum())
    assert 0 < pop["gini_positives"] < 1 and 0 < pop["gini_negatives"] < 1
    assert sum(pop["deciles"]["negatives"]) == pytest.approx(1.0)
    # the false-negative rate agrees with hnmine.evaluate's own join
    fn = false_negative_rate(mined / "hard_neg_edge.parquet", read_positives(SAMPLE / "test.txt"))
    assert sum(stats["false_negatives"]["heldout"]) == fn["heldout_positives"] > 0
    assert stats["false_negatives"]["rate"] == pytest.approx(fn["rate"])
    # window sample: every sample_data user (fewer than the cap), quantiles ordered, margins recorded
    window = manifest["summary"]["window"]
    assert window["sample_users"] == manifest["summary"]["users"]
    q = np.asarray(window["score_quantiles"]["values"])
    assert (np.diff(q) >= 0).all() and q[0] <= edges["score"].min() and q[-1] >= edges["score"].max()
    margin = stats["margin"]
    assert margin["negative_rows"] == edges.height
    assert sum(margin["negatives"]) == pytest.approx(1.0) and sum(margin["window"]) == pytest.approx(1.0)
    assert 0 <= margin["share_above_min_positive"] <= 1


def test_numbers_do_not_depend_on_batch_size(mined):
    small = build_report(mined, SAMPLE / "test.txt", batch_rows=1000)
    large = build_report(mined, SAMPLE / "test.txt", batch_rows=1 << 20)
    assert json.dumps(small, sort_keys=True) == json.dumps(large, sort_keys=True)


def test_sketch_does_not_depend_on_chunking(tmp_path):
    rng = np.random.default_rng(0)
    n, width, dim = 300, 50, 8
    scores = -np.sort(-rng.random((n, width)), axis=1).astype(np.float32)
    scores[:5, 40:] = -np.inf  # short windows
    items = np.where(np.isfinite(scores), rng.integers(0, 100, (n, width)), -1)
    queries = rng.standard_normal((n, dim)).astype(np.float32)
    item_vectors = rng.standard_normal((100, dim)).astype(np.float32)
    counts = rng.integers(0, 4, n)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    pos_rows = rng.integers(0, 100, indptr[-1])
    ids, keys = np.arange(n) * 7, rng.integers(0, 2**63, n).astype(np.uint64)
    summaries = []
    for chunk in (n, 64, 7):
        sketch = WindowSketch(lo=11, width=width, sample=100, columns=16)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            window = Window(items[start:stop], scores[start:stop], np.full(stop - start, 999), 11)
            sub_ptr = indptr[start : stop + 1] - indptr[start]
            sketch.add(window, ids[start:stop], keys[start:stop], queries[start:stop], item_vectors, sub_ptr,
                       pos_rows[indptr[start] : indptr[stop]])
        summaries.append(sketch.summary(None))
    assert summaries[0] == summaries[1] == summaries[2]
    assert summaries[0]["sample_users"] == 100 and len(summaries[0]["ranks"]) == 16


def test_cli_json_and_errors(cli, mined, tmp_path):
    result = cli("report", mined, "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads(json.dumps(build_report(mined), default=str))
    out = tmp_path / "r.json"
    assert cli("report", mined, "--format", "json", "--out", out).exit_code == 0
    assert json.loads(out.read_text())["kind"] == "mined"
    bad = cli("report", SAMPLE)
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "hnmine: error:" in bad.stderr
    assert cli("report", mined, "--format", "pdf").exit_code == 2


# ------------------------------------------------------------------------------------ real browser
def open_in_chromium(page: Path, screenshot: Path, width: int = 1280) -> dict:
    """Open ``page`` from a file:// URL in headless Chromium; what rendered, console errors, a screenshot."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hnmine-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                f"--window-size={width},900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        # a phone-width viewport the way DevTools emulates one (a headless window has a minimum width)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600})
        driver.get(page.absolute().as_uri())
        found = driver.execute_script("""
            const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
            return {
              sections: [...document.querySelectorAll('section')].map(s => s.id),
              figures: Object.fromEntries([...document.querySelectorAll('figure.chart')].map(f =>
                  [f.id.slice(4), [...box(f.querySelector('svg')), f.querySelectorAll('svg path, svg use').length]])),
              overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
              height: document.body.scrollHeight,
            };""")
        found["console"] = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": min(found["height"] + 50, 12000), "deviceScaleFactor": 1, "mobile": width < 600})
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    if os.environ.get("HNMINE_REPORT_SCREENSHOTS"):  # where docs/img/report-*.png come from
        shutil.copy(screenshot, Path(os.environ["HNMINE_REPORT_SCREENSHOTS"]) / screenshot.name)
    return found


def check_rendered(found: dict, sections: list[str], figures: list[str], width: int) -> None:
    assert found["console"] == []
    assert set(sections) <= set(found["sections"])
    for key in figures:
        w, h, marks = found["figures"][key]
        # the page's column on a laptop; at least 560 px on a phone (the figure scrolls sideways there)
        assert 0.5 * min(width, 980) < w <= max(width, 560) and h > 100 and marks > 5, (key, w, h, marks)
    assert found["overflow"] <= 0  # the page itself is never wider than the screen


@pytest.mark.parametrize("width", [1280, 390])
def test_mined_report_renders_in_chromium(mined, tmp_path, width):
    page = tmp_path / "report.html"
    assert build_report(mined, SAMPLE / "test.txt")  # and through the CLI:
    from hnmine.cli.main import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["report", str(mined), "--test", str(SAMPLE / "test.txt"), "--out", str(page)])
    assert result.exit_code == 0, result.output
    shot = tmp_path / f"mined-{width}.png"
    found = open_in_chromium(page, shot, width)
    check_rendered(found, MINED_SECTIONS, MINED_FIGURES, width)
    assert shot.stat().st_size > 20_000


# -------------------------------------------------------------------------------------------- run
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 3-round run on sample_data with 1-epoch rounds: two mined rounds to compare."""
    from hnmine.cli.main import app
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("report-run") / "run"
    result = CliRunner().invoke(app, [
        "run", "--positives", str(SAMPLE / "train.txt"), "--test", str(SAMPLE / "test.txt"), "--iterations", "3",
        "--epochs", "1", "--refine-epochs", "1", "--dim", "16", "--out", str(out), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_run_report(run_dir, tmp_path):
    assert (run_dir / "report.html").exists()  # hnmine run wrote it
    stats = build_report(run_dir)
    assert [r["round"] for r in stats["rounds"]] == [0, 1, 2]
    assert stats["best"]["round"] == json.loads((run_dir / "best_round.json").read_text())["round"]
    assert set(stats["rounds"][1]["false_negative_rate"]) == {"valid", "test"}
    # churn against a join of the two rounds' tables
    a, b = (run_dir / f"round_0{r}" / "mined" / "hard_neg_edge.parquet" for r in (1, 2))
    ta, tb = pl.read_parquet(a), pl.read_parquet(b)
    inter = ta.join(tb, on=["user_id", "item_id"]).group_by("user_id").len().rename({"len": "i"})
    sizes = ta.group_by("user_id").len().join(tb.group_by("user_id").len(), on="user_id", how="full", coalesce=True)
    jac = sizes.join(inter, on="user_id", how="left").fill_null(0).with_columns(
        (pl.col("i") / (pl.col("len") + pl.col("len_right") - pl.col("i"))).alias("j"))
    got = stats["rounds"][2]["churn"]
    assert got["users"] == jac.height and got["mean_overlap"] == pytest.approx(jac["j"].mean())
    assert churn(a, b, run_dir / "round_02" / "mined" / "user.parquet", batch_rows=333) == got
    assert stats["latest_mined"]["round"] == 2
    found = open_in_chromium(run_dir / "report.html", tmp_path / "run.png", 1280)
    check_rendered(found, RUN_SECTIONS, RUN_FIGURES, 1280)


def test_output_without_window_sample_still_reports(mined, tmp_path):
    """An output whose manifest has no summary.window (mined before it was recorded)."""
    old = tmp_path / "old"
    shutil.copytree(mined, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["summary"]["window"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    stats = build_report(old)
    assert stats["margin"] is None and stats["score"]["window"] is None and stats["rows"] > 0
    from hnmine.report.html import render_html

    page = render_html(stats)
    assert page.count('class="chart"') == len(MINED_FIGURES) - 2  # no margin chart, no false negatives


def test_output_with_no_negatives(mined, tmp_path):
    """Every user empty (e.g. a --max-score below every score): the report says so instead of failing."""
    empty = tmp_path / "empty"
    shutil.copytree(mined, empty)
    pl.read_parquet(mined / "hard_neg_edge.parquet").clear().write_parquet(empty / "hard_neg_edge.parquet")
    stats = build_report(empty, SAMPLE / "test.txt")
    assert stats["rows"] == 0 and stats["popularity"]["distinct_mined_items"] == 0
    assert stats["false_negatives"]["rate"] is None and stats["users"]["negatives_per_user"] == {}
    from hnmine.report.html import render_html

    assert render_html(stats).count('class="chart"') == len(MINED_FIGURES)
