"""Aggregate run results into the paper's tables, next to the paper's numbers.

Reads `<root>/<experiment>/<run_id>/result.json` for every run a cell needs (csr.experiments), takes
each fold's `best` or `last` (fractions in result.json, percent here), and reports mean ± std over
the folds that finished. Standard deviation is the population one (ddof=0, numpy's default), the
estimator the paper most plausibly used; `ddof=1` gives the sample estimate (x1.118 for 5 folds).
A cell with missing runs shows what it has ("3/5 folds") and the table lists the missing runs
instead of failing, so partial results are readable while an experiment is still running.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from csr import experiments as E
from csr import rundir
from csr.runio import read_json
from csr.spec import RunSpec

HISTORY_COLUMNS = ("epoch", "phase", "accuracy", "test_accuracy")
TABLE_FILES = {"table1": "table1.md", "table2": "table2.md", "ablation": "table3.md"}
TITLES = {
    "table1": "Table 1: semi-supervised training with mismatched labels on ESC10 (unlabeled ESC40)",
    "table2": "Table 2: cross-dataset semi-supervised training (metric: last)",
    "ablation": "Table 3: ablation study on ESC50 (metric: last)",
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


def mean_std(values, ddof: int = 0) -> tuple[float, float]:
    """Mean and standard deviation; std is NaN when ddof leaves no degree of freedom."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    std = float(np.std(arr, ddof=ddof)) if arr.size > ddof else math.nan
    return float(np.mean(arr)), std


@dataclass
class CellResult:
    """A cell's runs, the folds that finished, and their values in percent."""

    cell: E.Cell
    expected: list[RunSpec]
    values: list[float] = field(default_factory=list)
    folds: list[int] = field(default_factory=list)
    missing: list[RunSpec] = field(default_factory=list)
    data: list[dict] = field(default_factory=list)  # result.json "data" of the finished runs
    ddof: int = 0

    @property
    def n(self) -> int:
        return len(self.values)

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
        out.values.append(100.0 * float(result[cell.metric]))
        out.folds.append(spec.fold)
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
    """'61.2 ± 1.3', '58.0 ± 2.0 (3/5 folds)', or 'missing (0/5 folds)'."""
    total = len(r.expected)
    if r.n == 0:
        return f"missing (0/{total} folds)"
    text = fmt(r.mean, r.std)
    return text if r.complete else f"{text} ({r.n}/{total} folds)"


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
    return [f"## {TITLES[table]}", "",
            profile.describe(), "",
            f"Test accuracy (%) over folds: ours = mean ± {estimator} over the folds that finished, "
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
    lines += ["", "*best*: highest test accuracy over the final phase's epochs; *last*: mean of its "
              "last 20 epochs. † evaluated on a different data distribution (quoted from [19]).", ""]
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


RENDERERS = {"table1": render_table1, "table2": render_table2, "ablation": render_table3}


def render(table: str, root, profile: E.Profile, ddof: int = 0) -> str:
    """The markdown of 'table1', 'table2' or 'ablation' from the results under root."""
    if table not in RENDERERS:
        raise ValueError(f"unknown table {table!r}; choose one of {', '.join(RENDERERS)}")
    return RENDERERS[table](aggregate_table(table, root, profile, ddof), profile, root, ddof)


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
