"""The training procedure of one run: warm-up and joint training (Algorithm 1), or a baseline.

One run = one RunSpec on one fold's data. `run` claims the run folder (config.json), builds the
network, resumes from the last checkpoint, trains each phase and writes the result:

  - a phase (`_Trainer.train_phase`) compiles a fresh Adam at the phase's learning rate and runs
    its epochs;
  - an epoch (`_Trainer.train_epoch`) trains with Keras `fit` on that epoch's batches (csr.pipeline),
    evaluates the held-out fold, appends a row to history.csv and writes a checkpoint.

A run killed at any point restarts from its last checkpoint and, because every batch and every
augmentation is a pure function of (seed, step), finishes with the same result.json as a run that
was never interrupted. A non-finite loss stops the run with `TrainingDiverged` and leaves the last
good checkpoint in place.

Execution (RunSpec's "execution" fields): `strategy` (csr.distribute: the model and optimizer are
created in its scope and fit splits each global batch over the replicas), `mixed_precision`
(Keras' mixed_float16 policy with dynamic loss scaling), `jit_compile` (XLA), `sync_bn`, and
`mix_on` (where batch-split mixing runs; csr.pipeline).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from csr import rundir
from csr.checkpoint import Checkpoints, Saved
from csr.errors import UserError
from csr.runio import atomic_path, atomic_write_json, atomic_write_text
from csr.spec import Phase, RunSpec, SpecError

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "phase", "learning_rate", "loss", "clf_loss", "reg_loss", "accuracy",
                   "contrastive_accuracy", "test_loss", "test_accuracy", "seconds")


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class RunData:
    """The arrays a run trains and tests on (waveforms may be float16 memmaps)."""

    train_waves: object
    train_labels: np.ndarray
    test_waves: object
    test_labels: np.ndarray
    unlabeled_waves: object = None
    num_classes: int | None = None  # None: one more than the largest label
    info: dict = field(default_factory=dict)  # provenance for config.json and result.json
    class_names: list | None = None  # index = label; written to class_names.json for csr.predict

    def classes(self) -> int:
        if self.num_classes is not None:
            return int(self.num_classes)
        return int(max(np.max(self.train_labels), np.max(self.test_labels)) + 1)


def summarize(test_accuracy: list[float], last_k: int = 20, final_phase: list[float] | None = None) -> dict:
    """Table 1's two numbers: *best* = the highest test accuracy of every epoch of the run, warm-up
    included ("the highest accuracy observed within the entire epochs"); *last* = the mean of the
    final phase's last `last_k` epochs (all of them when it has fewer). `final_phase` is the final
    phase's accuracies (default: every epoch); "epochs" counts them."""
    acc = [float(a) for a in test_accuracy]
    final = acc if final_phase is None else [float(a) for a in final_phase]
    if not acc or not final:
        raise ValueError("no epochs to summarise")
    return {"best": max(acc), "last": float(np.mean(final[-last_k:])), "epochs": len(final)}


def run(spec: RunSpec, data: RunData, run_dir, *, verbose: int = 2, stop_after_epoch: int | None = None,
        echo=None) -> dict:
    """Train one run into run_dir (resuming from its checkpoint) and return result.json's content.

    With `verbose`, each epoch's line (epoch_line) goes to `echo` (default: stdout, flushed, so a log
    file or a pipe sees each epoch as it ends).

    `stop_after_epoch` ends the process's work after that global epoch, as a kill would (tests use
    it to check that resuming gives the same result).
    """
    from csr.distribute import worker_subdir

    strategy = strategy_for(spec)
    # Every worker of a multi-worker run trains the same model; only the chief writes run_dir, the
    # others keep their own copy (and checkpoint) in a subfolder so that no two write one file.
    run_dir = Path(run_dir) / worker_subdir(strategy)
    config = rundir.RunConfig(spec, data.classes(), data.info)
    seed_run(spec)
    with strategy.scope():  # variables (model, optimizer, metrics) mirrored on every replica
        model = build_model_for(spec, config.num_classes)
    _claim(run_dir, config, data.class_names)  # only once the run can start: nothing blocks a fixed command
    trainer = _Trainer(spec, data, model, strategy, run_dir, verbose, echo)
    first_epoch = 0
    for phase in spec.phases():
        if not trainer.train_phase(phase, first_epoch, stop_after_epoch):
            return {}
        first_epoch += phase.epochs
    return trainer.finish(config)


def strategy_for(spec: RunSpec):
    """The run's tf.distribute strategy (csr.distribute), checked against its other options."""
    from csr.distribute import make_strategy

    strategy = make_strategy(spec.strategy)
    if spec.jit_compile and strategy.num_replicas_in_sync > 1:
        raise SpecError(
            f"jit_compile with strategy {spec.strategy!r} ({strategy.num_replicas_in_sync} replicas) is not "
            "supported: XLA-compiled steps run on one device here (Keras itself switches XLA off under "
            "tf.distribute); use --strategy=default or drop --jit_compile")
    return strategy


