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

A `Profile` says how runs are trained, as overrides of RunSpec's defaults (the paper's): "paper"
(none: ResNet50V2, ImageNet, the paper's epochs, all folds), "quick" (small backbone, random init,
a few epochs, two folds, a reduced front end) for a CPU, and "demo" (`make demo`). Profiles may
substitute an unlabeled set that is absent (the quick profile on a folder holding only ESC-10 has
no ESC-40); the substitution changes the runs and is recorded in
`<root>/profile.json` so that the tables read the same runs and say what was substituted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from csr import rundir, sources
from csr.runio import atomic_write_json, read_json
from csr.spec import RunSpec, fields_of

TABLES = ("table1", "table2", "ablation", "sensitivity")
# The RunSpec fields a profile's runs may be changed in from the command line (run_experiment.py,
# preflight.py): how the network, schedule, regularisation and execution are set, not which runs.
PROFILE_OVERRIDES = fields_of("network", "schedule", "regularization", "execution")
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
    settings: tuple = ()  # (RunSpec field, value) pairs of this cell's runs beyond the profile's


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
# The sensitivity study section 3.4 mentions ("training was successful in the range of [0.001, 0.1]")
# but does not show: the proposed method on ESC10 + ESC40 over temperature x lambda_reg. lambda_reg = 0 is
# the control the paper lacks: the proposed method's schedule and batches without the contrastive
# term (its temperature then has no effect: one run stands for every temperature).
SENSITIVITY_TEMPERATURES = (0.001, 0.01, 0.1)
SENSITIVITY_REG_WEIGHTS = (0.0, 0.01, 0.05, 0.2)
SENSITIVITY_FRACTIONS = (0.1, 1.0)


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


def _sensitivity_cells() -> list[Cell]:
    """Temperature x lambda_reg for the proposed method, at 10 % and 100 % labels, best and last. The
    paper's setting reads Table 1's runs; lambda_reg = 0 is one run whatever the temperature."""
    paper = RunSpec()
    cells = []
    for fraction in SENSITIVITY_FRACTIONS:
        for metric in ("best", "last"):
            for temperature in SENSITIVITY_TEMPERATURES:
                for reg_weight in SENSITIVITY_REG_WEIGHTS:
                    settings = {"temperature": temperature, "reg_weight": reg_weight}
                    if reg_weight == 0:
                        settings = {"reg_weight": 0.0}
                    settings = {k: v for k, v in settings.items() if v != getattr(paper, k)}
                    cells.append(Cell("sensitivity", f"τ = {temperature:g}", f"λ = {reg_weight:g}", metric,
                                      "proposed", "esc10", "esc40", fraction, None, None,
                                      experiment="sensitivity" if settings else "table1",
                                      settings=tuple(sorted(settings.items()))))
    return cells


CELLS: tuple[Cell, ...] = tuple(_table1_cells() + _table2_cells() + _table3_cells() + _sensitivity_cells())


@dataclass(frozen=True)
class Comparison:
    """A difference the paper draws between two methods: the cells named `a` and `b` in `table`,
    paired column by column (same label fraction and metric), run by run (same fold and seed)."""

    table: str
    a: str
    b: str


def cell_name(cell: Cell) -> str:
    """What a comparison calls a cell: its row (tables 1 and 2), its column (table 3), or both."""
    if cell.table == "ablation":
        return cell.column
    if cell.table == "sensitivity":
        return f"{cell.row}, {cell.column}"
    return cell.row


COMPARISONS = (
    Comparison("table1", "Proposed", "Supervised"),
    Comparison("table1", "Proposed", "Supervised (ImageNet init.)"),
    Comparison("table2", "ESC10 / ESC40", "ESC10 / -"),
    Comparison("table2", "ESC50 / US8K", "ESC50 / -"),
    Comparison("table2", "US8K / ESC50", "US8K / -"),
    Comparison("ablation", "Proposed", "Supervised"),
    Comparison("ablation", "Proposed", "-Mixing"),
    Comparison("ablation", "Proposed", "-Unlabeled"),
    Comparison("ablation", "-Mixing", "Supervised"),
    Comparison("ablation", "-Unlabeled", "Supervised"),
    Comparison("sensitivity", "τ = 0.01, λ = 0.05", "τ = 0.01, λ = 0"),
)


def comparison_pairs(comparison: Comparison) -> list[tuple[Cell, Cell]]:
    """The (a, b) cell pairs of a comparison, one per label fraction and metric."""
    own = [c for c in cells(comparison.table) if not c.quoted]
    b_cells = {(c.fraction, c.metric): c for c in own if cell_name(c) == comparison.b}
    return [(a, b_cells[a.fraction, a.metric]) for a in own
            if cell_name(a) == comparison.a and (a.fraction, a.metric) in b_cells]


