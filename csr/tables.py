"""Aggregate run results into the paper's tables, next to the paper's numbers.

Reads `<root>/<experiment>/<run_id>/result.json` for every run a cell needs (csr.experiments), takes
each run's *best* (the highest test accuracy of every epoch, warm-up included, recomputed from the
per-epoch accuracies so results written before that definition count the same way) or *last*
(fractions in result.json, percent here), and reports mean ± std over the runs that finished (every
fold, times every seed). Standard deviation is the population one (ddof=0, numpy's default), the
estimator the paper most plausibly used; `ddof=1` gives the sample estimate (x1.118 for 5 folds).
A cell with missing runs shows what it has ("3/5 folds") and the table lists the missing runs
instead of failing, so partial results are readable while an experiment is still running.
Where the paper compares methods, `paired_rows` gives the per-(fold, seed) differences'
mean and 95 % t-interval (csr.stats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from csr import experiments as E
from csr import rundir
from csr.runio import read_json
from csr.spec import RunSpec
from csr.stats import PairedDifference, mean_std, paired_difference

HISTORY_COLUMNS = ("epoch", "phase", "accuracy", "test_accuracy")
TABLE_FILES = {"table1": "table1.md", "table2": "table2.md", "ablation": "table3.md",
               "sensitivity": "sensitivity.md"}
TITLES = {
    "table1": "Table 1: semi-supervised training with mismatched labels on ESC10 (unlabeled ESC40)",
    "table2": "Table 2: cross-dataset semi-supervised training (metric: last)",
    "ablation": "Table 3: ablation study on ESC50 (metric: last)",
    "sensitivity": "Sensitivity: temperature τ × λ_reg, proposed method on ESC10 (unlabeled ESC40)",
}


def read_result(run_dir) -> dict | None:
    """A finished run's result.json, or None when the run has not finished."""
    path = Path(run_dir) / "result.json"
    if not path.exists():
        return None
    result = read_json(path)
    for key in ("best", "last"):
        value = result.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{path}: '{key}' must be a finite number, got {value!r}")
    return result


def read_checked_result(root, spec: RunSpec) -> dict | None:
    """The result of `spec`'s finished run under root, or None: unfinished, or its config.json shows
    another computation (a table must never show a stale run)."""
    run_dir = rundir.locate(root, spec)
    result = read_result(run_dir)
    if result is None:
        return None
    try:
        same = rundir.read_config(run_dir).spec.identity() == spec.identity()
    except (OSError, ValueError):
        same = False
    return result if same else None


def metric_value(result: dict, metric: str) -> float:
    """A run's *best* or *last* as a fraction. *best* is the highest test accuracy over every epoch
    (Table 1's caption: "the highest performance in the entire training epochs"), taken from the
    per-epoch list where result.json has one: runs written when *best* covered the final phase only
    are read with today's definition, without retraining."""
    if metric == "best" and result.get("test_accuracy"):
        return float(max(result["test_accuracy"]))
    return float(result[metric])


@dataclass
class CellResult:
    """A cell's runs, the (fold, seed) pairs that finished, and their values in percent."""

    cell: E.Cell
    expected: list[RunSpec]
    values: list[float] = field(default_factory=list)
    folds: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    missing: list[RunSpec] = field(default_factory=list)
    data: list[dict] = field(default_factory=list)  # result.json "data" of the finished runs
    ddof: int = 0

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def keyed(self) -> dict:
        """{(fold, seed): value}: what a paired comparison matches on."""
        return dict(zip(zip(self.folds, self.seeds), self.values))

    @property
    def mean(self) -> float:
        return mean_std(self.values, self.ddof)[0]

    @property
    def std(self) -> float:
        """NaN ("n/a") below two folds: one fold says nothing about the spread."""
        return mean_std(self.values, self.ddof)[1] if self.n >= 2 else math.nan

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def difference(self) -> float | None:
        """ours - paper, in percentage points (None without both numbers)."""
        if self.cell.paper_mean is None or not self.values:
            return None
        return self.mean - self.cell.paper_mean


