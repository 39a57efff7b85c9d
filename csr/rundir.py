"""The run folder: where a run lives and what it holds, defined once.

    <out_dir>/<experiment>/<run_id>/      a run (csr.train writes it)
        config.json                       the run's RunSpec, its class count and data provenance
        history.csv                       one row per epoch
        result.json                       best, last, every epoch's accuracy (when finished)
        class_names.json                  index = label (for csr.predict)
        checkpoints/                      the last epochs' weights and optimizer state
        model.weights.h5                  the final weights (when finished)
        tensorboard/                      TensorBoard event files
    <out_dir>/<experiment>/<run_id>.log   the run's output when run_experiment.py started it
    <out_dir>/<experiment>/<run_id>.spec.json   the RunSpec run_experiment.py handed to its worker
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from csr.errors import UserError
from csr.runio import atomic_write_json, read_json
from csr.spec import SAME_COMPUTATION, RunSpec, SpecError

log = logging.getLogger(__name__)

CONFIG = "config.json"
HISTORY = "history.csv"
RESULT = "result.json"
CLASS_NAMES = "class_names.json"
CHECKPOINTS = "checkpoints"
FINAL_WEIGHTS = "model.weights.h5"
TENSORBOARD = "tensorboard"
CONFIG_FORMAT = 2


def path(out_dir, spec: RunSpec) -> Path:
    """<out_dir>/<experiment>/<run_id>: where a run is written."""
    return Path(out_dir) / spec.experiment / spec.run_id()


def log_path(out_dir, spec: RunSpec) -> Path:
    """<out_dir>/<experiment>/<run_id>.log, beside the run folder."""
    return path(out_dir, spec).with_name(spec.run_id() + ".log")


def legacy_path(out_dir, spec: RunSpec) -> Path:
    """Where csr wrote this run before run ids were unique (readable part only)."""
    return Path(out_dir) / spec.experiment / spec.legacy_run_id()


def _holds(run_dir: Path, spec: RunSpec) -> bool:
    """Whether run_dir holds a run of exactly `spec`'s computation."""
    try:
        return read_config(run_dir).spec.identity() == spec.identity()
    except (OSError, ValueError):
        return False


def locate(out_dir, spec: RunSpec) -> Path:
    """The folder holding `spec`'s run: its own, or its pre-unique-id folder when that holds the same
    computation (read-only: tables find runs written before the ids changed)."""
    own, old = path(out_dir, spec), legacy_path(out_dir, spec)
    if not own.exists() and old != own and old.exists() and _holds(old, spec):
        return old
    return own


def adopt_legacy(out_dir, spec: RunSpec) -> bool:
    """Rename the pre-unique-id folder of `spec`'s run (and its log) to the run's own id, when it
    holds the same computation; returns whether it did."""
    own, old = path(out_dir, spec), legacy_path(out_dir, spec)
    if own.exists() or old == own or not old.exists() or not _holds(old, spec):
        return False
    old.rename(own)
    for suffix in (".log", ".spec.json"):
        if old.with_name(old.name + suffix).exists():
            old.with_name(old.name + suffix).rename(own.with_name(own.name + suffix))
    log.info("%s: renamed to %s (run ids now name every setting that differs from the paper's)", old, own.name)
    return True


def spec_path(out_dir, spec: RunSpec) -> Path:
    """<out_dir>/<experiment>/<run_id>.spec.json: the RunSpec handed to a run's worker process."""
    return path(out_dir, spec).with_name(spec.run_id() + ".spec.json")


def is_done(out_dir, spec: RunSpec) -> bool:
    return (path(out_dir, spec) / RESULT).exists()


@dataclass(frozen=True)
class RunConfig:
    """config.json: the run's description and the facts taken from its data."""

    spec: RunSpec
    num_classes: int
    data: dict = field(default_factory=dict)  # provenance: data sets, fold, fraction, clip counts

    def to_json(self) -> dict:
        return {"format": CONFIG_FORMAT, "spec": self.spec.to_json(), "num_classes": int(self.num_classes),
                "data": self.data}


