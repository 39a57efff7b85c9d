"""Figure 3: learning curves (train and test accuracy per epoch, mean over folds) at 100 % ESC10.

Only finished runs (result.json present) enter the mean, so every curve averages the same folds at
every epoch; a method with fewer folds says so in its legend entry, one with none in the title.
The x axis counts every epoch of a run: the proposed method's warm-up epochs come first (a dotted
line marks where joint training starts), the baselines' 200 supervised epochs run on.
"""

from __future__ import annotations

from pathlib import Path

from csr import experiments as E
from csr import rundir
from csr.runio import atomic_write
from csr.tables import load_history, read_checked_result

COLORS = {"supervised": "tab:blue", "supervised_imagenet": "tab:green", "proposed": "tab:red"}


def mean_curves(histories):
    """Per-epoch mean of train ('accuracy') and test accuracy over runs, in percent, and the
    first joint-phase epoch (None when the runs have no joint phase)."""
    import pandas as pd

    frame = pd.concat([h[["epoch", "accuracy", "test_accuracy"]] for h in histories])
    mean = frame.groupby("epoch", sort=True).mean() * 100.0
    joint = [int(h.loc[h["phase"] == "joint", "epoch"].min()) for h in histories
             if (h["phase"] == "joint").any()]
    return mean, (min(joint) if joint else None)


def learning_curves(histories: dict, expected: dict, out_path, title: str) -> Path:
    """Plot {method: [history DataFrame per fold]} as a PNG; `expected` gives folds per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    absent = []
    for method, runs in histories.items():
        label = E.METHOD_LABELS.get(method, method)
        if not runs:
            absent.append(label)
            continue
        mean, joint_start = mean_curves(runs)
        folds = f"{len(runs)} fold{'s' if len(runs) != 1 else ''}"
        if len(runs) < expected.get(method, len(runs)):
            folds += f" of {expected[method]}"
        color = COLORS.get(method)
        ax.plot(mean.index, mean["test_accuracy"], color=color, label=f"{label} test ({folds})")
        ax.plot(mean.index, mean["accuracy"], color=color, linestyle="--", label=f"{label} train")
        if joint_start is not None:
            ax.axvline(joint_start, color=color, linestyle=":", linewidth=1)
    if absent:
        title += "\nno finished runs: " + ", ".join(absent)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch (dotted line: warm-up ends, joint training starts)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 102)  # a curve at 100 % stays visible
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    else:
        ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out_path


def figure3(root, profile: E.Profile, out_path) -> Path:
    """Figure 3 from the finished Table 1 runs at 100 % labels under root."""
    histories, expected = {}, {}
    for cell in E.figure3_cells():
        specs = E.runs_for_cell(cell, profile)
        expected[cell.method] = len(specs)
        histories[cell.method] = [load_history(rundir.locate(root, s)) for s in specs
                                  if read_checked_result(root, s) is not None]
    title = (f"Figure 3: learning curves on ESC10, 100 % labels, mean over folds "
             f"(profile {profile.name})")
    return learning_curves(histories, expected, out_path, title)


def sensitivity_heatmap(root, profile: E.Profile, out_path) -> Path:
    """The sensitivity study as heat maps: mean test accuracy over τ (rows) × λ_reg (columns), one
    panel per label fraction and metric, each cell annotated (n/a where no run has finished)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from csr.tables import aggregate_table

    results = aggregate_table("sensitivity", root, profile)
    rows = list(dict.fromkeys(r.cell.row for r in results))
    columns = list(dict.fromkeys(r.cell.column for r in results))
    fractions = list(dict.fromkeys(r.cell.fraction for r in results))
    by_key = {(r.cell.fraction, r.cell.metric, r.cell.row, r.cell.column): r for r in results}
    grids = {(f, m): np.array([[by_key[f, m, row, col].mean if by_key[f, m, row, col].n else np.nan
                                for col in columns] for row in rows])
             for f in fractions for m in ("best", "last")}
    finite = np.concatenate([g[np.isfinite(g)] for g in grids.values()])
    low, high = (float(finite.min()) - 1, float(finite.max()) + 1) if finite.size else (0.0, 100.0)
    fig, axes = plt.subplots(len(fractions), 2, figsize=(9, 3.2 * len(fractions)), squeeze=False,
                             constrained_layout=True)
    for (fraction, metric), grid in grids.items():
        ax = axes[fractions.index(fraction), ("best", "last").index(metric)]
        image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=high, aspect="auto")
        for i, j in np.ndindex(grid.shape):
            text = "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.1f}"
            dark = np.isnan(grid[i, j]) or grid[i, j] < (low + high) / 2
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
        ax.set_xticks(range(len(columns)), columns, fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_title(f"{fraction * 100:g} % labels, {metric}", fontsize=9)
    fig.colorbar(image, ax=axes, label="test accuracy (%), mean over runs", shrink=0.8)
    fig.suptitle(f"Sensitivity of the proposed method on ESC10 (profile {profile.name})", fontsize=10)
    out_path = Path(out_path)
    with atomic_write(out_path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out_path


def run_curves(run_dirs: dict, out_path, title: str) -> Path:
    """Learning curves of single runs ({label: run_dir}) in Figure 3's style: train dashed, test solid,
    a dotted line where warm-up ends."""
    histories = {label: [load_history(path)] for label, path in run_dirs.items()}
    return learning_curves(histories, {label: 1 for label in run_dirs}, out_path, title)