def aggregate(cell: E.Cell, root, profile: E.Profile, ddof: int = 0) -> CellResult:
    """Collect a cell's fold results under root (quoted cells have no runs)."""
    specs = E.runs_for_cell(cell, profile)
    out = CellResult(cell, specs, ddof=ddof)
    for spec in specs:
        result = read_checked_result(root, spec)
        if result is None:
            out.missing.append(spec)
            continue
        out.values.append(100.0 * metric_value(result, cell.metric))
        out.folds.append(spec.fold)
        out.seeds.append(spec.seed)
        out.data.append(dict(result.get("data") or {}))
    return out


def aggregate_table(table: str, root, profile: E.Profile, ddof: int = 0) -> list[CellResult]:
    return [aggregate(c, root, profile, ddof) for c in E.cells(table)]


# ------------------------------------------------------------------------------------ formatting
def fmt(mean, std) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or math.isnan(std):
        return f"{mean:.1f} ± n/a"
    return f"{mean:.1f} ± {std:.1f}"


def ours(r: CellResult) -> str:
    """'61.2 ± 1.3', '58.0 ± 2.0 (3/5 folds)', or 'missing (0/5 folds)' ('runs' with several seeds)."""
    total = len(r.expected)
    unit = "folds" if len({s.seed for s in r.expected}) <= 1 else "runs"
    if r.n == 0:
        return f"missing (0/{total} {unit})"
    text = fmt(r.mean, r.std)
    return text if r.complete else f"{text} ({r.n}/{total} {unit})"


def paper(r: CellResult) -> str:
    return fmt(r.cell.paper_mean, r.cell.paper_std)


def delta(r: CellResult) -> str:
    d = r.difference
    return "-" if d is None else f"{d:+.1f}"


def _md_table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _missing_section(results: list[CellResult], root) -> list[str]:
    """The missing runs, each once, with whether it started (a folder without result.json)."""
    seen = {}
    for r in results:
        for spec in r.missing:
            seen.setdefault(spec, None)
    if not seen:
        return []
    lines = [f"**Missing runs ({len(seen)})** (no result.json yet; `run_experiment.py` runs them):", ""]
    for spec in seen:
        path = rundir.locate(root, spec)
        rel = f"{spec.experiment}/{path.name}"
        if (path / rundir.RESULT).exists():
            state = "finished, but its config.json shows other settings: rerun it with --overwrite"
        elif path.exists():
            state = f"started, unfinished or failed: see `{rel}.log`"
        else:
            state = "not started"
        lines.append(f"- `{rel}` ({state})")
    return lines + [""]


def _data_notes(results: list[CellResult]) -> list[str]:
    """What data the finished runs actually used, flagged where it is not the paper's."""
    seen = {}
    for r in results:
        for info in r.data:
            target, unlabeled = info.get("target"), info.get("unlabeled")
            if target is None:
                continue
            entry = seen.setdefault((target, unlabeled), {"classes": set(), "unlabeled_clips": set()})
            if "classes" in info:
                entry["classes"].add(int(info["classes"]))
            if "unlabeled_clips" in info:
                entry["unlabeled_clips"].add(int(info["unlabeled_clips"]))
    lines = []
    for (target, unlabeled), entry in seen.items():
        classes = ", ".join(str(c) for c in sorted(entry["classes"])) or "?"
        clips = ", ".join(str(c) for c in sorted(entry["unlabeled_clips"])) or "?"
        text = f"- {target} with unlabeled {unlabeled}: {classes} classes, {clips} unlabeled clips"
        expected = E.EXPECTED_CLASSES.get(target)
        if expected is not None and entry["classes"] and entry["classes"] != {expected}:
            text += f" (**the real {target} has {expected} classes**: not the paper's data)"
        lines.append(text)
    return (["Data used by the finished runs:", ""] + lines + [""]) if lines else []


