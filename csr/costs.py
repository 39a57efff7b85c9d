"""What runs cost: the steps and clips of one run, and the hours of a table's runs.

A run's work follows from its RunSpec alone: its phases (epochs and step kind), the size of its
fold's labeled training split after the label fraction (one epoch is one pass over it, in full
batches) and of its test fold (evaluated after every epoch). Two commands turn that work into time,
and must agree on it, so it is defined here once:

  - reproduce/bench_step.py: FLOPs per clip (TensorFlow's profiler) at an assumed GPU throughput;
  - reproduce/preflight.py: seconds per clip measured on this machine.

Both give a cost per backbone clip of each kind ("supervised" and "proposed" training steps,
"eval" forward passes); `run_cost` weighs a run's clips with it and `table_costs` adds up the runs
of each table, counting a run shared by two tables once where it is first needed.
"""

from __future__ import annotations

import heapq
import math

from csr import experiments as E
from csr.spec import RunSpec

# Clips of the published data sets (their metadata): ESC-10/ESC-50 have 8 clips per class in each
# of their 5 folds; UrbanSound8K's 10 folds hold these many clips.
ESC_CLIPS_PER_CLASS_AND_FOLD = 8
US8K_FOLD_SIZES = (873, 888, 925, 990, 936, 823, 838, 806, 816, 837)
KINDS = ("supervised", "proposed", "eval")


def split_sizes(target: str, fraction: float, fold: int) -> tuple[int, int]:
    """(labeled training clips after the label fraction, test clips) of a run on a published set.

    The fraction keeps floor(fraction x n) clips of each class, at least one (csr.datasets.label_fraction);
    for UrbanSound8K, whose classes differ in size, the rounding is applied to the total (about right).
    """
    if target == "us8k":
        test = US8K_FOLD_SIZES[fold - 1]
        train = sum(US8K_FOLD_SIZES) - test
        return max(1, math.floor(fraction * train + 1e-9)), test
    if target not in E.EXPECTED_CLASSES:
        raise ValueError(f"no published split sizes for target {target!r}; known: esc10, esc50, us8k")
    per_class_train = ESC_CLIPS_PER_CLASS_AND_FOLD * (len(E.FOLDS[target]) - 1)
    kept = max(1, math.floor(fraction * per_class_train + 1e-9))
    classes = E.EXPECTED_CLASSES[target]
    return classes * kept, classes * ESC_CLIPS_PER_CLASS_AND_FOLD


def proposed_step_clips(spec: RunSpec, single_pass: bool | None = None) -> int:
    """Clips through the backbone in one joint step: the four views (s1, s1~, s2, s2~ hold the
    contrastive batch twice) and, unless single_pass, a second pass over the labeled batch."""
    single = spec.single_pass if single_pass is None else single_pass
    contrastive = spec.labeled_batch + (0 if spec.method == "no_unlabeled" else spec.unlabeled_batch)
    return 2 * contrastive + (0 if single else spec.labeled_batch)


def run_steps(spec: RunSpec) -> dict:
    """Training steps of each kind ("supervised", "proposed") and test clips ("eval") of one run."""
    from csr.pipeline import steps_per_epoch  # imports TensorFlow: only when a cost is asked for

    n_train, n_test = split_sizes(spec.target, spec.fraction, spec.fold)
    steps = steps_per_epoch(n_train, spec.labeled_batch)
    out = dict.fromkeys(KINDS, 0)
    for phase in spec.phases():
        out[phase.mode] += phase.epochs * steps
        out["eval"] += phase.epochs * n_test
    return out


def run_clips(spec: RunSpec, single_pass: bool | None = None) -> dict:
    """Backbone clips one run trains on (by step kind) and evaluates, from its phases."""
    steps = run_steps(spec)
    return {"supervised": steps["supervised"] * spec.labeled_batch,
            "proposed": steps["proposed"] * proposed_step_clips(spec, single_pass),
            "eval": steps["eval"]}


def run_cost(spec: RunSpec, per_clip: dict, single_pass: bool | None = None) -> float:
    """A run's clips of each kind weighed by `per_clip` (FLOPs, or seconds, per clip of that kind)."""
    clips = run_clips(spec, single_pass)
    return sum(clips[kind] * per_clip[kind] for kind in KINDS)


def table_costs(tables, profile, per_clip: dict, single_pass: bool | None = None) -> list[dict]:
    """Per table: its runs, the runs no earlier table needs, the cost of all of them and of the new
    ones (a table run after the earlier ones only pays for its new runs), and each run's cost."""
    seen, rows = set(), []
    for table in tables:
        specs = E.runs_for(table, profile)
        costs = [run_cost(spec, per_clip, single_pass) for spec in specs]
        new = [c for spec, c in zip(specs, costs) if spec not in seen]
        rows.append({"table": table, "runs": len(specs), "new_runs": len(new), "total": sum(costs),
                     "new": sum(new), "run_costs": costs, "new_run_costs": new})
        seen.update(specs)
    return rows


def makespan(durations, slots: int) -> float:
    """Wall time of runs started in order on `slots` parallel devices, each run taking the first
    device that comes free (what csr.jobs.run_jobs does); 0 for no runs."""
    if slots < 1:
        raise ValueError(f"need at least one slot, got {slots}")
    free = [0.0] * slots
    for duration in durations:
        heapq.heapreplace(free, free[0] + duration)  # free[0]: the device that comes free first
    return max(free)
