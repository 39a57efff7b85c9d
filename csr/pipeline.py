"""tf.data input pipelines: which clips each step sees, fetched from the waveform cache and mixed.

Every step's indices come from `stream_indices`, a pure function of (seed, position in the stream),
so an epoch's batches are the same whether the run started at epoch 0 or resumed at epoch k: this is
what makes a killed run resume to the same result. The labeled set is read as an endless stream of
reshuffled passes, cut into full batches; an epoch is ceil(n_labeled / batch) steps, so every batch
is full (the batch that wraps past the end of one pass takes its tail from the next shuffle) and the
unlabeled stream simply continues from where the previous epoch stopped ("unlabeled data cycles").
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from csr.augment import AugmentConfig, batch_split_mix

AUTOTUNE = tf.data.AUTOTUNE


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


def row_labels(source_index, labels):
    """Label of each row of concat(s1, s2) from batch_split_mix's source_index; -1 if unlabeled.

    Rows whose source index is below len(labels) come from the labeled batch (labels[index]); the
    rest come from the unlabeled batch.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    source_index = tf.cast(source_index, tf.int32)
    n_labeled = tf.shape(labels)[0]
    from_labeled = source_index < n_labeled
    safe = tf.where(from_labeled, source_index, tf.zeros_like(source_index))
    return tf.where(from_labeled, tf.gather(labels, safe), -tf.ones_like(source_index))


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
) -> tf.data.Dataset:
    """Dict batches for one epoch of joint training: labeled x, y and the batch-split-mixed views.

    Each element holds "x" (labeled waveforms), "y" (their labels) and "s1", "s1_aug", "s2", "s2_aug"
    from `batch_split_mix` (Algorithm 1, lines 4-8). With config.use_unlabeled False (the -Unlabeled
    ablation) or no unlabeled clips, the contrastive batch is the labeled batch alone.
    "s1_y", "s2_y" give the label of each row of s1 and s2, -1 for an unlabeled clip: the x rows
    are rows of s1 and s2, which lets the model's single-pass step classify them from the views'
    backbone pass (CSRModel.single_pass) and keeps each label beside its row when tf.distribute
    splits the batch across replicas.
    """
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
        s1, s1_aug, s2, s2_aug, source = batch_split_mix(
            x, u, config, seed=tf.stack([tf.constant(seed, tf.int64), step]), return_index=True)
        row_y = row_labels(source, y)
        half = tf.shape(s1)[0]
        return {"x": x, "y": y, "s1": s1, "s1_aug": s1_aug, "s2": s2, "s2_aug": s2_aug,
                "s1_y": row_y[:half], "s2_y": row_y[half:]}

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