def _header(table: str, profile: E.Profile, ddof: int) -> list[str]:
    estimator = "population std (ddof=0)" if ddof == 0 else f"sample std (ddof={ddof})"
    over = "folds" if len(profile.seeds) == 1 else f"folds × seeds ({', '.join(map(str, profile.seeds))})"
    return [f"## {TITLES[table]}", "",
            profile.describe(), "",
            f"Test accuracy (%) over {over}: ours = mean ± {estimator} over the runs that finished, "
            "paper = the published value, Δ = ours − paper (percentage points).", ""]


def _footer(results: list[CellResult], root) -> list[str]:
    return _data_notes(results) + _missing_section(results, root)


def render_table1(results: list[CellResult], profile: E.Profile, root, ddof: int = 0) -> str:
    """Paper layout: method × metric rows, fraction columns; ours, paper and Δ rows per metric."""
    columns = list(dict.fromkeys(r.cell.column for r in results))
    by_key = {(r.cell.row, r.cell.metric, r.cell.column): r for r in results}
    rows = []
    for row in dict.fromkeys(r.cell.row for r in results if not r.cell.quoted):
        for metric in ("best", "last"):
            cells = [by_key[(row, metric, c)] for c in columns]
            rows.append([row, f"*{metric}*", "ours"] + [ours(r) for r in cells])
            rows.append(["", "", "paper"] + [paper(r) for r in cells])
            rows.append(["", "", "Δ"] + [delta(r) for r in cells])
    for row in dict.fromkeys(r.cell.row for r in results if r.cell.quoted):
        rows.append([row, "", "paper (quoted, not run)"]
                    + [paper(by_key[(row, None, c)]) for c in columns])
    lines = _header("table1", profile, ddof)
    lines += _md_table(["Method", "Metric", "", *(f"{c} labels" for c in columns)], rows)
    lines += ["", "*best*: highest test accuracy over every epoch of a run, warm-up included; *last*: mean "
              "of the final phase's last 20 epochs. † evaluated on a different data distribution (quoted "
              "from [19]).", ""]
    return "\n".join(lines + _footer(results, root))


def render_table2(results: list[CellResult], profile: E.Profile, root, ddof: int = 0) -> str:
    rows = [[E.DATASET_LABELS[r.cell.target], E.DATASET_LABELS.get(r.cell.unlabeled, r.cell.unlabeled),
             E.METHOD_LABELS[r.cell.method], ours(r), paper(r), delta(r)] for r in results]
    lines = _header("table2", profile, ddof)
    lines += _md_table(["Target data", "Unlabeled data", "Method", "Ours", "Paper", "Δ"], rows)
    lines += ["", "The ESC10 rows are Table 1's 100 % *last* runs (the same runs, `table1/`).", ""]
    return "\n".join(lines + _footer(results, root))


def render_table3(results: list[CellResult], profile: E.Profile, root, ddof: int = 0) -> str:
    header = ["ESC50", *(r.cell.column for r in results)]
    rows = [["ours", *(ours(r) for r in results)],
            ["paper", *(paper(r) for r in results)],
            ["Δ", *(delta(r) for r in results)]]
    lines = _header("ablation", profile, ddof)
    lines += _md_table(header, rows)
    lines += ["", "Proposed and Supervised (ImageNet init.) are Table 2's ESC50 runs (`table2/`); "
              "-Mixing keeps only the time offset; -Unlabeled applies the contrastive term to the "
              "labeled batch alone.", ""]
    return "\n".join(lines + _footer(results, root))


