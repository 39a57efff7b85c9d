"""Every run of the paper, as data: the cells of Tables 1-3, the paper's numbers, and their runs.

A `Cell` is one number of the paper (table, row, column, metric) with what produced it (method,
target, unlabeled data, label fraction) and its published mean ± std. `runs_for(table, profile)`
turns the cells of a table into the `RunSpec`s that fill them, one per fold, deduplicated.

Sharing runs between tables: a run lives in `<root>/<experiment>/<run_id>/`, and the same run
serves several cells. Each cell names the experiment folder that holds its runs, the folder of the
table that first needs them:
  - Table 2's ESC10 rows are Table 1's 100 % `last` cells (89.1 ± 3.6 and 92.4 ± 2.5 appear in both),
    so they read `table1/`;
  - Table 3's Proposed and Supervised columns are Table 2's ESC50 rows (83.5 ± 3.0, 73.6 ± 1.0),
    so they read `table2/`; only -Mixing and -Unlabeled live in `ablation/`;
  - Figure 3 plots Table 1's 100 % runs (`table1/`).
Table 2 and Table 3 report the *last* metric: Table 2's ESC10 rows equal Table 1's 100 % *last*
values of Supervised (ImageNet init.) and Proposed, and Table 3 repeats Table 2's ESC50 values.
Table 2's and Table 3's "Supervised"/"-" rows are therefore the ImageNet-initialised baseline.

A `Profile` says how runs are trained: "paper" (ResNet50V2, ImageNet, the paper's epochs, all
folds) or "quick" (small backbone, random init, a few epochs, two folds, a reduced front end) for a
CPU. Profiles may substitute an unlabeled set that is absent (the quick profile on a folder holding
only ESC-10 has no ESC-40); the substitution changes the runs and is recorded in
`<root>/profile.json` so that the tables read the same runs and say what was substituted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from csr import sources
from csr.runner import RunSpec
from csr.runio import atomic_write_json, read_json

TABLES = ("table1", "table2", "ablation")
FIGURE = "figure3"
FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)
FOLDS = {"esc10": (1, 2, 3, 4, 5), "esc50": (1, 2, 3, 4, 5), "us8k": tuple(range(1, 11))}
EXPECTED_CLASSES = {"esc10": 10, "esc50": 50, "us8k": 10}
DATASET_LABELS = {"esc10": "ESC10", "esc40": "ESC40", "esc50": "ESC50", "us8k": "US8K", "none": "-"}
METHOD_LABELS = {
    "supervised": "Supervised",
    "supervised_imagenet": "Supervised (ImageNet init.)",
    "proposed": "Proposed",
    "no_mixing": "-Mixing",
    "no_unlabeled": "-Unlabeled",
}
PROFILE_FILE = "profile.json"


@dataclass(frozen=True)
class Cell:
    """One number of the paper and what produces it. Quoted cells come from other work, never run."""

    table: str  # "table1", "table2" or "ablation" (the paper's Table 3)
    row: str
    column: str
    metric: str | None  # "best" or "last"; None for quoted cells
    method: str | None  # a csr.train method; None for quoted cells
    target: str
    unlabeled: str
    fraction: float
    paper_mean: float | None  # percent; None where the paper prints "-"
    paper_std: float | None
    quoted: bool = False
    experiment: str = ""  # the results folder holding this cell's runs (shared between tables)


# --------------------------------------------------------------------------- the paper's numbers
_T1_COLUMNS = tuple(f"{f * 100:g}%" for f in FRACTIONS)
# Table 1, (method, metric) -> mean ± std at 10 %, 25 %, 50 %, 75 %, 100 % labels.
_TABLE1 = {
    ("supervised", "best"): ((59.0, 5.0), (67.2, 2.2), (75.0, 2.9), (76.2, 3.7), (81.2, 1.6)),
    ("supervised", "last"): ((53.0, 5.8), (60.2, 2.4), (65.9, 1.6), (66.8, 5.0), (72.3, 1.3)),
    ("supervised_imagenet", "best"): ((54.0, 4.8), (76.2, 7.1), (86.5, 1.5), (89.5, 1.7), (93.0, 3.6)),
    ("supervised_imagenet", "last"): ((49.9, 4.8), (73.0, 7.7), (82.5, 1.7), (84.9, 1.9), (89.1, 3.6)),
    ("proposed", "best"): ((65.2, 1.7), (78.5, 3.7), (90.0, 1.4), (93.0, 1.3), (95.2, 4.0)),
    ("proposed", "last"): ((61.8, 0.4), (75.6, 3.2), (85.4, 1.9), (87.6, 3.2), (92.4, 2.5)),
}
_TABLE1_UNLABELED = {"supervised": "none", "supervised_imagenet": "none", "proposed": "esc40"}
# Rows Table 1 quotes from Cances & Pellegrini [19]; "-" where the paper prints none.
_TABLE1_QUOTED = {
    "Supervised [19]": ("none", ((67.8, 4.0), (82.5, 5.7), (88.3, 3.0), None, (91.7, 2.0))),
    "Deep-Co-Training† [19]": ("esc10 (its unlabeled part)",
                               ((75.7, 5.3), (89.2, 4.0), (91.7, 5.1), None, None)),
}
# Table 2: (target, unlabeled, method, experiment folder, mean, std); metric "last".
_TABLE2 = (
    ("esc10", "none", "supervised_imagenet", "table1", 89.1, 3.6),
    ("esc10", "esc40", "proposed", "table1", 92.4, 2.5),
    ("esc50", "none", "supervised_imagenet", "table2", 73.6, 1.0),
    ("esc50", "us8k", "proposed", "table2", 83.5, 3.0),
    ("us8k", "none", "supervised_imagenet", "table2", 78.6, 4.3),
    ("us8k", "esc50", "proposed", "table2", 79.7, 4.3),
)
# Table 3 (ablation on ESC50): (column, method, unlabeled, experiment folder, mean, std); "last".
_TABLE3 = (
    ("Proposed", "proposed", "us8k", "table2", 83.5, 3.0),
    ("-Mixing", "no_mixing", "us8k", "ablation", 82.0, 3.0),
    ("-Unlabeled", "no_unlabeled", "none", "ablation", 79.5, 1.6),
    ("Supervised", "supervised_imagenet", "none", "table2", 73.6, 1.0),
)
FIGURE3_METHODS = ("supervised", "supervised_imagenet", "proposed")


def _table1_cells() -> list[Cell]:
    cells = []
    for (method, metric), values in _TABLE1.items():
        for fraction, column, (mean, std) in zip(FRACTIONS, _T1_COLUMNS, values):
            cells.append(Cell("table1", METHOD_LABELS[method], column, metric, method, "esc10",
                              _TABLE1_UNLABELED[method], fraction, mean, std, experiment="table1"))
    for row, (unlabeled, values) in _TABLE1_QUOTED.items():
        for fraction, column, value in zip(FRACTIONS, _T1_COLUMNS, values):
            mean, std = value if value is not None else (None, None)
            cells.append(Cell("table1", row, column, None, None, "esc10", unlabeled, fraction,
                              mean, std, quoted=True))
    return cells


def _table2_cells() -> list[Cell]:
    return [Cell("table2", f"{DATASET_LABELS[target]} / {DATASET_LABELS[unlabeled]}", "Accuracy (%)",
                 "last", method, target, unlabeled, 1.0, mean, std, experiment=experiment)
            for target, unlabeled, method, experiment, mean, std in _TABLE2]


def _table3_cells() -> list[Cell]:
    return [Cell("ablation", "ESC50", column, "last", method, "esc50", unlabeled, 1.0, mean, std,
                 experiment=experiment)
            for column, method, unlabeled, experiment, mean, std in _TABLE3]


CELLS: tuple[Cell, ...] = tuple(_table1_cells() + _table2_cells() + _table3_cells())


def cells(table: str) -> list[Cell]:
    """The cells of 'table1', 'table2' or 'ablation' in the paper's order (quoted cells included)."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    return [c for c in CELLS if c.table == table]


