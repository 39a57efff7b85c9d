"""The training procedure of one run: warm-up and joint training, or a supervised baseline.

One run = one method on one fold. Each epoch trains with Keras `fit` (progress bar, TensorBoard),
evaluates the held-out fold, appends a row to history.csv and writes a checkpoint (weights and
optimizer state) atomically. A run killed at any point restarts from its last checkpoint and,
because every batch and every augmentation is a pure function of (seed, step), finishes with the
same result.json as a run that was never interrupted. A non-finite loss stops the run with
`TrainingDiverged` and leaves the last good checkpoint in place.

Scale options (RunConfig): `strategy` (csr.distribute: one device, all local GPUs, or several
machines; the model and optimizer are created in its scope and fit splits each global batch over
the replicas), `mixed_precision` (Keras' mixed_float16 policy with dynamic loss scaling; the front
end, logits, similarities and losses stay float32), `jit_compile` (XLA for the train and test
steps), `sync_bn`, `local_negatives` and `single_pass` (see csr.model.CSRModel), `mix_on` (where
batch-split mixing runs; csr.pipeline).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from csr import config as C
from csr.runio import atomic_write_json, atomic_write_text, read_json

METHODS = ("supervised", "supervised_imagenet", "proposed", "no_mixing", "no_unlabeled")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs with one training mode and one Adam learning rate."""

    name: str  # "warmup", "joint" or "supervised"
    mode: str  # CSRModel.mode: "supervised" or "proposed"
    epochs: int
    learning_rate: float


@dataclass
class RunConfig:
    """Everything that determines a run; saved as config.json."""

    method: str = "proposed"
    num_classes: int = 10
    seed: int = 0
    backbone: str = "resnet50v2"
    weights: str | None = "imagenet"
    warmup_epochs: int = 20
    joint_epochs: int = 100
    supervised_epochs: int = 200
    warmup_lr: float = 1e-4
    joint_lr: float = 1e-5
    supervised_lr: float = 1e-4
    labeled_batch: int = C.LABELED_BATCH
    unlabeled_batch: int = C.UNLABELED_BATCH
    eval_batch: int = 32
    reg_weight: float = C.REG_WEIGHT
    temperature: float = C.TEMPERATURE
    last_k: int = 20
    mix_snr_db: tuple = C.MIX_SNR_DB
    noise_snr_db: tuple = C.NOISE_SNR_DB
    model_kwargs: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # provenance only: dataset names, fold, fraction, counts
    strategy: str = "default"  # csr.distribute.STRATEGIES
    mixed_precision: bool = False
    jit_compile: bool = False
    sync_bn: bool = False
    local_negatives: bool = False
    single_pass: bool = False
    mix_on: str = "auto"  # config.MIX_ON: where batch-split mixing runs

    def __post_init__(self):
        from csr.distribute import STRATEGIES

        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.mix_on not in C.MIX_ON:
            raise ValueError(f"unknown mix_on {self.mix_on!r}; choose one of {', '.join(C.MIX_ON)}")

    def phases(self) -> list[Phase]:
        if self.method in ("supervised", "supervised_imagenet"):
            return [Phase("supervised", "supervised", self.supervised_epochs, self.supervised_lr)]
        phases = []
        if self.warmup_epochs > 0:
            phases.append(Phase("warmup", "supervised", self.warmup_epochs, self.warmup_lr))
        phases.append(Phase("joint", "proposed", self.joint_epochs, self.joint_lr))
        return phases

    def augment_config(self):
        from csr.augment import AugmentConfig

        return AugmentConfig(
            mix_snr_db=tuple(self.mix_snr_db),
            noise_snr_db=tuple(self.noise_snr_db),
            mixing=self.method != "no_mixing",
            use_unlabeled=self.method != "no_unlabeled",
        )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def summarize(test_accuracy: list[float], last_k: int = 20) -> dict:
    """best = the highest test accuracy; last = the mean of the last `last_k` epochs (Table 1)."""
    acc = [float(a) for a in test_accuracy]
    if not acc:
        raise ValueError("no epochs to summarise")
    return {"best": max(acc), "last": float(np.mean(acc[-last_k:])), "epochs": len(acc)}


@dataclass
class RunData:
    """The arrays a run trains and tests on (waveforms may be float16 memmaps)."""

    train_waves: object
    train_labels: np.ndarray
    test_waves: object
    test_labels: np.ndarray
    unlabeled_waves: object = None


