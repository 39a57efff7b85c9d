"""Classify audio files with a trained run: top-k classes and, optionally, backbone embeddings.

The command line is csr.cli.predict (`csr-predict --run RUN_DIR FILE...`). The network is rebuilt
from the run's config.json and given the run's final weights (model.weights.h5) or, for a run that
has not finished, its last checkpoint. Each file goes through `csr.audio.load_audio` exactly as
training clips do (mono, the model's sample rate, RMS-normalised over the whole file, first clip
length, zero-padded). With `windows` a file is instead cut into consecutive non-overlapping
clip-length windows covering all of it and the softmax is averaged over them, as is the embedding;
a last window holding at least half a clip of audio is zero-padded, a shorter remainder is dropped.
Class names come from the run's class_names.json (a JSON list, index = label); without it classes
print as class_<i>. A file that cannot be read is reported in its FileResult; the others are still
classified.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from csr import rundir
from csr.errors import UserError
from csr.runio import atomic_write, atomic_write_text, read_json


class PredictError(UserError, ValueError):
    """A run directory that cannot be used for prediction; the message names the run and the problem."""


@dataclass
class FileResult:
    """One file's outcome: class probabilities and the top-k, or the error that stopped it."""

    path: str
    top: list = field(default_factory=list)  # [(label, name, probability)], most probable first
    probabilities: np.ndarray | None = None  # (num_classes,), softmax (mean over windows)
    embedding: np.ndarray | None = None  # (D,) backbone features (mean over windows)
    windows: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def default_class_names(num_classes: int) -> list[str]:
    return [f"class_{i}" for i in range(int(num_classes))]


def load_class_names(run_dir, num_classes: int | None = None) -> list[str] | None:
    """The run's class names (class_names.json, index = label), or None when the run has none.

    A file that exists but is not a list of strings, or lists a different number of classes than
    the model has, is an error: printing the wrong name for a class is worse than printing none.
    """
    path = Path(run_dir) / rundir.CLASS_NAMES
    if not path.is_file():
        return None
    names = read_json(path)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PredictError(f"{path}: expected a JSON list of class names (strings), got {names!r:.200}")
    if num_classes is not None and len(names) != int(num_classes):
        raise PredictError(f"{path}: lists {len(names)} class names, but the run's model has "
                           f"{num_classes} classes")
    return names


def load_run(run_dir):
    """(model, class_names, info) for a run directory.

    info: run_dir, weights (the file loaded), finished (False when only a checkpoint exists),
    epoch/phase (of the checkpoint), sample_rate, clip_samples, named (class_names.json found),
    note (a message for the user, or None).
    """
    from csr.checkpoint import Checkpoints
    from csr.export import ExportError, is_export_dir, load_export
    from csr.model import build_model

    run_dir = Path(run_dir)
    if is_export_dir(run_dir):  # a csr-export folder: the exported model, without csr.model
        try:
            exported = load_export(run_dir)
        except ExportError as err:
            raise PredictError(str(err)) from err
        return exported, exported.class_names, exported.info
    if not run_dir.is_dir():
        raise PredictError(f"{run_dir}: run directory not found")
    if not (run_dir / rundir.CONFIG).is_file():
        raise PredictError(f"{run_dir}: not a run directory (no {rundir.CONFIG})")
    try:
        config = rundir.read_config(run_dir)
    except ValueError as err:
        raise PredictError(str(err)) from err
    names = load_class_names(run_dir, config.num_classes)
    model = build_model(config.num_classes, **{**config.spec.model_settings(), "weights": None})
    final, checkpoints = run_dir / rundir.FINAL_WEIGHTS, Checkpoints(run_dir)
    info = {"run_dir": str(run_dir), "finished": True, "epoch": None, "phase": None,
            "sample_rate": config.spec.sample_rate, "clip_samples": config.spec.clip_samples,
            "named": names is not None, "note": None}
    if final.is_file():
        try:
            model.load_weights(str(final))
        except Exception as err:  # noqa: BLE001 - Keras' message names neither the file nor the run
            raise PredictError(f"{final}: cannot load into the model rebuilt from {rundir.CONFIG} "
                               f"({err})") from err
        info["weights"] = str(final)
    elif checkpoints.exists():
        saved = checkpoints.latest()  # the newest that reads back whole; a damaged one is named
        checkpoints.restore(saved, model)
        info.update(weights=str(saved.prefix), finished=False, epoch=saved.epoch,
                    phase=config.spec.phase_of(saved.epoch).name)
        info["note"] = (f"{run_dir}: the run has not finished (no {rundir.FINAL_WEIGHTS}); using its last "
                        f"checkpoint, epoch {info['epoch']} ({info['phase']})")
    else:
        raise PredictError(f"{run_dir}: no trained weights: neither {rundir.FINAL_WEIGHTS} nor a checkpoint "
                           f"in {rundir.CHECKPOINTS}/ exists (has the run finished an epoch?)")
    return model, names or default_class_names(num_classes=config.num_classes), info