def figure3_cells() -> list[Cell]:
    """Figure 3's curves: each Table 1 method at 100 % labels (the runs of Table 1's last column)."""
    return [c for c in cells("table1") if not c.quoted and c.fraction == 1.0 and c.metric == "last"
            and c.method in FIGURE3_METHODS]


# ------------------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class Profile:
    """How the registry's runs are trained. None epochs mean the paper's (runner/RunConfig defaults)."""

    name: str
    backbone: str = "resnet50v2"
    weights: str | None = "imagenet"
    warmup_epochs: int | None = None
    joint_epochs: int | None = None
    supervised_epochs: int | None = None
    warmup_lr: float | None = None  # None: the paper's Adam rates (1e-4 warm-up/baselines, 1e-5 joint)
    joint_lr: float | None = None
    supervised_lr: float | None = None
    max_folds: int | None = None  # None: every predefined fold (ESC 5, US8K 10)
    model_kwargs: tuple = ()  # sorted (key, value) pairs passed to build_model
    seed: int = 0
    subdir: str = ""  # runs of this profile live in <out_dir>/<subdir>/ (never mixed with others)
    allow_standins: bool = False  # may replace an absent unlabeled set (see with_standins)
    standins: tuple = ()  # (("esc40", "us8k"),): unlabeled name in the paper -> the one run
    notes: tuple = ()  # sentences the tables print under every table

    def folds(self, target: str) -> tuple[int, ...]:
        if target not in FOLDS:
            raise ValueError(f"no predefined folds for target {target!r}; known: {', '.join(FOLDS)}")
        folds = FOLDS[target]
        return folds if self.max_folds is None else folds[: self.max_folds]

    def unlabeled_for(self, unlabeled: str) -> str:
        return dict(self.standins).get(unlabeled, unlabeled)

    def describe(self) -> str:
        """One paragraph for the tables: how these runs were trained, and how that differs from the paper."""
        def epochs(value, paper):
            return f"{value if value is not None else paper}"

        folds = ("every predefined fold" if self.max_folds is None
                 else "fold 1 only" if self.max_folds == 1 else f"folds 1-{self.max_folds} only")
        front = (", front end " + ", ".join(f"{k}={v}" for k, v in self.model_kwargs)
                 if self.model_kwargs else "")
        text = (f"Profile `{self.name}`: backbone {self.backbone}, weights {self.weights or 'random'}, "
                f"{epochs(self.warmup_epochs, '20 (US8K: 10)')} warm-up + "
                f"{epochs(self.joint_epochs, 100)} joint epochs, "
                f"{epochs(self.supervised_epochs, 200)} supervised epochs, {folds}{front}, seed {self.seed}.")
        if self.name != "paper":
            text += " NOT comparable with the paper's numbers: it checks that the pipeline runs end to end."
        if self.weights is None:
            text += " With random weights the ImageNet-init baseline is a second random-init baseline."
        rates = [f"{n} {v:g}" for n, v in (("warm-up lr", self.warmup_lr), ("joint lr", self.joint_lr),
                                             ("supervised lr", self.supervised_lr)) if v is not None]
        if rates:
            text += " Learning rates changed: " + ", ".join(rates) + "."
        short = [e for e in (self.joint_epochs, self.supervised_epochs) if e is not None and e < 20]
        if short:
            text += " *last* averages all final-phase epochs when there are fewer than 20."
        return " ".join([text, *self.notes])

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "Profile":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"profile: unknown field(s) {unknown}")
        obj = dict(obj)
        obj["model_kwargs"] = tuple(tuple(p) for p in obj.get("model_kwargs", ()))
        obj["standins"] = tuple(tuple(p) for p in obj.get("standins", ()))
        obj["notes"] = tuple(obj.get("notes", ()))
        return cls(**obj)


