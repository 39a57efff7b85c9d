"""A run's checkpoints: every variable saved by what it is, the last two kept, verified on load.

After every epoch the trainer saves the variables of the model's four networks (front end, f, g_c,
g_p) and of the optimizer with `tf.train.Checkpoint`, matched by their place in the object graph
(layer names, not positions in a list; the optimizer's slots follow the order its variables were
built in), through a `tf.train.CheckpointManager` that keeps the last two:
`<run_dir>/checkpoints/epoch-<N>.index` and `.data-*`, N the global epoch.

`latest()` finds the newest checkpoint that reads back whole (every tensor is read, which checks
TensorFlow's per-tensor CRC32C); a damaged one is reported with a warning naming its files, removed,
and the older one used, so a torn write costs one epoch, not the run. Only when no checkpoint is
usable does it stop, naming the files and the choices. Runs written before this format kept one
`checkpoints/last.npz` (arrays by position); it is still read, once, to resume them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csr import rundir
from csr.errors import UserError

log = logging.getLogger(__name__)

KEEP = 2
PREFIX = "epoch"
LEGACY = "last.npz"


class CheckpointError(UserError, RuntimeError):
    """No usable checkpoint where one should be; the message names the files and the choices."""


@dataclass(frozen=True)
class Saved:
    """One checkpoint on disk: the global epoch it was written after, and its file prefix."""

    epoch: int
    prefix: Path

    @property
    def files(self) -> list[Path]:
        return sorted(self.prefix.parent.glob(self.prefix.name + ".*"))


class Checkpoints:
    """The checkpoints of one run folder."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir) / rundir.CHECKPOINTS
        self.legacy = self.dir / LEGACY

    def saved(self) -> list[Saved]:
        """Checkpoints on disk, newest first (by their index files)."""
        found = []
        for index in self.dir.glob(f"{PREFIX}-*.index"):
            match = re.fullmatch(rf"{PREFIX}-(\d+)\.index", index.name)
            if match:
                found.append(Saved(int(match.group(1)), index.with_suffix("")))
        return sorted(found, key=lambda s: -s.epoch)

    def exists(self) -> bool:
        return bool(self.saved()) or self.legacy.exists()

    def save(self, model, optimizer, epoch: int) -> Path:
        """Write the checkpoint after global epoch `epoch`; the manager removes all but the last KEEP."""
        import tensorflow as tf

        state = tf.train.Checkpoint(**_networks(model), optimizer=optimizer,
                                    epoch=tf.Variable(epoch, dtype=tf.int64))
        manager = tf.train.CheckpointManager(state, str(self.dir), max_to_keep=KEEP, checkpoint_name=PREFIX)
        path = Path(manager.save(checkpoint_number=epoch))
        self.legacy.unlink(missing_ok=True)  # superseded by the first checkpoint in this format
        return path

    def latest(self, remove_damaged: bool = False) -> Saved | None:
        """The newest checkpoint that reads back whole, or None when the run has none.

        A damaged checkpoint is reported (and removed with `remove_damaged`, as the trainer does
        before it writes the next one); when every one is damaged the run cannot resume, and
        CheckpointError says which files and what to do.
        """
        damaged = []
        for saved in self.saved():
            problem = _unreadable(saved.prefix)
            if problem is None:
                return saved
            log.warning("%s: damaged checkpoint (%s); falling back to the one before it",
                        ", ".join(str(f) for f in saved.files), problem)
            damaged.append(saved)
            for file in saved.files if remove_damaged else ():
                file.unlink(missing_ok=True)
        if self.legacy.exists():
            epoch = _legacy_epoch(self.legacy)
            if epoch is not None:
                return Saved(epoch, self.legacy)
            damaged.append(Saved(-1, self.legacy))
        if damaged:
            names = ", ".join(s.prefix.name for s in damaged)
            raise CheckpointError(
                f"{self.dir}: no usable checkpoint ({names} damaged: a disk problem or a copy cut short); "
                "rerun with --overwrite to start this run again, or delete the run folder")
        return None

    def restore(self, saved: Saved, model, optimizer=None) -> None:
        """Load `saved` into the model and, when given, the optimizer (else the model alone)."""
        if saved.prefix == self.legacy:
            _restore_legacy(self.legacy, model, optimizer)
            return
        import tensorflow as tf

        parts = _networks(model) if optimizer is None else {**_networks(model), "optimizer": optimizer}
        try:
            status = tf.train.Checkpoint(**parts).restore(str(saved.prefix))
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError) as err:
            raise CheckpointError(f"{saved.prefix}: does not fit the model rebuilt from {rundir.CONFIG} "
                                  f"({err}); rerun with --overwrite to start this run again") from err
        if optimizer is None:
            status.expect_partial()


def _networks(model) -> dict:
    """The model's four networks, saved under their own names. Not the model itself: a compiled
    Keras model depends on its optimizer, so restoring it would also load the optimizer state into
    the fresh optimizer a new phase starts with."""
    return {"frontend": model.frontend, "backbone": model.backbone, "classifier": model.classifier,
            "projector": model.projector}


def _unreadable(prefix: Path) -> str | None:
    """Why the checkpoint at `prefix` cannot be read back whole, or None (every tensor is read)."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as err:  # noqa: BLE001 - truncation shows up as IndexError, DataLossError, ...
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else 'unreadable'}"
    return None


def _legacy_epoch(path: Path) -> int | None:
    """The epoch of a last.npz checkpoint, or None when it does not read back whole."""
    try:
        with np.load(path) as z:
            for key in z.files:
                z[key]
            return int(z["epoch"])
    except Exception as err:  # noqa: BLE001 - zipfile.BadZipFile, EOFError, KeyError, ...
        log.warning("%s: damaged checkpoint (%s: %s)", path, type(err).__name__, err)
        return None


def _restore_legacy(path: Path, model, optimizer=None) -> None:
    """last.npz, written before checkpoints were saved by name: arrays w<i> / o<i> in the order of
    model.weights / optimizer.variables."""
    targets = [(f"w{i}", v) for i, v in enumerate(model.weights)]
    if optimizer is not None:
        targets += [(f"o{i}", v) for i, v in enumerate(optimizer.variables)]
    with np.load(path) as z:
        if any(k not in z.files for k, _ in targets) or f"w{len(model.weights)}" in z.files:
            raise CheckpointError(f"{path}: checkpoint does not match the model; rerun with --overwrite")
        for key, var in targets:
            if tuple(z[key].shape) != tuple(var.shape):
                raise CheckpointError(f"{path}: {key} has shape {z[key].shape}, the model expects {var.shape}")
            var.assign(z[key])
