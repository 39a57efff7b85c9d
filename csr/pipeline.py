"""tf.data input pipelines: which clips each step sees, fetched from the waveform cache and mixed.

Every step's indices come from `stream_indices`, a pure function of (seed, position in the stream),
so an epoch's batches are the same whether the run started at epoch 0 or resumed at epoch k: this is
what makes a killed run resume to the same result. The labeled set is read as an endless stream of
reshuffled passes, cut into full batches; an epoch is ceil(n_labeled / batch) steps, so every batch
is full (the batch that wraps past the end of one pass takes its tail from the next shuffle) and the
unlabeled stream simply continues from where the previous epoch stopped ("unlabeled data cycles").

Joint training's batch-split mixing runs where `mix_on` says: "host" mixes in the tf.data map, so
the model receives finished views; "device" sends the raw clips and the step's seed, and
CSRModel.train_step mixes them on the accelerator. Both draw the same random numbers from the same
(seed, step), so they give the same batches; "device" leaves the host only a memmap gather per
step (thousands of clips/s), which keeps a fast GPU fed by a few CPU cores. "auto" picks "device"
when a GPU is visible.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from csr.augment import (
    CPU_CHUNK_ROWS,
    AugmentConfig,
    mixed_views,
    row_labels,  # noqa: F401  (re-exported: pipeline.row_labels)
)
from csr.config import MIX_ON

AUTOTUNE = tf.data.AUTOTUNE
DEVICE_MIX_KEYS = ("x", "y", "u", "mix_seed")  # a "device" batch: raw clips and the step's seed


def resolve_mix_on(mix_on: str) -> str:
    """"auto" -> "device" when a GPU is visible, else "host"; checks the value."""
    if mix_on not in MIX_ON:
        raise ValueError(f"mix_on must be one of {', '.join(MIX_ON)}, got {mix_on!r}")
    if mix_on == "auto":
        return "device" if tf.config.list_logical_devices("GPU") else "host"
    return mix_on


def stream_indices(n: int, seed: int, start: int, count: int) -> np.ndarray:
    """Positions [start, start+count) of an endless stream of seeded permutations of range(n)."""
    if n <= 0:
        raise ValueError("cannot draw from an empty set of clips")
    out = np.empty(count, dtype=np.int64)
    pos = start
    filled = 0
    while filled < count:
        cycle, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, cycle]).permutation(n)
        take = min(n - offset, count - filled)
        out[filled:filled + take] = perm[offset:offset + take]
        filled += take
        pos += take
    return out


def steps_per_epoch(n_labeled: int, batch_size: int) -> int:
    """One epoch is one pass over the labeled set, in full batches."""
    return max(1, math.ceil(n_labeled / batch_size))


def _fetcher(waves):
    """A graph op that gathers rows of a (N, samples) array (often a float16 memmap) as float32."""
    num_samples = int(waves.shape[1])

    def fetch(idx):
        return np.asarray(waves[np.asarray(idx)], dtype=np.float32)

    def op(idx):
        rows = tf.numpy_function(fetch, [idx], tf.float32, stateful=False)
        rows.set_shape([None, num_samples])
        return rows

    return op


def _epoch_index_plan(n, seed, epoch, steps, batch_size):
    idx = stream_indices(n, seed, epoch * steps * batch_size, steps * batch_size)
    return idx.reshape(steps, batch_size)


def supervised_dataset(waves, labels, *, epoch: int, seed: int, batch_size: int = 8) -> tf.data.Dataset:
    """(x, y) batches for one epoch of supervised training, reshuffled by epoch."""
    labels = np.asarray(labels, dtype=np.int32)
    steps = steps_per_epoch(len(labels), batch_size)
    plan = _epoch_index_plan(len(labels), seed, epoch, steps, batch_size)
    fetch = _fetcher(waves)
    ds = tf.data.Dataset.from_tensor_slices((plan, labels[plan]))
    ds = ds.map(lambda i, y: (fetch(i), y), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def proposed_dataset(
    waves,
    labels,
    unlabeled_waves,
    *,
    epoch: int,
    seed: int,
    config: AugmentConfig = AugmentConfig(),
    labeled_batch: int = 8,
    unlabeled_batch: int = 32,
    mix_on: str = "host",
) -> tf.data.Dataset:
    """Dict batches for one epoch of joint training: labeled x, y and the batch-split-mixed views.

    mix_on "host": each element is `csr.augment.mixed_views` (Algorithm 1, lines 4-8): "x" (labeled
    waveforms), "y" (their labels), "s1", "s1_aug", "s2", "s2_aug" and "s1_y", "s2_y" (the label of
    each row of s1 and s2, -1 for an unlabeled clip: the x rows are rows of s1 and s2, which lets the
    single-pass step classify them from the views' backbone pass and keeps each label beside its row
    when tf.distribute splits the batch across replicas).
    mix_on "device": each element is DEVICE_MIX_KEYS: "x", "y", "u" (the unlabeled clips) and
    "mix_seed" (the step's seed, repeated on every labeled row so it travels with the rows when a
    strategy splits the batch); CSRModel.train_step makes the same views from them.
    With config.use_unlabeled False (the -Unlabeled ablation) or no unlabeled clips, the contrastive
    batch is the labeled batch alone.
    """
    mix_on = resolve_mix_on(mix_on)
    labels = np.asarray(labels, dtype=np.int32)
    steps = steps_per_epoch(len(labels), labeled_batch)
    lab_plan = _epoch_index_plan(len(labels), seed, epoch, steps, labeled_batch)
    step_ids = np.arange(epoch * steps, (epoch + 1) * steps, dtype=np.int64)
    fetch_lab = _fetcher(waves)
    use_unlabeled = config.use_unlabeled and unlabeled_waves is not None and len(unlabeled_waves) > 0
    if use_unlabeled:
        # The unlabeled stream has its own seed so that changing the labeled fraction
        # does not change which unlabeled clips are drawn.
        unl_plan = _epoch_index_plan(len(unlabeled_waves), seed + 1_000_003, epoch, steps, unlabeled_batch)
        fetch_unl = _fetcher(unlabeled_waves)
    else:
        unl_plan = np.zeros((steps, 0), dtype=np.int64)
        fetch_unl = None
    num_samples = int(waves.shape[1])

    def load(i, y, j, step):
        x = fetch_lab(i)
        u = fetch_unl(j) if fetch_unl is not None else tf.zeros([0, num_samples], tf.float32)
        step_seed = tf.stack([tf.constant(seed, tf.int64), step])
        if mix_on == "device":
            return {"x": x, "y": y, "u": u, "mix_seed": tf.tile(step_seed[tf.newaxis], [tf.shape(y)[0], 1])}
        # tf.data maps run on the host CPU even when a GPU is visible: always the CPU's chunking.
        return mixed_views(x, y, u, config, step_seed, chunk_size=CPU_CHUNK_ROWS)

    ds = tf.data.Dataset.from_tensor_slices((lab_plan, labels[lab_plan], unl_plan, step_ids))
    ds = ds.map(load, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def evaluation_dataset(waves, labels, batch_size: int = 32) -> tf.data.Dataset:
    """(x, y) batches in the set's own order, without augmentation."""
    labels = np.asarray(labels, dtype=np.int32)
    fetch = _fetcher(waves)
    ds = tf.data.Dataset.range(len(labels)).batch(batch_size)
    ds = ds.map(lambda i: (fetch(i), tf.gather(labels, i)), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
