"""One run from its description: resolve the data, cache the waveforms, train, write results.

`RunSpec` is what a table cell or a command line asks for; `execute` turns it into a run directory
`<out_dir>/<experiment>/<run_id>/` holding config.json, history.csv, result.json and checkpoints.
A run whose result.json exists is skipped unless `overwrite` is set.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from csr import sources
from csr.runio import atomic_write_json, read_json

log = logging.getLogger(__name__)

# RunSpec fields passed to RunConfig unchanged: how a run executes (csr.distribute, mixed precision,
# XLA) and the step options of csr.model.CSRModel.
EXECUTION_OPTIONS = ("strategy", "mixed_precision", "jit_compile", "sync_bn", "local_negatives", "single_pass",
                     "mix_on")


@dataclass(frozen=True)
class RunSpec:
    """What to run: the method, the data and the training length overrides."""

    experiment: str
    method: str
    target: str
    unlabeled: str
    fraction: float = 1.0
    fold: int = 1
    seed: int = 0
    backbone: str = "resnet50v2"
    weights: str | None = "imagenet"
    warmup_epochs: int | None = None
    joint_epochs: int | None = None
    supervised_epochs: int | None = None
    warmup_lr: float | None = None
    joint_lr: float | None = None
    supervised_lr: float | None = None
    model_kwargs: tuple = field(default_factory=tuple)  # sorted (key, value) pairs, hashable
    # How the run executes (csr.train.RunConfig): not part of run_id, so a table cell names the
    # same run folder whatever hardware trains it.
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool = False
    sync_bn: bool = False
    local_negatives: bool = False
    single_pass: bool = False
    mix_on: str = "auto"  # config.MIX_ON

    def run_id(self) -> str:
        target = Path(self.target).stem if self.target.endswith(".csv") else self.target
        unlabeled = self.unlabeled if self.unlabeled in sources.UNLABELED else Path(self.unlabeled).name
        return (f"{target}-{unlabeled}-{self.method}-frac{self.fraction:g}-fold{self.fold}"
                f"-seed{self.seed}")


class RowSubset:
    """Some rows of a cached waveform array, without copying it: what the pipeline reads from.

    A dataset is cached once as a whole; each fold's training and test sets are views of it.
    """

    def __init__(self, waves, rows):
        self.waves = waves
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), int(waves.shape[1]))

    @classmethod
    def of(cls, waves, table, subset) -> "RowSubset":
        position = {p: i for i, p in enumerate(table["path"])}
        return cls(waves, [position[p] for p in subset["path"]])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx):
        return self.waves[self.rows[np.asarray(idx)]]


def default_warmup_epochs(target: str) -> int:
    """20 warm-up epochs for ESC-10/ESC-50, 10 for UrbanSound8K (section 3.4)."""
    return 10 if target == "us8k" else 20


def prepare_tables(spec: RunSpec, roots: sources.DataRoots):
    """(table, train, test, unlabeled) DataFrames for the spec, checked for sense."""
    from csr import datasets

    sources.check_combination(spec.method, spec.target, spec.unlabeled)
    if not 0 < spec.fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {spec.fraction}")
    table = sources.target_table(spec.target, roots)
    train, test = datasets.split_fold(table, spec.fold)
    if spec.fraction < 1:
        train = datasets.label_fraction(train, spec.fraction, seed=spec.seed)
    unlabeled = sources.unlabeled_table(spec.unlabeled, roots)
    if spec.method == "no_unlabeled":
        unlabeled = None
    return table, train, test, unlabeled


def build_config(spec: RunSpec, num_classes: int, data_info: dict):
    from csr.train import RunConfig

    names = ("warmup_epochs", "joint_epochs", "supervised_epochs", "warmup_lr", "joint_lr", "supervised_lr")
    overrides = {k: getattr(spec, k) for k in names if getattr(spec, k) is not None}
    overrides.setdefault("warmup_epochs", default_warmup_epochs(spec.target))
    weights = spec.weights
    if spec.method == "supervised":
        weights = None  # the random-initialisation baseline
    execution = {k: getattr(spec, k) for k in EXECUTION_OPTIONS}
    return RunConfig(method=spec.method, num_classes=num_classes, seed=spec.seed,
                     backbone=spec.backbone, weights=weights, model_kwargs=dict(spec.model_kwargs),
                     data=data_info, **overrides, **execution)


def execute(spec: RunSpec, roots: sources.DataRoots, out_dir, cache_dir, *, overwrite: bool = False,
            verbose: int = 2) -> dict:
    """Run (or resume, or skip) one run and return its result.json content."""
    from csr.cache import load_waveforms
    from csr.train import RunData, run

    run_dir = Path(out_dir) / spec.experiment / spec.run_id()
    result_path = run_dir / "result.json"
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    if result_path.exists():
        log.info("%s: result.json exists, skipping (use --overwrite to rerun)", run_dir)
        return read_json(result_path)
    table, train, test, unlabeled = prepare_tables(spec, roots)
    num_classes = int(max(train["label"].max(), test["label"].max()) + 1)
    kwargs = dict(spec.model_kwargs)
    sr = kwargs.get("sample_rate", 22050)
    seconds = kwargs.get("clip_samples", int(sr * 5)) / sr
    target_waves = load_waveforms(table, cache_dir, sr=sr, seconds=seconds)
    data = RunData(
        train_waves=RowSubset.of(target_waves, table, train),
        train_labels=train["label"].to_numpy(np.int32),
        test_waves=RowSubset.of(target_waves, table, test),
        test_labels=test["label"].to_numpy(np.int32),
        unlabeled_waves=(load_waveforms(unlabeled, cache_dir, sr=sr, seconds=seconds)
                         if unlabeled is not None else None))
    info = {"experiment": spec.experiment, "target": spec.target, "unlabeled": spec.unlabeled,
            "fraction": spec.fraction, "fold": spec.fold, "train_clips": len(train),
            "test_clips": len(test), "unlabeled_clips": 0 if unlabeled is None else len(unlabeled),
            "classes": num_classes}
    cfg = build_config(spec, num_classes, info)
    names = table.drop_duplicates("label").sort_values("label")["category"].tolist()
    atomic_write_json(run_dir / "class_names.json", names)  # for csr.predict
    return run(cfg, data, run_dir, verbose=verbose)