def cells(table: str) -> list[Cell]:
    """The cells of 'table1', 'table2', 'ablation' or 'sensitivity' in order (quoted cells included)."""
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
    """How the registry's runs are trained: overrides of RunSpec's (paper) defaults, and which folds.

    `overrides` are (field, value) pairs applied to every run of every table. `max_folds` keeps
    the first N folds of each target; `subdir` keeps a profile's runs in <out_dir>/<subdir>/, never
    mixed with another profile's; `standins` replace an absent unlabeled set (see with_standins);
    `notes` are printed under every table.
    """

    name: str
    overrides: tuple = ()  # sorted (RunSpec field, value) pairs
    max_folds: int | None = None  # None: every predefined fold (ESC 5, US8K 10)
    seeds: tuple = (0,)  # every cell is run once per fold and seed
    subdir: str = ""
    allow_standins: bool = False  # may replace an absent unlabeled set (see with_standins)
    standins: tuple = ()  # (("esc40", "us8k"),): unlabeled name in the paper -> the one run
    notes: tuple = ()

    def __post_init__(self):
        overrides = dict(self.overrides)
        RunSpec().replace(**overrides)  # unknown fields or bad values fail here, naming the flag
        if "seed" in overrides:
            raise ValueError("a profile runs every cell once per seed of `seeds`; do not override `seed`")
        object.__setattr__(self, "overrides", tuple(sorted(
            (k, tuple(v) if isinstance(v, list) else v) for k, v in overrides.items())))
        seeds = tuple(int(s) for s in self.seeds)
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds!r}")
        object.__setattr__(self, "seeds", seeds)

    def with_overrides(self, **changes) -> "Profile":
        """The profile with more (or other) field values: what run_experiment's flags add."""
        return dataclasses.replace(self, overrides=tuple({**dict(self.overrides), **changes}.items()))

    def apply(self, spec: RunSpec) -> RunSpec:
        """A table cell's spec trained the profile's way."""
        return spec.replace(**dict(self.overrides))

    @property
    def base(self) -> RunSpec:
        """The paper's spec with this profile's overrides (what every run shares)."""
        return self.apply(RunSpec())

    def folds(self, target: str) -> tuple[int, ...]:
        if target not in FOLDS:
            raise ValueError(f"no predefined folds for target {target!r}; known: {', '.join(FOLDS)}")
        folds = FOLDS[target]
        return folds if self.max_folds is None else folds[: self.max_folds]

    def unlabeled_for(self, unlabeled: str) -> str:
        return dict(self.standins).get(unlabeled, unlabeled)

    def describe(self) -> str:
        """One paragraph for the tables: how these runs were trained, and how that differs from the paper."""
        spec, paper = self.base, RunSpec()
        folds = ("every predefined fold" if self.max_folds is None
                 else "fold 1 only" if self.max_folds == 1 else f"folds 1-{self.max_folds} only")
        warmup = spec.warmup_epochs if spec.warmup_epochs is not None else "20 (US8K: 10)"
        front = [f"{k}={getattr(spec, k)}" for k in fields_of("network")
                 if k not in ("backbone", "weights") and getattr(spec, k) != getattr(paper, k)]
        text = (f"Profile `{self.name}`: backbone {spec.backbone}, weights {spec.weights or 'random'}, "
                f"{warmup} warm-up + {spec.joint_epochs} joint epochs, {spec.supervised_epochs} supervised "
                f"epochs, {folds}{', front end ' + ', '.join(front) if front else ''}, "
                f"{'seed' if len(self.seeds) == 1 else 'seeds'} {', '.join(map(str, self.seeds))}.")
        if self.name != "paper":
            text += " NOT comparable with the paper's numbers: it checks that the pipeline runs end to end."
        if spec.weights is None:
            text += " With random weights the ImageNet-init baseline is a second random-init baseline."
        changed = [f"{k.replace('_', ' ')} {getattr(spec, k):g}" for k in ("warmup_lr", "joint_lr", "supervised_lr")
                   if getattr(spec, k) != getattr(paper, k)]
        if changed:
            text += " Learning rates changed: " + ", ".join(changed) + "."
        knobs = [f"{k}={getattr(spec, k)}" for k in fields_of("regularization")
                 if getattr(spec, k) != getattr(paper, k)]
        if knobs:
            text += " Regularisation changed: " + ", ".join(knobs) + "."
        if min(spec.joint_epochs, spec.supervised_epochs) < spec.last_k:
            text += f" *last* averages all final-phase epochs when there are fewer than {spec.last_k}."
        return " ".join([text, *self.notes])

    def to_json(self) -> dict:
        obj = dataclasses.asdict(self)
        obj["overrides"] = [[k, list(v) if isinstance(v, tuple) else v] for k, v in self.overrides]
        return obj

    @classmethod
    def from_json(cls, obj: dict) -> "Profile":
        obj = dict(obj)
        if "overrides" not in obj:
            obj = _profile_first_format(obj)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"profile: unknown field(s) {unknown}")
        obj["overrides"] = tuple(tuple(p) for p in obj.get("overrides", ()))
        obj["standins"] = tuple(tuple(p) for p in obj.get("standins", ()))
        obj["notes"] = tuple(obj.get("notes", ()))
        obj["seeds"] = tuple(obj.get("seeds", (0,)))
        return cls(**obj)