def _num_windows(path, sample_rate, clip_samples) -> int:
    """How many clip-length windows cover the file once resampled (read from the header only).

    A trailing remainder shorter than half a clip is dropped rather than padded into a window that
    is mostly silence (ESC-50's "5 s" files run a millisecond over and would otherwise get a second,
    empty window weighing as much as the real one); a file shorter than a clip is one window.
    """
    import soundfile as sf

    from csr.audio import AudioError, read_audio

    if not Path(path).is_file() or Path(path).stat().st_size == 0:
        read_audio(path)  # raises load_audio's own error (not found / not a file / empty)
    try:
        header = sf.info(os.fspath(path))
    except Exception as err:  # noqa: BLE001 - any header failure is this file's problem
        raise AudioError(f"{path}: cannot decode audio ({err})") from err
    if header.samplerate <= 0:
        raise AudioError(f"{path}: file reports an invalid sample rate {header.samplerate!r}")
    return max(1, math.floor(header.frames * sample_rate / (header.samplerate * clip_samples) + 0.5))


def load_windows(path, sample_rate, clip_samples, windows: bool = False) -> np.ndarray:
    """(n, clip_samples) float32: the training clip (n = 1), or every window of the file."""
    from csr.audio import fit_length, load_audio

    count = _num_windows(path, sample_rate, clip_samples) if windows else 1
    wave = load_audio(path, sr=sample_rate, seconds=count * clip_samples / sample_rate)
    # fit_length guards against int(sr * seconds) rounding one sample short.
    return fit_length(wave, count * clip_samples).reshape(count, clip_samples)


def _forward(model):
    """One traced function for every batch: (embeddings, logits) with BatchNorm in inference mode."""
    import tensorflow as tf

    from csr.export import ExportedModel

    if isinstance(model, ExportedModel):
        return model.forward
    samples = int(model.build_kwargs["clip_samples"])

    @tf.function(input_signature=[tf.TensorSpec([None, samples], tf.float32)])
    def forward(waves):
        return model.embed_and_classify(waves)

    return forward


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def predict_files(model, paths, top_k: int = 3, class_names=None, *, windows: bool = False,
                  batch_size: int = 16) -> list[FileResult]:
    """Classify each file; one FileResult per path, in order, failures included (error set).

    Clips from several files share a batch of `batch_size` windows; results do not depend on it.
    """
    from csr.audio import AudioError

    if int(top_k) < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    num_classes = int(model.build_kwargs["num_classes"])
    names = list(class_names) if class_names is not None else default_class_names(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for a model with {num_classes} classes")
    sr, clip = model.build_kwargs["sample_rate"], int(model.build_kwargs["clip_samples"])
    forward = _forward(model)
    results = [FileResult(path=os.fspath(p)) for p in paths]
    pending: list[tuple[FileResult, np.ndarray]] = []

    def flush():
        waves = np.concatenate([w for _, w in pending])
        feats, logits = [], []
        for start in range(0, len(waves), int(batch_size)):
            features, batch_logits = forward(waves[start:start + int(batch_size)])
            feats.append(np.asarray(features))
            logits.append(np.asarray(batch_logits))
        feats, probs = np.concatenate(feats), _softmax(np.concatenate(logits).astype(np.float64))
        start = 0
        for result, w in pending:
            stop = start + len(w)
            result.probabilities = probs[start:stop].mean(axis=0)
            result.embedding = feats[start:stop].mean(axis=0)
            order = np.argsort(-result.probabilities, kind="stable")[:top_k]
            result.top = [(int(i), names[i], float(result.probabilities[i])) for i in order]
            start = stop
        pending.clear()

    for result in results:
        try:
            w = load_windows(result.path, sr, clip, windows)
        except AudioError as err:
            result.error = str(err)
            continue
        result.windows = len(w)
        pending.append((result, w))
        if sum(len(x) for _, x in pending) >= batch_size:
            flush()
    if pending:
        flush()
    return results


def sidecar_path(out) -> Path:
    """OUT.npy -> OUT.files.txt: the file names, one a line, in the embedding's row order."""
    out = Path(out)
    stem = out.name[:-4] if out.name.endswith(".npy") else out.name
    return out.with_name(stem + ".files.txt")


def write_embeddings(out, results, dim: int) -> Path:
    """Write the succeeded files' embeddings (n, dim) float32 to `out` (exactly that name) and the
    sidecar; both atomically. Returns the sidecar's path."""
    ok = [r for r in results if r.ok]
    array = (np.stack([r.embedding for r in ok]).astype(np.float32) if ok
             else np.zeros((0, int(dim)), np.float32))
    out = Path(out)
    with atomic_write(out, "wb") as fh:
        np.save(fh, array)  # a file handle: np.save would append .npy to a bare name
    side = sidecar_path(out)
    atomic_write_text(side, "".join(f"{r.path}\n" for r in ok))
    return side


def format_result(result: FileResult) -> str:
    windows = f"  ({result.windows} windows, mean probability)" if result.windows > 1 else ""
    width = max(len(name) for _, name, _ in result.top)
    lines = [f"{result.path}{windows}"]
    lines += [f"  {rank}. {name:<{width}}  {p:.4f}" for rank, (_, name, p) in enumerate(result.top, 1)]
    return "\n".join(lines)