class _Checkpoint:
    """Weights + optimizer state + position, written atomically after every epoch."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / "checkpoints"
        self.path = self.dir / "last.npz"

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, model, optimizer, epoch: int, phase: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        arrays = {f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)}
        arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
        arrays["epoch"] = np.int64(epoch)
        arrays["phase"] = np.array(phase)
        tmp = self.dir / "last.tmp.npz"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def position(self) -> tuple[int, str]:
        with np.load(self.path) as z:
            return int(z["epoch"]), str(z["phase"])

    def restore(self, model, optimizer=None) -> None:
        """Load the model's weights and, when given, the optimizer's state."""
        targets = [(f"w{i}", v) for i, v in enumerate(model.weights)]
        if optimizer is not None:
            targets += [(f"o{i}", v) for i, v in enumerate(optimizer.variables)]
        with np.load(self.path) as z:
            missing = [k for k, _ in targets if k not in z.files]
            if missing or f"w{len(model.weights)}" in z.files:
                raise ValueError(f"{self.path}: checkpoint does not match the model; "
                                 "delete the run directory or use --overwrite")
            for key, var in targets:
                if tuple(z[key].shape) != tuple(var.shape):
                    raise ValueError(f"{self.path}: {key} has shape {z[key].shape}, model expects {var.shape}")
                var.assign(z[key])


# Fields added after the first runs were written: a config.json without them ran with these values.
_LATER_FIELDS = {"strategy": "default", "mixed_precision": False, "jit_compile": False,
                 "sync_bn": False, "local_negatives": False, "single_pass": False, "mix_on": "auto"}


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


def _build(cfg: RunConfig):
    from csr.distribute import set_sync_batchnorm
    from csr.model import build_model

    weights = None if cfg.method == "supervised" else cfg.weights
    with _dtype_policy(cfg.mixed_precision):
        model = build_model(cfg.num_classes, backbone=cfg.backbone, weights=weights, seed=cfg.seed,
                            **cfg.model_kwargs)
    model.reg_weight = cfg.reg_weight
    model.temperature = cfg.temperature
    model.local_negatives = cfg.local_negatives
    model.single_pass = cfg.single_pass
    if cfg.sync_bn:
        set_sync_batchnorm(model)
    return model


def _compile(model, phase: Phase, jit_compile: bool = False):
    """Compile for a phase; returns the optimizer whose state is checkpointed (the loss-scale
    wrapper under mixed precision, so its scale resumes too)."""
    import keras

    model.mode = phase.mode
    optimizer = keras.optimizers.Adam(learning_rate=phase.learning_rate)
    # CSRModel.compile builds the optimizer's state; jit_compile is explicit (Keras' "auto" would
    # switch XLA on by itself on a GPU), so the same flags run the same computation everywhere.
    model.compile(optimizer=optimizer, jit_compile=bool(jit_compile))
    return model.optimizer


def _history_columns():
    return ["epoch", "phase", "learning_rate", "loss", "clf_loss", "reg_loss", "accuracy",
            "contrastive_accuracy", "test_loss", "test_accuracy", "seconds"]


def _read_history(path: Path) -> list[dict]:
    import pandas as pd

    if not path.exists():
        return []
    return pd.read_csv(path).to_dict("records")


def _write_history(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=_history_columns())
    atomic_write_text(path, frame.to_csv(index=False))


def run(cfg: RunConfig, data: RunData, run_dir, *, verbose: int = 2, stop_after_epoch: int | None = None) -> dict:
    """Train one run into run_dir (resuming from its checkpoint) and return result.json's content.

    `stop_after_epoch` ends the process's work after that global epoch, as a kill would (tests use
    it to check that resuming gives the same result).
    """
    import keras
    import tensorflow as tf

    from csr import pipeline
    from csr.distribute import make_strategy, worker_subdir

    strategy = make_strategy(cfg.strategy)
    if cfg.jit_compile and strategy.num_replicas_in_sync > 1:
        raise ValueError(
            f"jit_compile with strategy {cfg.strategy!r} ({strategy.num_replicas_in_sync} replicas) is not "
            "supported: XLA-compiled steps run on one device here (Keras itself switches XLA off under "
            "tf.distribute); use --strategy=default or drop --jit_compile")
    # Every worker of a multi-worker run trains the same model; only the chief writes run_dir, the
    # others keep their own copy (and checkpoint) in a subfolder so that no two write one file.
    run_dir = Path(run_dir) / worker_subdir(strategy)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    if config_path.exists():
        saved = {**_LATER_FIELDS, **read_json(config_path)}
        if saved != json.loads(json.dumps(cfg.to_json())):
            raise ValueError(f"{config_path}: a different configuration already lives in this run "
                             "directory; use another --out_dir or --overwrite")
    else:
        atomic_write_json(config_path, cfg.to_json())

    keras.utils.set_random_seed(cfg.seed)
    if cfg.jit_compile:
        # XLA has no deterministic kernels for some ops (MaxPoolGrad on the CPU): an XLA run is
        # repeatable only up to floating-point reassociation.
        from tensorflow.python.framework import config as tf_config  # no public switch-off in TF 2.16

        tf_config.disable_op_determinism()
    else:
        tf.config.experimental.enable_op_determinism()
    with strategy.scope():  # variables (model, optimizer, metrics) mirrored on every replica
        model = _build(cfg)
    phases = cfg.phases()
    ckpt = _Checkpoint(run_dir)
    history_path = run_dir / "history.csv"
    rows = _read_history(history_path)
    done_epochs = 0
    if ckpt.exists():
        done_epochs = ckpt.position()[0] + 1
        rows = [r for r in rows if int(r["epoch"]) < done_epochs]
    test_ds = pipeline.evaluation_dataset(data.test_waves, data.test_labels, cfg.eval_batch)
    augment = cfg.augment_config()
    model.augment = augment  # used when the step mixes (mix_on "device")
    mix_on = pipeline.resolve_mix_on(cfg.mix_on)
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"))

    first_epoch = 0
    for phase in phases:
        phase_end = first_epoch + phase.epochs
        if done_epochs >= phase_end:
            first_epoch = phase_end
            continue
        with strategy.scope():
            optimizer = _compile(model, phase, cfg.jit_compile)
        if done_epochs > first_epoch:
            ckpt.restore(model, optimizer)  # resume inside this phase
        elif done_epochs > 0:
            # The previous phase finished: carry its weights, start this phase's optimizer afresh.
            ckpt.restore(model, None)
        for epoch in range(max(done_epochs, first_epoch), phase_end):
            start = time.time()
            local = epoch - first_epoch
            if phase.mode == "supervised":
                train_ds = pipeline.supervised_dataset(
                    data.train_waves, data.train_labels, epoch=local, seed=cfg.seed,
                    batch_size=cfg.labeled_batch)
            else:
                train_ds = pipeline.proposed_dataset(
                    data.train_waves, data.train_labels, data.unlabeled_waves, epoch=local,
                    seed=cfg.seed, config=augment, labeled_batch=cfg.labeled_batch,
                    unlabeled_batch=cfg.unlabeled_batch, mix_on=mix_on)
            fit = model.fit(train_ds, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose,
                            callbacks=[tensorboard])
            logs = {k: float(v[-1]) for k, v in fit.history.items()}
            if not all(math.isfinite(v) for v in logs.values()):
                raise TrainingDiverged(
                    f"{run_dir}: non-finite training metrics at epoch {epoch} ({phase.name}): {logs}; "
                    f"the last good checkpoint ({ckpt.path}) is kept")
            test = model.evaluate(test_ds, verbose=0, return_dict=True)
            row = {"epoch": epoch, "phase": phase.name, "learning_rate": phase.learning_rate,
                   "loss": logs.get("loss"), "clf_loss": logs.get("clf_loss"),
                   "reg_loss": logs.get("reg_loss"), "accuracy": logs.get("accuracy"),
                   "contrastive_accuracy": logs.get("contrastive_accuracy"),
                   "test_loss": float(test["loss"]), "test_accuracy": float(test["accuracy"]),
                   "seconds": round(time.time() - start, 3)}
            rows.append(row)
            _write_history(history_path, rows)
            ckpt.save(model, optimizer, epoch, phase.name)
            done_epochs = epoch + 1
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                return {}
        first_epoch = phase_end

    final = phases[-1].name
    final_acc = [float(r["test_accuracy"]) for r in rows if r["phase"] == final]
    result = {
        "method": cfg.method,
        **summarize(final_acc, cfg.last_k),
        "summary_phase": final,
        "test_accuracy": [float(r["test_accuracy"]) for r in rows],
        "train_accuracy": [float(r["accuracy"]) for r in rows],
        "phase": [r["phase"] for r in rows],
        "data": cfg.data,
    }
    model.save_weights(str(run_dir / "model.weights.h5"))
    atomic_write_json(run_dir / "result.json", result)
    return result
