"""csr.tables, csr.figures and reproduce/make_tables.py on fake run folders (no training).

Fake runs are written the way csr.train.run writes them: history.csv per epoch and result.json with
best/last from csr.train.summarize over the final phase; the expected table values are computed
by hand from the per-epoch accuracies.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from csr import experiments as E
from csr import figures, rundir, tables
from csr.train import summarize

REPO = Path(__file__).resolve().parents[1]
QUICK = E.PROFILES["quick"]  # folds 1-2: small fake folders
PAPER = E.PROFILES["paper"]


def fake_run(root, spec, test_acc, warmup=0, train_acc=None):
    """A finished run: `warmup` warm-up epochs then the final phase; test_acc covers every epoch."""
    run_dir = rundir.path(root, spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = "supervised" if spec.method.startswith("supervised") else "joint"
    phases = ["warmup"] * warmup + [final] * (len(test_acc) - warmup)
    train_acc = train_acc if train_acc is not None else [min(1.0, a + 0.2) for a in test_acc]
    pd.DataFrame({"epoch": range(len(test_acc)), "phase": phases, "accuracy": train_acc,
                  "test_accuracy": test_acc}).to_csv(run_dir / "history.csv", index=False)
    result = {"method": spec.method, **summarize(test_acc[warmup:], 20), "test_accuracy": test_acc,
              "data": {"target": spec.target, "unlabeled": spec.unlabeled, "classes": 10,
                       "unlabeled_clips": 0 if spec.unlabeled == "none" else 80}}
    (run_dir / "result.json").write_text(json.dumps(result))
    rundir.write_config(run_dir, rundir.RunConfig(spec, num_classes=10))
    return result


def cell(table, **match):
    found = [c for c in E.cells(table) if all(getattr(c, k) == v for k, v in match.items())]
    assert len(found) == 1, found
    return found[0]


def test_best_and_last20_mean_std_match_hand_computation(tmp_path):
    c_best = cell("table1", method="proposed", metric="best", fraction=0.5)
    c_last = cell("table1", method="proposed", metric="last", fraction=0.5)
    fold1, fold2 = E.runs_for_cell(c_best, PAPER)[:2]
    # Fold 1: 2 warm-up epochs (their 0.99 is the run's best), then 25 joint epochs.
    acc1 = [0.99, 0.5] + [0.5] * 5 + [0.8] * 19 + [0.9]
    # Fold 2: 30 joint epochs rising linearly; last 20 are 0.11..0.30.
    acc2 = [0.1, 0.1] + [round(0.01 * (i + 1), 2) for i in range(30)]
    fake_run(tmp_path, fold1, acc1, warmup=2)
    fake_run(tmp_path, fold2, acc2, warmup=2)
    best = tables.aggregate(c_best, tmp_path, PAPER)
    last = tables.aggregate(c_last, tmp_path, PAPER)
    # Hand values: best = max over every epoch (warm-up included), even though these result.json files
    # were written the old way (best over the final phase only); last = mean of the final 20 epochs.
    assert json.loads((rundir.path(tmp_path, fold1) / "result.json").read_text())["best"] == 0.9
    best1, best2 = 99.0, 30.0
    last1, last2 = (19 * 80.0 + 90.0) / 20, sum(range(11, 31)) / 20  # 80.5 and 20.5
    assert best.values == pytest.approx([best1, best2]) and best.folds == [1, 2]
    assert last.values == pytest.approx([last1, last2])
    assert best.mean == pytest.approx(64.5) and best.std == pytest.approx(34.5)  # population std
    assert last.mean == pytest.approx(50.5) and last.std == pytest.approx(30.0)
    sample = tables.aggregate(c_last, tmp_path, PAPER, ddof=1)
    assert sample.std == pytest.approx(math.sqrt(2) * 30.0)
    assert best.difference == pytest.approx(64.5 - 90.0)  # paper: 90.0 ± 1.4
    assert len(best.missing) == 3 and not best.complete
    assert [s.fold for s in best.missing] == [3, 4, 5]


def test_mean_std_conventions():
    assert tables.mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, np.std([1, 2, 3, 4])))
    assert tables.mean_std([1.0, 2.0, 3.0, 4.0], ddof=1)[1] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert math.isnan(tables.mean_std([5.0], ddof=1)[1])
    assert all(math.isnan(v) for v in tables.mean_std([]))
    assert tables.fmt(5.0, math.nan) == "5.0 ± n/a"


def test_table1_render_says_what_is_missing(tmp_path):
    specs = E.runs_for("table1", QUICK)
    skip = {s for s in specs if s.method == "proposed" and s.fraction == 0.1 and s.fold == 2}
    skip |= {s for s in specs if s.method == "supervised" and s.fraction == 0.25}
    started = next(s for s in specs if s.method == "supervised" and s.fraction == 0.25 and s.fold == 1)
    for i, spec in enumerate(specs):
        if spec not in skip:
            fake_run(tmp_path, spec, [0.5 + 0.01 * i] * 6)
    rundir.path(tmp_path, started).mkdir(parents=True)  # began, never finished
    text = tables.render("table1", tmp_path, QUICK)
    assert "missing (0/2 folds)" in text  # supervised 25 %: both folds absent
    assert "(1/2 folds)" in text  # proposed 10 %: one fold
    assert "**Missing runs (3)**" in text
    for spec in skip:
        assert f"`table1/{spec.run_id()}`" in text
    assert f"`table1/{started.run_id()}` (started, unfinished or failed: see `table1/{started.run_id()}.log`)" in text
    assert text.count("(not started)") == 2
    # The paper's numbers and the quoted rows are there; quoted "-" cells stay "-".
    assert "59.0 ± 5.0" in text and "95.2 ± 4.0" in text
    assert ("| Supervised [19] |  | paper (quoted, not run) | 67.8 ± 4.0 | 82.5 ± 5.7 | 88.3 ± 3.0 | - "
            "| 91.7 ± 2.0 |") in text
    assert "NOT comparable" in text  # the quick profile says so above the table
    row = next(ln for ln in text.splitlines() if ln.startswith("| Proposed | *best* | ours"))
    assert row.split(" | ")[3].endswith("± n/a (1/2 folds)")  # one fold: no spread to report


def test_table1_values_and_delta_rendered(tmp_path):
    c = cell("table1", method="supervised", metric="last", fraction=1.0)
    for spec, acc in zip(E.runs_for_cell(c, QUICK), (0.70, 0.74)):
        fake_run(tmp_path, spec, [acc] * 6)
    text = tables.render("table1", tmp_path, QUICK)
    row = next(ln for ln in text.splitlines() if ln.startswith("| Supervised | *last* | ours"))
    assert row.rstrip().endswith("| 72.0 ± 2.0 |")  # mean 72.0, population std 2.0
    rows = text.splitlines()
    delta = rows[rows.index(row) + 2]
    assert delta.startswith("|  |  | Δ") and delta.rstrip().endswith("| -0.3 |")  # 72.0 - 72.3


def test_table2_and_table3_share_runs_and_report_last(tmp_path):
    t1_cell = cell("table1", method="proposed", metric="last", fraction=1.0)
    for spec in E.runs_for_cell(t1_cell, QUICK):
        fake_run(tmp_path, spec, [0.6] * 4 + [0.9] * 2, warmup=0)
    esc50 = cell("table2", target="esc50", method="proposed")
    for spec, best_acc in zip(E.runs_for_cell(esc50, QUICK), (0.95, 0.99)):
        fake_run(tmp_path, spec, [0.8] * 5 + [best_acc])
    text2 = tables.render("table2", tmp_path, QUICK)
    esc10_row = next(ln for ln in text2.splitlines() if ln.startswith("| ESC10 | ESC40 |"))
    assert "| 70.0 ± 0.0 | 92.4 ± 2.5 | -22.4 |" in esc10_row  # last = mean of all 6 epochs
    esc50_row = next(ln for ln in text2.splitlines() if ln.startswith("| ESC50 | US8K |"))
    last1, last2 = (5 * 80 + 95) / 6, (5 * 80 + 99) / 6
    assert f"| {np.mean([last1, last2]):.1f} ± {np.std([last1, last2]):.1f} |" in esc50_row
    assert "missing (0/2 folds)" in text2  # US8K rows
    text3 = tables.render("ablation", tmp_path, QUICK)
    ours = next(ln for ln in text3.splitlines() if ln.startswith("| ours |"))
    assert ours.startswith(f"| ours | {np.mean([last1, last2]):.1f} ± ") and ours.count("missing (0/2 folds)") == 3
    assert "| paper | 83.5 ± 3.0 | 82.0 ± 3.0 | 79.5 ± 1.6 | 73.6 ± 1.0 |" in text3
    assert "ablation/esc50-us8k-no_mixing-frac1-fold1-seed0" in text3
    assert "table2/esc50-none-supervised_imagenet-frac1-fold2-seed0" in text3


def test_data_notes_flag_a_target_that_is_not_the_papers(tmp_path):
    esc50 = cell("table2", target="esc50", method="proposed")
    for spec in E.runs_for_cell(esc50, QUICK):
        fake_run(tmp_path, spec, [0.5] * 6)  # fake_run records 10 classes
    text = tables.render("table2", tmp_path, QUICK)
    assert "esc50 with unlabeled us8k: 10 classes, 80 unlabeled clips" in text
    assert "the real esc50 has 50 classes" in text


def test_read_result_names_the_broken_file(tmp_path):
    assert tables.read_result(tmp_path) is None
    (tmp_path / "result.json").write_text(json.dumps({"best": 0.5, "last": None}))
    with pytest.raises(ValueError, match=r"result.json: 'last' must be a finite number"):
        tables.read_result(tmp_path)
    (tmp_path / "result.json").write_text("{")
    with pytest.raises(ValueError, match="result.json: not valid JSON"):
        tables.read_result(tmp_path)


def test_load_history_checks_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="history.csv: no history"):
        tables.load_history(tmp_path)
    (tmp_path / "history.csv").write_text("epoch,accuracy\n1,0.5\n0,0.4\n")
    with pytest.raises(ValueError, match=r"history.csv: missing column\(s\) \['phase', 'test_accuracy'\]"):
        tables.load_history(tmp_path)
    (tmp_path / "history.csv").write_text("epoch,phase,accuracy,test_accuracy\n1,joint,0.5,0.3\n0,warmup,0.4,0.2\n")
    assert tables.load_history(tmp_path)["epoch"].tolist() == [0, 1]


# ------------------------------------------------------------------------------------------ figure
def test_mean_curves_average_folds_per_epoch():
    h1 = pd.DataFrame({"epoch": [0, 1, 2], "phase": ["warmup", "joint", "joint"],
                       "accuracy": [0.2, 0.4, 0.6], "test_accuracy": [0.1, 0.3, 0.5]})
    h2 = pd.DataFrame({"epoch": [0, 1, 2], "phase": ["warmup", "joint", "joint"],
                       "accuracy": [0.4, 0.6, 0.8], "test_accuracy": [0.3, 0.5, 0.7]})
    mean, joint = figures.mean_curves([h1, h2])
    assert mean["accuracy"].tolist() == pytest.approx([30.0, 50.0, 70.0])
    assert mean["test_accuracy"].tolist() == pytest.approx([20.0, 40.0, 60.0])
    assert joint == 1
    assert figures.mean_curves([h1.assign(phase="supervised")])[1] is None


@pytest.fixture
def drawn(monkeypatch):
    """The title and legend of every figure csr.figures closes (what the PNG shows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = []
    real_close = plt.close

    def close(fig):
        ax = fig.axes[0]
        legend = ax.get_legend()
        seen.append({"title": ax.get_title(),
                     "labels": [t.get_text() for t in legend.get_texts()] if legend else [],
                     "lines": len(ax.lines)})
        real_close(fig)

    monkeypatch.setattr(plt, "close", close)
    return seen


def test_figure3_written_with_missing_methods_named(tmp_path, drawn):
    import matplotlib.image

    for c in E.figure3_cells():
        if c.method == "supervised_imagenet":
            continue  # absent: must be named in the title
        specs = E.runs_for_cell(c, QUICK)
        for spec in specs[: 1 if c.method == "supervised" else 2]:
            warm = 0 if c.method == "supervised" else 2
            fake_run(tmp_path, spec, list(np.linspace(0.2, 0.8, 6)), warmup=warm)
    unfinished = rundir.path(tmp_path, E.runs_for_cell(E.figure3_cells()[0], QUICK)[1])
    unfinished.mkdir(parents=True)  # a history without result.json is not averaged in
    (unfinished / "history.csv").write_text("epoch,phase,accuracy,test_accuracy\n0,supervised,1,1\n")
    out = figures.figure3(tmp_path, QUICK, tmp_path / "out" / "figure3.png")
    image = matplotlib.image.imread(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 200 and image.shape[1] > 300
    (fig,) = drawn
    assert "no finished runs: Supervised (ImageNet init.)" in fig["title"]
    assert fig["labels"][0] == "Supervised test (1 fold of 2)"
    assert "Proposed test (2 folds)" in fig["labels"]
    assert fig["lines"] == 2 * 2 + 1  # train + test per method, one warm-up marker (proposed)


def test_learning_curves_without_any_run_still_writes(tmp_path, drawn):
    figures.learning_curves({"proposed": []}, {"proposed": 5}, tmp_path / "f.png", "t")
    assert (tmp_path / "f.png").exists() and not list(tmp_path.glob(".*tmp*"))
    assert drawn[0]["title"] == "t\nno finished runs: Proposed" and drawn[0]["labels"] == []


# ------------------------------------------------------------------------------------ make_tables
@pytest.fixture(scope="module")
def make_tables():
    spec = importlib.util.spec_from_file_location("csr_test_make_tables", REPO / "reproduce" / "make_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_make_tables_writes_files_and_report(tmp_path, make_tables):
    root = tmp_path / "quick"
    for spec in E.runs_for("figure3", QUICK):
        fake_run(root, spec, [0.5] * 6)
    first = E.runs_for("figure3", QUICK)[0]
    rundir.write_config(rundir.path(root, first), rundir.RunConfig(first, num_classes=10))
    written = make_tables.write_outputs(root, root, QUICK, ["table1", "table2", "ablation", "figure3"])
    assert [p.name for p in written] == ["table1.md", "table2.md", "table3.md", "figure3.png"]
    assert (root / "table3.md").read_text().startswith("## Table 3: ablation study on ESC50")
    env = {"tensorflow": "2.16.2", "devices": ["CPU: /physical_device:CPU:0"], "git commit": "abc"}
    report = make_tables.render_report(root, QUICK, env, make_tables.run_seeds(root),
                                       "# Reproduction notes\n\n## Training\n| a | b |\n")
    for needle in ("## Table 1:", "## Table 2:", "## Table 3:", "![Figure 3](figure3.png)",
                   "- tensorflow: 2.16.2", "- devices: CPU: /physical_device:CPU:0",
                   "- git commit: abc", "- run seeds: 0 ", "## Reproduction notes", "### Training",
                   "NOT comparable"):
        assert needle in report, needle
    assert "docs/reproduction.md was not found" in make_tables.render_report(root, QUICK, {}, [], None)


def test_two_seeds_give_mean_std_over_folds_x_seeds_and_paired_intervals(tmp_path):
    """A quick-profile table with two seeds on fake runs: every cell over 2 folds x 2 seeds, and
    REPORT.md's paired difference proposed - supervised checked against scipy's t-interval."""
    from scipy import stats

    profile = E.get_profile("quick", seeds=[0, 1])
    rng = np.random.default_rng(0)
    values = {}
    for c in E.cells("table1"):
        if c.quoted or c.fraction != 0.1 or c.metric != "last":
            continue
        for spec in E.runs_for_cell(c, profile):
            acc = float(rng.uniform(0.3, 0.6)) + (0.2 if c.method == "proposed" else 0.0)
            values[c.method, spec.fold, spec.seed] = 100 * acc
            fake_run(tmp_path, spec, [acc] * 6)
    text = tables.render("table1", tmp_path, profile)
    assert "over folds × seeds (0, 1)" in text
    proposed = tables.aggregate(cell("table1", method="proposed", metric="last", fraction=0.1), tmp_path, profile)
    assert proposed.n == 4 and sorted(proposed.keyed) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert proposed.mean == pytest.approx(np.mean([v for (m, *_), v in values.items() if m == "proposed"]))
    report = tables.render_paired(tmp_path, profile, ["table1"])
    diffs = [values["proposed", f, s] - values["supervised", f, s] for f in (1, 2) for s in (0, 1)]
    low, high = stats.t.interval(0.95, 3, loc=np.mean(diffs), scale=stats.sem(diffs))
    row = next(ln for ln in report.splitlines() if "Proposed − Supervised |" in ln and "| 10 % | *last*" in ln)
    assert f"{np.mean(diffs):+.1f} [{low:+.1f}, {high:+.1f}] (n = 4)" in row
    assert row.rstrip(" |").endswith(f"{61.8 - 53.0:+.1f}")  # the paper's difference of means


def test_sensitivity_table_and_heatmap(tmp_path):
    from csr import figures

    profile = E.get_profile("quick", max_folds=1)
    for spec in E.runs_for("sensitivity", profile):
        bonus = 0.0 if spec.reg_weight == 0 else 0.1 * spec.reg_weight / 0.2
        fake_run(tmp_path, spec, [0.5 + bonus] * 6, warmup=2)
    text = tables.render("sensitivity", tmp_path, profile)
    assert text.count("| τ = 0.001 |") == 4  # one grid per fraction and metric
    assert "| τ = 0.01 | 50.0 ± n/a | 50.5 ± n/a | 52.5 ± n/a | 60.0 ± n/a |" in text
    assert "| 10 % | *last* | +2.5 [n/a] (n = 1) |" in text  # proposed - (lambda = 0), one fold
    png = figures.sensitivity_heatmap(tmp_path, profile, tmp_path / "sensitivity.png")
    assert png.stat().st_size > 20_000