class RunFolderError(UserError, ValueError):
    """A run folder that holds another computation than the one asked for."""


def differences(found: RunConfig, wanted: RunConfig) -> list[str]:
    """What makes two configurations different computations, as 'name: found -> wanted' strings
    (execution options, which compute the same thing another way, are not differences)."""
    out = []
    found_id, wanted_id = found.spec.identity(), wanted.spec.identity()
    for name in sorted(set(found_id) | set(wanted_id)):
        if found_id.get(name) != wanted_id.get(name):
            out.append(f"{name} {found_id.get(name)!r} -> {wanted_id.get(name)!r}")
    if found.num_classes != wanted.num_classes:
        out.append(f"classes {found.num_classes} -> {wanted.num_classes}")
    for name in ("target_data", "unlabeled_data"):
        before, after = found.data.get(name), wanted.data.get(name)
        if before and after and (before.get("content"), before.get("clips")) != (after.get("content"),
                                                                                   after.get("clips")):
            out.append(f"{name.replace('_', ' ')} {before.get('root')} ({before.get('clips')} clips, content "
                       f"{before.get('content')}) -> {after.get('root')} ({after.get('clips')} clips, content "
                       f"{after.get('content')})")
    return out


def execution_changes(found: RunConfig, wanted: RunConfig) -> list[str]:
    return [f"{k} {getattr(found.spec, k)!r} -> {getattr(wanted.spec, k)!r}" for k in SAME_COMPUTATION
            if getattr(found.spec, k) != getattr(wanted.spec, k)]


def check_same_run(run_dir, wanted: RunConfig) -> RunConfig:
    """The configuration in run_dir, checked to be `wanted`'s computation (RunFolderError if not)."""
    run_dir = Path(run_dir)
    try:
        found = read_config(run_dir)
    except ValueError as err:
        raise RunFolderError(f"{err}; rerun with --overwrite to start this run again") from err
    diffs = differences(found, wanted)
    if diffs:
        raise RunFolderError(f"{run_dir} holds another computation ({'; '.join(diffs)}); rerun with --overwrite "
                             "to replace it, or pass another --out_dir to keep both")
    return found


def write_config(run_dir, config: RunConfig) -> None:
    atomic_write_json(Path(run_dir) / CONFIG, config.to_json())


def read_config(run_dir) -> RunConfig:
    """A run's config.json, in this format or the first one (flat csr.train.RunConfig fields)."""
    file = Path(run_dir) / CONFIG
    obj = read_json(file)
    if not isinstance(obj, dict):
        raise ValueError(f"{file}: not a csr run configuration")
    try:
        if obj.get("format") == CONFIG_FORMAT:
            return RunConfig(RunSpec.from_json(obj["spec"]), int(obj["num_classes"]), dict(obj.get("data") or {}))
        return _from_first_format(obj)
    except (KeyError, TypeError, SpecError) as err:
        raise ValueError(f"{file}: not a csr run configuration ({err})") from err


# Settings of the first format that are not RunSpec fields: build_model arguments at their defaults.
_FIRST_FORMAT_DROPPED = {"scaling": "minmax", "hidden_dim": 128}


def _from_first_format(obj: dict) -> RunConfig:
    """config.json as csr wrote it before RunSpec held every setting (format 1)."""
    data = dict(obj.get("data") or {})
    flat = {k: v for k, v in obj.items() if k not in ("num_classes", "data", "model_kwargs")}
    for key, value in dict(obj.get("model_kwargs") or {}).items():
        if key in _FIRST_FORMAT_DROPPED:
            if value != _FIRST_FORMAT_DROPPED[key]:
                raise SpecError(f"model setting {key}={value!r} is no longer supported")
            continue
        flat[key] = value
    for key in ("experiment", "target", "unlabeled", "fraction", "fold"):
        if key in data:
            flat[key] = data[key]
    if flat.get("weights") is None and flat.get("method") == "supervised":
        flat["weights"] = RunSpec().weights  # format 1 stored the resolved (random) initialisation
    return RunConfig(RunSpec.from_json(flat), int(obj["num_classes"]), data)
