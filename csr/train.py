"""The training procedure of one run: warm-up and joint training, or a supervised baseline.

One run = one method on one fold. Each epoch trains with Keras `fit` (progress bar, TensorBoard),
evaluates the held-out fold, appends a row to history.csv and writes a checkpoint (weights and
optimizer state) atomically. A run killed at any point restarts from its last checkpoint and,
because every batch and every augmentation is a pure function of (seed, step), finishes with the
same result.json as a run that was never interrupted. A non-finite loss stops the run with
`TrainingDiverged` and leaves the last good checkpoint in place.
"""

from __future__ import annotations

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

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")

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


def _build(cfg: RunConfig):
    from csr.model import build_model

    weights = None if cfg.method == "supervised" else cfg.weights
    model = build_model(cfg.num_classes, backbone=cfg.backbone, weights=weights, seed=cfg.seed,
                        **cfg.model_kwargs)
    model.reg_weight = cfg.reg_weight
    model.temperature = cfg.temperature
    return model


def _compile(model, phase: Phase):
    import keras

    model.mode = phase.mode
    optimizer = keras.optimizers.Adam(learning_rate=phase.learning_rate)
    model.compile(optimizer=optimizer)  # CSRModel.compile builds the optimizer's state
    return optimizer


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

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    if config_path.exists():
        saved = read_json(config_path)
        if saved != json.loads(json.dumps(cfg.to_json())):
            raise ValueError(f"{config_path}: a different configuration already lives in this run "
                             "directory; use another --out_dir or --overwrite")
    else:
        atomic_write_json(config_path, cfg.to_json())

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
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
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"))

    first_epoch = 0
    for phase in phases:
        phase_end = first_epoch + phase.epochs
        if done_epochs >= phase_end:
            first_epoch = phase_end
            continue
        optimizer = _compile(model, phase)
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
                    unlabeled_batch=cfg.unlabeled_batch)
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
