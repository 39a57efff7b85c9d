"""NT-Xent contrastive loss and accuracy for (original, augmented) pairs (paper section 2.1, eq. 1).

The N originals and their N augmentations form 2N embeddings. For every one of the 2N anchors the
positive is its pair and the negatives are the other 2N-2 embeddings; the anchor itself is masked
out. The loss is the mean cross-entropy over the 2N anchors (SimCLR's NT-Xent).

Both functions compute in float32 whatever the input dtype (mixed precision gives float16
embeddings, and a temperature of 0.01 turns similarities into logits up to 100, which float16
cannot exponentiate safely). The self-similarity is replaced by a large finite negative number, not
-inf, so a row never becomes NaN. Inputs are expected L2-normalised (the projection head does it);
they are NOT renormalised here, so the caller's embeddings are used exactly as given.
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
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z, z_aug = _check_pair(z, z_aug)
    n = tf.shape(z)[0]
    embeddings = tf.concat([z, z_aug], axis=0)
    logits = tf.matmul(embeddings, embeddings, transpose_b=True) / tf.constant(temperature, tf.float32)
    self_mask = tf.eye(2 * n, dtype=tf.bool)
    logits = tf.where(self_mask, tf.constant(SELF_MASK_VALUE, tf.float32), logits)
    idx = tf.range(n)
    labels = tf.concat([idx + n, idx], axis=0)
    return logits, labels


def nt_xent(z, z_aug, temperature=0.01):
    """Mean NT-Xent over the 2N anchors of N (original, augmented) pairs; float32 scalar.

    z, z_aug: (N, d) L2-normalised embeddings, row i of z paired with row i of z_aug.
    Uses TF's fused softmax cross-entropy (log-sum-exp), stable at temperature 0.01.
    """
    logits, labels = pair_logits(z, z_aug, temperature)
    per_anchor = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(per_anchor)


def contrastive_accuracy(z, z_aug):
    """Fraction of the 2N anchors whose positive is strictly more similar than every negative.

    A tie with a negative counts as a miss, so the value does not depend on row order (argmax
    would break ties by index). float32 scalar in [0, 1].
    """
    logits, labels = pair_logits(z, z_aug, temperature=1.0)
    positive_mask = tf.one_hot(labels, tf.shape(logits)[1], on_value=True, off_value=False)
    positive = tf.reduce_sum(tf.where(positive_mask, logits, tf.zeros_like(logits)), axis=1)
    best_negative = tf.reduce_max(
        tf.where(positive_mask, tf.constant(SELF_MASK_VALUE, tf.float32), logits), axis=1
    )
    return tf.reduce_mean(tf.cast(positive > best_negative, tf.float32))