def _claim(run_dir: Path, config: rundir.RunConfig, class_names) -> None:
    """Write config.json (and class_names.json), or check that the config.json already there
    describes the same computation; a resume with other execution options is noted."""
    if (run_dir / rundir.CONFIG).exists():
        found = rundir.check_same_run(run_dir, config)
        changes = rundir.execution_changes(found, config)
        if changes:
            log.warning("%s: resuming with other execution options (%s); they compute the same run",
                        run_dir, "; ".join(changes))
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    if class_names is not None:
        atomic_write_json(run_dir / rundir.CLASS_NAMES, list(class_names))
    rundir.write_config(run_dir, config)


def seed_run(spec: RunSpec) -> None:
    """The same seed gives the same run: seeded initialisation and deterministic kernels."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(spec.seed)
    if spec.jit_compile:
        # XLA has no deterministic kernels for some ops (MaxPoolGrad on the CPU): an XLA run is
        # repeatable only up to floating-point reassociation.
        from tensorflow.python.framework import config as tf_config  # no public switch-off in TF 2.16

        tf_config.disable_op_determinism()
    else:
        tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def _dtype_policy(mixed_precision: bool):
    """Build under Keras' mixed_float16 policy when asked; the global policy is restored after."""
    import keras

    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model_for(spec: RunSpec, num_classes: int):
    """The run's network with its step options (and synchronised BatchNorm when asked), built in the
    dtype policy the run computes in. Call inside the strategy's scope."""
    from csr.model import build_model, set_sync_batchnorm

    with _dtype_policy(spec.mixed_precision):
        model = build_model(num_classes, **spec.model_settings())
    model.configure(options=spec.step_options())
    if spec.sync_bn:
        set_sync_batchnorm(model)
    return model


def compile_for(model, phase: Phase, jit_compile: bool):
    """Compile for a phase; returns the optimizer whose state is checkpointed (the loss-scale
    wrapper under mixed precision, so its scale resumes too)."""
    import keras

    model.configure(mode=phase.mode)
    # CSRModel.compile builds the optimizer's state; jit_compile is explicit (Keras' "auto" would
    # switch XLA on by itself on a GPU), so the same flags run the same computation everywhere.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=phase.learning_rate),
                  jit_compile=bool(jit_compile))
    return model.optimizer


