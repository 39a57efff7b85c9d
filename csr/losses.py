"""NT-Xent contrastive loss and accuracy for (original, augmented) pairs (paper section 2.1, eq. 1).

The N originals and their N augmentations form 2N embeddings. For every one of the 2N anchors the
positive is its pair and the negatives are the other 2N-2 embeddings; the anchor itself is masked
out. The loss is the mean cross-entropy over the 2N anchors (SimCLR's NT-Xent).

Both functions compute in float32 whatever the input dtype (mixed precision gives float16
embeddings, and a temperature of 0.01 turns similarities into logits up to 100, which float16
cannot exponentiate safely). The self-similarity is replaced by a large finite negative number, not
-inf, so a row never becomes NaN. Inputs are expected L2-normalised (the projection head does it);
they are NOT renormalised here, so the caller's embeddings are used exactly as given.

Under tf.distribute each replica holds n of the N pairs; `nt_xent_per_anchor` and
`contrastive_hits` score a replica's 2n anchors against the 2N embeddings gathered from all
replicas, so the sum over replicas equals the single-device value on the same global batch.
"""

import tensorflow as tf

# Finite stand-in for -inf on the masked diagonal: exp(MASK - max) underflows to exactly 0 in float32,
# while -inf could produce inf - inf = NaN in some reductions.
SELF_MASK_VALUE = -1e9


def _check_pair(z, z_aug):
    """Cast to float32 and check the two views have the same (N, d) shape: a mismatch is a bug upstream."""
    z = tf.cast(tf.convert_to_tensor(z), tf.float32)
    z_aug = tf.cast(tf.convert_to_tensor(z_aug), tf.float32)
    if z.shape.rank != 2 or z_aug.shape.rank != 2:
        raise ValueError(
            f"nt_xent expects two (N, d) embedding matrices; got shapes {z.shape} and {z_aug.shape}"
        )
    if not z.shape.is_compatible_with(z_aug.shape):
        raise ValueError(
            f"nt_xent: original and augmented embeddings differ in shape: {z.shape} vs {z_aug.shape}"
        )
    return z, z_aug


def pair_logits(z, z_aug, temperature=1.0):
    """Masked similarity logits (2N, 2N) and the index of each anchor's positive (2N,).

    Row i < N is original i, whose positive is column i + N (its augmentation) and vice versa.
    The diagonal (self-similarity) is set to SELF_MASK_VALUE so it never acts as a candidate.
    Shared by nt_xent and contrastive_accuracy so both agree on what a positive is.
    """
    z, z_aug = _check_pair(z, z_aug)
    return anchor_logits(z, z_aug, z, z_aug, 0, temperature)


def anchor_logits(z, z_aug, z_all, z_aug_all, offset, temperature=1.0):
    """Logits (2n, 2N) of n local pairs against all N pairs of the global batch, and positives (2n,).

    z, z_aug (n, d) are rows offset..offset+n-1 of z_all, z_aug_all (N, d) (under tf.distribute,
    this replica's rows of the gathered batch). Anchor i is original i, anchor n + i its
    augmentation; candidate columns are [z_all; z_aug_all], so anchor i's positive is column
    N + offset + i and its own column (offset + i) is masked. With z_all = z, offset 0 this is
    pair_logits.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z, z_aug = _check_pair(z, z_aug)
    z_all, z_aug_all = _check_pair(z_all, z_aug_all)
    n = tf.shape(z)[0]
    total = tf.shape(z_all)[0]
    anchors = tf.concat([z, z_aug], axis=0)
    candidates = tf.concat([z_all, z_aug_all], axis=0)
    logits = tf.matmul(anchors, candidates, transpose_b=True) / tf.constant(temperature, tf.float32)
    idx = tf.cast(offset, tf.int32) + tf.range(n)
    self_mask = tf.one_hot(tf.concat([idx, idx + total], axis=0), 2 * total, on_value=True, off_value=False)
    logits = tf.where(self_mask, tf.constant(SELF_MASK_VALUE, tf.float32), logits)
    labels = tf.concat([idx + total, idx], axis=0)
    return logits, labels


def nt_xent(z, z_aug, temperature=0.01):
    """Mean NT-Xent over the 2N anchors of N (original, augmented) pairs; float32 scalar.

    z, z_aug: (N, d) L2-normalised embeddings, row i of z paired with row i of z_aug.
    Uses TF's fused softmax cross-entropy (log-sum-exp), stable at temperature 0.01.
    """
    logits, labels = pair_logits(z, z_aug, temperature)
    per_anchor = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(per_anchor)


def nt_xent_per_anchor(z, z_aug, z_all, z_aug_all, offset, temperature=0.01):
    """NT-Xent of each of the 2n local anchors against the global batch (see anchor_logits); (2n,).

    Summed over every replica's anchors and divided by 2N this is nt_xent(z_all, z_aug_all): how a
    replica computes its share of the loss with negatives from all replicas (SimCLR's global batch).
    """
    logits, labels = anchor_logits(z, z_aug, z_all, z_aug_all, offset, temperature)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def contrastive_accuracy(z, z_aug):
    """Fraction of the 2N anchors whose positive is strictly more similar than every negative.

    A tie with a negative counts as a miss, so the value does not depend on row order (argmax
    would break ties by index). float32 scalar in [0, 1].
    """
    z, z_aug = _check_pair(z, z_aug)
    return tf.reduce_mean(contrastive_hits(z, z_aug, z, z_aug, 0))


def contrastive_hits(z, z_aug, z_all, z_aug_all, offset):
    """1.0 for each of the 2n local anchors whose positive beats every global negative, else 0.0."""
    return hits_from_logits(*anchor_logits(z, z_aug, z_all, z_aug_all, offset, temperature=1.0))


def hits_from_logits(logits, labels):
    """1.0 where the labelled (positive) column is strictly larger than every other unmasked column.

    Dividing logits by a temperature keeps the order, so the training step reuses its NT-Xent
    logits for the accuracy metric instead of a second similarity matrix.
    """
    positive_mask = tf.one_hot(labels, tf.shape(logits)[1], on_value=True, off_value=False)
    positive = tf.reduce_sum(tf.where(positive_mask, logits, tf.zeros_like(logits)), axis=1)
    best_negative = tf.reduce_max(
        tf.where(positive_mask, tf.constant(SELF_MASK_VALUE, tf.float32), logits), axis=1
    )
    return tf.cast(positive > best_negative, tf.float32)
