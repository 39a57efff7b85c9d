"""One run from its description: check it, resolve the data, cache the waveforms, train.

`execute(spec, places, out_dir)` turns a RunSpec into its run folder
`<out_dir>/<experiment>/<run_id>/` (csr.rundir). Everything cheap is checked before anything
expensive starts or anything is written: the spec (on construction), the data tables and their
files, the weights file, that --out_dir can be written, and that an existing run folder holds the
same computation (settings and data content). A finished run is returned as it is, unless
`overwrite`; a folder that holds another computation is an error that says what differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from csr import rundir, sources
from csr.errors import UserError
from csr.runio import read_json
from csr.spec import RunSpec

log = logging.getLogger(__name__)


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


def prepare_tables(spec: RunSpec, roots: sources.DataRoots):
    """(table, train, test, unlabeled) DataFrames of the spec's data and fold; warns about thin splits."""
    from csr import datasets

    table = sources.target_table(spec.target, roots)
    unlabeled = None if spec.method == "no_unlabeled" else sources.unlabeled_table(spec.unlabeled, roots)
    if unlabeled is not None:
        _refuse_shared_clips(spec, table, unlabeled)
    train, test = datasets.split_fold(table, spec.fold)
    if spec.fraction < 1:
        train = datasets.label_fraction(train, spec.fraction, seed=spec.seed)
    for warning in datasets.split_warnings(train, test, fold=spec.fold):
        log.warning("%s", warning)
    return table, train, test, unlabeled


def _refuse_shared_clips(spec: RunSpec, table, unlabeled) -> None:
    """An unlabeled folder that holds clips of the labeled set (its test folds included) would let the
    contrastive term see the test clips: refused like --target=us8k --unlabeled=us8k (csr.spec)."""
    labeled = {os.path.realpath(p) for p in table["path"]}
    shared = sorted(p for p in map(os.path.realpath, unlabeled["path"]) if p in labeled)
    if shared:
        raise UserError(f"--unlabeled={spec.unlabeled} holds {len(shared)} clip(s) of --target={spec.target} "
                        f"(e.g. {shared[0]}), test folds included; point --unlabeled at recordings outside the "
                        "labeled set")


def check_runs(specs, places: sources.DataPlaces) -> None:
    """What every run checks at its start, once per distinct value, before a table's runs start: its data
    tables (and that the unlabeled data shares no clip with them) and its backbone weights. A mistake
    that all runs share is then one error, not every run failing in turn."""
    from csr.model import check_weights

    roots = places.roots()
    for spec in {(s.target, s.unlabeled, s.method): s for s in specs}.values():
        table = sources.target_table(spec.target, roots)
        if spec.method != "no_unlabeled" and spec.unlabeled != "none":
            _refuse_shared_clips(spec, table, sources.unlabeled_table(spec.unlabeled, roots))
    for backbone, weights in {(s.backbone, s.backbone_weights) for s in specs}:
        check_weights(backbone, weights)


def table_identity(table) -> dict:
    """What a clip table holds, cheaply: its folder, its size and a hash of every clip's file name
    (relative to that folder), byte size, label and fold. Moving a data set keeps its content hash;
    replacing, adding or relabelling a clip changes it."""
    paths = [os.fsdecode(p) for p in table["path"]]
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    rows = []
    for i, path in enumerate(paths):
        row = [os.path.relpath(path, root), os.stat(path).st_size]
        row += [int(table[c].iloc[i]) for c in ("label", "fold") if c in table.columns]
        rows.append(row)
    digest = hashlib.blake2b(json.dumps(sorted(rows)).encode(), digest_size=8).hexdigest()
    return {"root": str(Path(root).resolve()), "clips": len(paths), "content": digest}


def describe_data(spec: RunSpec, tables) -> tuple[dict, int]:
    """(the data provenance and identity recorded in config.json, the number of classes)."""
    table, train, test, unlabeled = tables
    num_classes = int(max(train["label"].max(), test["label"].max()) + 1)
    info = {"experiment": spec.experiment, "target": spec.target, "unlabeled": spec.unlabeled,
            "fraction": spec.fraction, "fold": spec.fold, "train_clips": len(train), "test_clips": len(test),
            "unlabeled_clips": 0 if unlabeled is None else len(unlabeled), "classes": num_classes,
            "target_data": table_identity(table)}
    if unlabeled is not None:
        info["unlabeled_data"] = table_identity(unlabeled)
    return info, num_classes