PROFILES = {
    "paper": Profile("paper"),
    # A CPU check that every step runs, with the demo's settings (reproduce/demo.py): learning
    # rates raised and BatchNorm momentum 0.9 so that so few steps still learn something.
    "quick": Profile("quick", backbone="small", weights=None, warmup_epochs=2, joint_epochs=4,
                     supervised_epochs=6, max_folds=2, warmup_lr=1e-3, joint_lr=2e-4,
                     supervised_lr=1e-3,
                     model_kwargs=(("bn_momentum", 0.9), ("hop_length", 920), ("n_mels", 64)),
                     subdir="quick", allow_standins=True),
}


def get_profile(name: str, max_folds: int | None = None, seed: int | None = None) -> Profile:
    """A named profile, optionally with fewer folds or another seed."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if max_folds is not None:
        if max_folds < 1:
            raise ValueError(f"max_folds must be >= 1, got {max_folds}")
        profile = dataclasses.replace(profile, max_folds=max_folds)
    if seed is not None:
        profile = dataclasses.replace(profile, seed=int(seed))
    return profile


def result_root(out_dir, profile: Profile) -> Path:
    """Where a profile's experiment folders live: <out_dir> (paper) or <out_dir>/<subdir>."""
    return Path(out_dir) / profile.subdir if profile.subdir else Path(out_dir)


def save_profile(root, profile: Profile) -> None:
    atomic_write_json(Path(root) / PROFILE_FILE, profile.to_json())


def load_profile(root, name: str) -> Profile:
    """The profile recorded in <root>/profile.json by run_experiment, else the named default."""
    path = Path(root) / PROFILE_FILE
    if not path.exists():
        return get_profile(name)
    profile = Profile.from_json(read_json(path))
    if profile.name != name:
        raise ValueError(f"{path}: records profile {profile.name!r}, but {name!r} was asked for")
    return profile