def _profile_first_format(obj: dict) -> dict:
    """profile.json as written before profiles were overrides of RunSpec (its fields were spelled
    out: backbone, weights, epochs, learning rates, model_kwargs, seed)."""
    table_fields = ("name", "max_folds", "subdir", "allow_standins", "standins", "notes")
    out = {k: obj[k] for k in table_fields if k in obj}
    out["seeds"] = [int(obj.get("seed", 0))]
    paper = RunSpec()
    overrides = {k: v for k, v in obj.items()
                 if k not in table_fields + ("model_kwargs", "seed") and v is not None}
    overrides.update(dict(tuple(p) for p in obj.get("model_kwargs", ())))
    out["overrides"] = [[k, v] for k, v in sorted(overrides.items())
                        if isinstance(v, list) or v != getattr(paper, k)]
    return out


PROFILES = {
    "paper": Profile("paper"),
    # A CPU check that every step runs: the small backbone, a coarser front end, a few epochs with
    # learning rates raised, and BatchNorm momentum 0.9 so that so few steps still learn something.
    "quick": Profile("quick", overrides=(
        ("backbone", "small"), ("weights", None), ("warmup_epochs", 2), ("joint_epochs", 4),
        ("supervised_epochs", 6), ("warmup_lr", 1e-3), ("joint_lr", 2e-4), ("supervised_lr", 1e-3),
        ("bn_momentum", 0.9), ("hop_length", 920), ("n_mels", 64)),
        max_folds=2, subdir="quick", allow_standins=True),
    # `make demo` (reproduce/demo.py): the quick profile's network, longer.
    "demo": Profile("demo", overrides=(
        ("backbone", "small"), ("weights", None), ("warmup_epochs", 10), ("joint_epochs", 20),
        ("supervised_epochs", 40), ("warmup_lr", 1e-3), ("joint_lr", 2e-4), ("supervised_lr", 1e-3),
        ("bn_momentum", 0.9), ("hop_length", 920), ("n_mels", 64)), max_folds=1),
}


def get_profile(name: str, max_folds: int | None = None, seeds=None) -> Profile:
    """A named profile, optionally with fewer folds or other seeds (an int or a list)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if max_folds is not None:
        if max_folds < 1:
            raise ValueError(f"max_folds must be >= 1, got {max_folds}")
        profile = dataclasses.replace(profile, max_folds=max_folds)
    if seeds is not None:
        profile = dataclasses.replace(profile, seeds=(seeds,) if isinstance(seeds, int) else tuple(seeds))
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

    The folder given as ESC-50 may hold only ESC-10 (a folder holding only the CC BY ESC-10 clips): then Table 1's
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


def spec_for(cell: Cell, fold: int, profile: Profile, seed: int | None = None) -> RunSpec:
    """The run that gives `cell` its value on one fold (with one seed: the profile's first)."""
    if cell.quoted:
        raise ValueError(f"{cell.table} {cell.row!r} {cell.column}: quoted from other work, not run")
    spec = profile.apply(RunSpec(experiment=cell.experiment, method=cell.method, target=cell.target,
                                 unlabeled=profile.unlabeled_for(cell.unlabeled), fraction=cell.fraction,
                                 fold=fold, seed=profile.seeds[0] if seed is None else seed))
    return spec.replace(**dict(cell.settings))  # the cell's own settings (sensitivity) come last


def runs_for_cell(cell: Cell, profile: Profile) -> list[RunSpec]:
    """One run per fold of the cell's target and seed of the profile (none for a quoted cell)."""
    if cell.quoted:
        return []
    return [spec_for(cell, fold, profile, seed) for seed in profile.seeds for fold in profile.folds(cell.target)]


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


def missing_runs(specs, root) -> list[RunSpec]:
    """The runs without a result.json under root (what run_experiment still has to run)."""
    return [s for s in specs if not rundir.is_done(root, s)]


def cell_key(cell: Cell) -> str:
    """A stable readable name for a cell (tests, logs)."""
    return f"{cell.table}:{cell.row}:{cell.column}:{cell.fraction:g}:{cell.metric or 'quoted'}"