def load_data(spec: RunSpec, tables, cache_dir, info: dict, num_classes: int):
    """RunData of the spec: the fold's clips, read from the waveform cache (built on first use).

    Unreadable unlabeled files are skipped (a warning lists them; their count goes to result.json);
    an unreadable labeled file stops the run, naming it.
    """
    from csr.cache import load_waveforms, load_waveforms_skipping
    from csr.train import RunData

    table, train, test, unlabeled = tables
    waves = load_waveforms(table, cache_dir, sr=spec.sample_rate, seconds=spec.clip_seconds)
    unlabeled_waves = None
    if unlabeled is not None:
        unlabeled_waves, skipped = load_waveforms_skipping(unlabeled, cache_dir, sr=spec.sample_rate,
                                                           seconds=spec.clip_seconds)
        info = {**info, "unlabeled_clips": len(unlabeled_waves), "unlabeled_skipped": len(skipped)}
    names = table.drop_duplicates("label").sort_values("label")["category"].tolist()
    return RunData(train_waves=RowSubset.of(waves, table, train), train_labels=train["label"].to_numpy(np.int32),
                   test_waves=RowSubset.of(waves, table, test), test_labels=test["label"].to_numpy(np.int32),
                   unlabeled_waves=unlabeled_waves, num_classes=num_classes, info=info, class_names=names)


def check_writable(folder, flag: str) -> None:
    """Create `folder` if needed and check a file can be written in it (UserError naming the flag)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f"{flag}: cannot write to {folder} ({err.strerror or err}); pass a writable folder") from None


def execute(spec: RunSpec, places: sources.DataPlaces, out_dir, *, overwrite: bool = False,
            verbose: int = 2) -> dict:
    """Run (or resume, or return the finished) run of `spec`; returns its result.json content."""
    from csr.model import check_weights
    from csr.train import run

    run_dir = rundir.path(out_dir, spec)
    check_writable(run_dir.parent, "--out_dir")
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    rundir.adopt_legacy(out_dir, spec)
    tables = prepare_tables(spec, places.roots())
    info, num_classes = describe_data(spec, tables)
    wanted = rundir.RunConfig(spec, num_classes, info)
    if (run_dir / rundir.CONFIG).exists():
        rundir.check_same_run(run_dir, wanted)
    if (run_dir / rundir.RESULT).exists():
        log.info("%s: finished; returning its result.json (--overwrite runs it again)", run_dir)
        return read_json(run_dir / rundir.RESULT)
    check_weights(spec.backbone, spec.backbone_weights)
    data = load_data(spec, tables, places.cache, info, num_classes)
    return run(spec, data, run_dir, verbose=verbose)


def stale_runs(specs, places: sources.DataPlaces, out_dir) -> list[tuple[RunSpec, str]]:
    """Finished runs whose config.json records other data than the data now at `places`, each with
    what differs. Runs that recorded no data identity (written by earlier csr versions) pass."""
    roots, current, stale = places.roots(), {}, []
    for spec in specs:
        run_dir = rundir.path(out_dir, spec)
        if not (run_dir / rundir.RESULT).exists():
            continue
        try:
            recorded = rundir.read_config(run_dir).data
        except ValueError as err:
            stale.append((spec, str(err)))
            continue
        for key, name, load in (("target_data", spec.target, sources.target_table),
                                ("unlabeled_data", spec.unlabeled, sources.unlabeled_table)):
            before = recorded.get(key)
            if before is None or name == "none":
                continue
            if (key, name) not in current:
                current[key, name] = table_identity(load(name, roots))
            now = current[key, name]
            if (before.get("content"), before.get("clips")) != (now["content"], now["clips"]):
                stale.append((spec, f"{key.replace('_', ' ')}: trained on {before.get('clips')} clips at "
                                    f"{before.get('root')}, now {now['clips']} clips at {now['root']}"))
    return stale