def render_sensitivity(results: list[CellResult], profile: E.Profile, root, ddof: int = 0) -> str:
    """One τ × λ grid per label fraction and metric, then proposed − (λ = 0) with its paired interval."""
    by_key = {(r.cell.fraction, r.cell.metric, r.cell.row, r.cell.column): r for r in results}
    rows_, columns = (list(dict.fromkeys(getattr(r.cell, k) for r in results)) for k in ("row", "column"))
    lines = _header("sensitivity", profile, ddof)
    lines += ["The paper reports τ = 0.01, λ = 0.05 (Table 1's Proposed runs) and says training succeeded for "
              "τ in [0.001, 0.1]; it shows no grid. λ = 0 runs the proposed method's schedule and batches "
              "without the contrastive term (τ then has no effect: one run per fold fills that column).", ""]
    for fraction in dict.fromkeys(r.cell.fraction for r in results):
        for metric in ("best", "last"):
            grid = [[row] + [ours(by_key[fraction, metric, row, c]) for c in columns] for row in rows_]
            lines += [f"**{fraction * 100:g} % labels, *{metric}***", ""]
            lines += _md_table(["", *columns], grid) + [""]
    lines += ["Paired difference, proposed (τ = 0.01, λ = 0.05) − the same schedule without the contrastive "
              "term (λ = 0), per (fold, seed), mean [95 % t-interval]:", ""]
    lines += _md_table(["labels", "metric", "difference (points)"],
                       [[r.column, f"*{r.metric}*", r.ours.text()]
                        for r in paired_rows(root, profile, ("sensitivity",))])
    lines.append("")
    return "\n".join(lines + _footer(results, root))


RENDERERS = {"table1": render_table1, "table2": render_table2, "ablation": render_table3,
             "sensitivity": render_sensitivity}


def render(table: str, root, profile: E.Profile, ddof: int = 0) -> str:
    """The markdown of 'table1', 'table2', 'ablation' or 'sensitivity' from the results under root."""
    if table not in RENDERERS:
        raise ValueError(f"unknown table {table!r}; choose one of {', '.join(RENDERERS)}")
    return RENDERERS[table](aggregate_table(table, root, profile, ddof), profile, root, ddof)


# ------------------------------------------------------------------------------ paired comparisons
@dataclass(frozen=True)
class PairedRow:
    """One paired comparison in one column: what the table shows it as, ours and the paper's."""

    comparison: E.Comparison
    column: str
    metric: str
    ours: PairedDifference
    paper: float | None  # the paper's a - b, points

    @property
    def label(self) -> str:
        return f"{self.comparison.a} − {self.comparison.b}"


def paired_rows(root, profile: E.Profile, tables=E.TABLES) -> list[PairedRow]:
    """Every comparison the paper draws in `tables`, per column and metric, from the finished runs."""
    rows = []
    for comparison in E.COMPARISONS:
        if comparison.table not in tables:
            continue
        for a, b in E.comparison_pairs(comparison):
            ours = paired_difference(aggregate(a, root, profile).keyed, aggregate(b, root, profile).keyed)
            paper = (a.paper_mean - b.paper_mean) if None not in (a.paper_mean, b.paper_mean) else None
            column = f"{a.fraction * 100:g} %" if comparison.table in ("table1", "sensitivity") else a.column
            rows.append(PairedRow(comparison, column, a.metric, ours, paper))
    return rows


def render_paired(root, profile: E.Profile, tables=E.TABLES) -> str:
    """REPORT.md's section: each comparison's per-run difference, its interval, the paper's difference."""
    rows = paired_rows(root, profile, tables)
    lines = ["## Paired comparisons", "",
             "Where the paper compares methods: the difference a − b of each (fold, seed) pair both ran "
             "(same held-out fold, same seed), its mean and its 95 % Student t confidence interval over the "
             "pairs (mean ± t(0.975, n−1) · s / √n, s the sample std of the differences), beside the "
             "difference of the paper's means. An interval that excludes 0 says the gain is larger than "
             "the run-to-run noise of these runs.", ""]
    table = [[r.comparison.table, r.label, r.column, f"*{r.metric}*", r.ours.text(),
              "-" if r.paper is None else f"{r.paper:+.1f}"] for r in rows]
    lines += _md_table(["table", "a − b", "column", "metric", "ours: mean [95 % CI] (pairs)", "paper"], table)
    return "\n".join(lines + [""])


# ------------------------------------------------------------------------------------- histories
def load_history(run_dir):
    """A run's history.csv (one row per epoch) as a DataFrame; names the file when it is malformed."""
    import pandas as pd

    path = Path(run_dir) / "history.csv"
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no history (the run has not finished an epoch)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{path}: cannot parse ({err})") from err
    missing = [c for c in HISTORY_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame.sort_values("epoch").reset_index(drop=True)