def _has_esc40(esc50_root: Path) -> bool:
    from csr import datasets

    try:
        datasets.esc50(esc50_root, "esc40", validate_files=False)
    except datasets.DatasetError as err:
        if "selects no rows" in str(err):
            return False
        raise
    return True


def with_standins(profile: Profile, roots: sources.DataRoots, tables=TABLES) -> Profile:
    """The profile with an absent ESC-40 replaced, when the profile allows stand-ins.

    The folder given as ESC-50 may hold only ESC-10 (like ../shared/data/esc10): then Table 1's
    proposed runs have no ESC-40. A quick profile uses the UrbanSound8K-layout set at roots.us8k
    (the project's synthetic one, or the real UrbanSound8K) instead: different classes from the
    target, which is what the method needs. The paper profile never substitutes. The decision
    depends on the data only, not on `tables`, so every table of a results folder agrees on it;
    `tables` only decides whether a missing stand-in is an error.
    """
    if not (profile.allow_standins and (roots.esc50 / "meta" / "esc50.csv").exists()):
        return profile
    if _has_esc40(roots.esc50):
        return profile
    us8k_csv = roots.us8k / "metadata" / "UrbanSound8K.csv"
    if not us8k_csv.exists():
        if any(c.unlabeled == "esc40" for t in tables for c in _cells_of(t) if not c.quoted):
            raise FileNotFoundError(
                f"{roots.esc50} holds no ESC-40 clips (only ESC-10), and the stand-in unlabeled set "
                f"{us8k_csv} does not exist; write one with `python data/synthesize.py --out DIR` "
                "and pass --us8k_root DIR/us8k")
        return profile
    note = (f"ESC-40 is absent from {roots.esc50} (it holds only ESC-10 clips): the proposed runs "
            f"labelled ESC10/ESC40 used the UrbanSound8K-layout set at {roots.us8k} as unlabeled data "
            "instead (a stand-in with other classes; runs named esc10-us8k-...).")
    return dataclasses.replace(profile, standins=(("esc40", "us8k"),), notes=profile.notes + (note,))


# -------------------------------------------------------------------------------------- the runs
def _cells_of(table: str) -> list[Cell]:
    return figure3_cells() if table == FIGURE else cells(table)


def spec_for(cell: Cell, fold: int, profile: Profile) -> RunSpec:
    """The run that gives `cell` its value on one fold."""
    if cell.quoted:
        raise ValueError(f"{cell.table} {cell.row!r} {cell.column}: quoted from other work, not run")
    return RunSpec(
        experiment=cell.experiment, method=cell.method, target=cell.target,
        unlabeled=profile.unlabeled_for(cell.unlabeled), fraction=cell.fraction, fold=fold,
        seed=profile.seed, backbone=profile.backbone, weights=profile.weights,
        warmup_epochs=profile.warmup_epochs, joint_epochs=profile.joint_epochs,
        supervised_epochs=profile.supervised_epochs, warmup_lr=profile.warmup_lr,
        joint_lr=profile.joint_lr, supervised_lr=profile.supervised_lr,
        model_kwargs=tuple(profile.model_kwargs))


def runs_for_cell(cell: Cell, profile: Profile) -> list[RunSpec]:
    """One run per fold of the cell's target (none for a quoted cell)."""
    if cell.quoted:
        return []
    return [spec_for(cell, fold, profile) for fold in profile.folds(cell.target)]


def runs_for(table: str, profile: Profile | str) -> list[RunSpec]:
    """Every run that 'table1', 'table2', 'ablation' or 'figure3' needs, each once, in table order."""
    if isinstance(profile, str):
        profile = get_profile(profile)
    if table not in TABLES + (FIGURE,):
        raise ValueError(f"unknown table {table!r}; choose one of {', '.join(TABLES + (FIGURE,))}")
    specs = {}
    for cell in _cells_of(table):
        for spec in runs_for_cell(cell, profile):
            specs.setdefault(spec, None)
    return list(specs)


def run_dir(root, spec: RunSpec) -> Path:
    """<root>/<experiment>/<run_id>: where runner.execute writes the run."""
    return Path(root) / spec.experiment / spec.run_id()


def is_done(root, spec: RunSpec) -> bool:
    return (run_dir(root, spec) / "result.json").exists()


def missing_runs(specs, root) -> list[RunSpec]:
    """The runs without a result.json under root (what run_experiment still has to run)."""
    return [s for s in specs if not is_done(root, s)]


def cell_key(cell: Cell) -> str:
    """A stable readable name for a cell (tests, logs)."""
    return f"{cell.table}:{cell.row}:{cell.column}:{cell.metric or 'quoted'}"