class _Trainer:
    """The epochs of one run: resumed from the checkpoint, one phase at a time."""

    def __init__(self, spec: RunSpec, data: RunData, model, strategy, run_dir: Path, verbose: int, echo):
        import keras

        from csr import pipeline

        self.spec, self.data, self.model, self.strategy, self.verbose = spec, data, model, strategy, verbose
        self.echo = echo or functools.partial(print, flush=True)
        self.run_dir = run_dir
        self.checkpoints = Checkpoints(run_dir)
        self.resume_from = self.checkpoints.latest(remove_damaged=True)  # warns about a damaged one
        self.done = self.resume_from.epoch + 1 if self.resume_from else 0
        self.history_path = run_dir / rundir.HISTORY
        self.rows = [r for r in _read_history(self.history_path) if int(r["epoch"]) < self.done]
        self.test_ds = pipeline.evaluation_dataset(data.test_waves, data.test_labels, spec.eval_batch)
        self.mix_on = pipeline.resolve_mix_on(spec.mix_on)
        self.tensorboard = keras.callbacks.TensorBoard(log_dir=str(run_dir / rundir.TENSORBOARD))

    def train_phase(self, phase: Phase, first_epoch: int, stop_after_epoch: int | None) -> bool:
        """Train the phase's remaining epochs; False when stopped by `stop_after_epoch`."""
        end = first_epoch + phase.epochs
        if self.done >= end:
            return True
        with self.strategy.scope():
            optimizer = compile_for(self.model, phase, self.spec.jit_compile)
        if self.done > first_epoch:
            self.checkpoints.restore(self.resume_from, self.model, optimizer)  # resume inside this phase
        elif self.done > 0:
            # The previous phase finished: carry its weights, start this phase's optimizer afresh.
            self.checkpoints.restore(self.resume_from, self.model, None)
        for epoch in range(max(self.done, first_epoch), end):
            self.train_epoch(phase, epoch, epoch - first_epoch, optimizer)
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                return False
        return True

    def train_epoch(self, phase: Phase, epoch: int, local: int, optimizer) -> None:
        """One epoch (global index `epoch`, `local` within its phase): train, test, record, checkpoint."""
        start = time.time()
        fit = self.model.fit(self._dataset(phase, local), epochs=epoch + 1, initial_epoch=epoch,
                             verbose=1 if self.verbose == 1 else 0, callbacks=[self.tensorboard])
        logs = {k: float(v[-1]) for k, v in fit.history.items()}
        if not all(math.isfinite(v) for v in logs.values()):
            raise TrainingDiverged(
                f"{self.run_dir}: the loss became non-finite at epoch {epoch} ({phase.name}: "
                f"{', '.join(f'{k} {v:.4g}' for k, v in logs.items())}); the last good checkpoint is kept. A "
                "learning rate too high for this data is the usual cause: lower it (e.g. --joint_lr) and "
                "rerun with --overwrite")
        test = self.model.evaluate(self.test_ds, verbose=0, return_dict=True)
        row = {"epoch": epoch, "phase": phase.name, "learning_rate": phase.learning_rate,
               **{k: logs.get(k) for k in ("loss", "clf_loss", "reg_loss", "accuracy", "contrastive_accuracy")},
               "test_loss": float(test["loss"]), "test_accuracy": float(test["accuracy"]),
               "seconds": round(time.time() - start, 3)}
        self.rows.append(row)
        if self.verbose:
            self.echo(epoch_line(row, phase, local, self.spec))
        _write_history(self.history_path, self.rows)
        self.resume_from = Saved(epoch, self.checkpoints.save(self.model, optimizer, epoch))
        self.done = epoch + 1

    def _dataset(self, phase: Phase, local: int):
        from csr import pipeline

        spec, data = self.spec, self.data
        if phase.mode == "supervised":
            return pipeline.supervised_dataset(data.train_waves, data.train_labels, epoch=local,
                                               seed=spec.seed, batch_size=spec.labeled_batch)
        return pipeline.proposed_dataset(
            data.train_waves, data.train_labels, data.unlabeled_waves, epoch=local, seed=spec.seed,
            config=spec.augment_config(), labeled_batch=spec.labeled_batch,
            unlabeled_batch=spec.unlabeled_batch, mix_on=self.mix_on)

    def finish(self, config: rundir.RunConfig) -> dict:
        """Write the final weights and result.json (best over every epoch, last over the final phase)."""
        final = self.spec.phases()[-1].name
        accuracy = [float(r["test_accuracy"]) for r in self.rows]
        final_acc = [a for a, r in zip(accuracy, self.rows) if r["phase"] == final]
        result = {
            "method": self.spec.method,
            **summarize(accuracy, self.spec.last_k, final_acc),
            "best_epoch": int(np.argmax(accuracy)),
            "summary_phase": final,
            "test_accuracy": accuracy,
            "train_accuracy": [float(r["accuracy"]) for r in self.rows],
            "phase": [r["phase"] for r in self.rows],
            "data": config.data,
        }
        with atomic_path(self.run_dir / rundir.FINAL_WEIGHTS) as tmp:
            self.model.save_weights(str(tmp))
        atomic_write_json(self.run_dir / rundir.RESULT, result)
        return result


PHASE_LABELS = {"warmup": "warm-up", "joint": "joint", "supervised": "supervised"}


def epoch_line(row: dict, phase: Phase, local: int, spec: RunSpec) -> str:
    """One epoch as a run prints it: where it is in its phase and in the run, what it trained, what
    it scored on the held-out fold, e.g.
    `joint 12/100 · epoch 32/120 · loss 0.8123 (clf 0.1402, reg 13.44) · acc 96.9% · contrastive 41.2% ·
    test acc 81.2% · test loss 0.6610 · 12.3 s`."""
    total = sum(p.epochs for p in spec.phases())
    parts = [f"{PHASE_LABELS.get(phase.name, phase.name)} {local + 1}/{phase.epochs}",
             f"epoch {row['epoch'] + 1}/{total}"]
    loss = f"loss {row['loss']:.4f}"
    if row.get("reg_loss") is not None and phase.mode == "proposed":
        loss += f" (clf {row['clf_loss']:.4f}, reg {row['reg_loss']:.2f})"
    parts += [loss, f"acc {100 * row['accuracy']:.1f}%"]
    if row.get("contrastive_accuracy") is not None and phase.mode == "proposed":
        parts.append(f"contrastive {100 * row['contrastive_accuracy']:.1f}%")
    parts += [f"test acc {100 * row['test_accuracy']:.1f}%", f"test loss {row['test_loss']:.4f}",
              f"{row['seconds']:.1f} s"]
    return " · ".join(parts)


def _read_history(path: Path) -> list[dict]:
    import pandas as pd

    if not path.exists():
        return []
    # round_trip: the value written is the value read back, so a resumed run's result.json and
    # history.csv equal an uninterrupted run's to the last digit (the default parser is off by 1 ulp).
    return pd.read_csv(path, float_precision="round_trip").to_dict("records")


def _write_history(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    atomic_write_text(path, frame.to_csv(index=False))
