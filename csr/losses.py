"""NT-Xent contrastive loss and accuracy for (original, augmented) pairs (paper section 2.1, eq. 1).

The N originals and their N augmentations form 2N embeddings. For every one of the 2N anchors the
positive is its pair and the negatives are the other 2N-2 embeddings; the anchor itself is masked
out. NTXentLoss is the sum of the two directions' mean cross-entropies (originals as anchors,
augmentations as anchors), i.e. 2x the mean over the 2N anchors: how neural-audio-fp (the code of
the paper's reference [16]) and SimCLR compute it, and the scale lambda_reg = 0.05 was tuned at.

Both functions compute in float32 whatever the input dtype (mixed precision gives float16
embeddings, and a temperature of 0.01 turns similarities into logits up to 100, which float16
cannot exponentiate safely). The self-similarity is replaced by a large finite negative number, not
-inf, so a row never becomes NaN. Inputs are expected L2-normalised (the projection head does it);
they are NOT renormalised here, so the caller's embeddings are used exactly as given.

The training step's two losses are here, each in the form that runs on any number of replicas
(`global_nt_xent`, `global_cross_entropy`): a replica returns its share of the global batch's loss,
and the shares add up to what one device computes on the whole batch.
"""

import tensorflow as tf

from csr import distribute

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
    """NTXentLoss(z, z~) of N (original, augmented) pairs on one device; float32 scalar.

    z, z_aug: (N, d) L2-normalised embeddings, row i of z paired with row i of z_aug. The mean of
    eq. 1 over the N originals as anchors plus its mean over the N augmentations as anchors (see
    global_nt_xent); TF's fused softmax cross-entropy (log-sum-exp) keeps it stable at temperature 0.01.
    """
    z, z_aug = _check_pair(z, z_aug)
    return global_nt_xent(z, z_aug, temperature)[0]


def contrastive_accuracy(z, z_aug):
    """Fraction of the 2N anchors whose positive is strictly more similar than every negative.

    A tie with a negative counts as a miss, so the value does not depend on row order (argmax
    would break ties by index). float32 scalar in [0, 1].
    """
    z, z_aug = _check_pair(z, z_aug)
    return global_nt_xent(z, z_aug, temperature=1.0)[1]


def global_nt_xent(z, z_aug, temperature, local_negatives=False):
    """(NTXentLoss, in-batch accuracy) of the global batch: this replica's shares of both.

    NTXentLoss(z, z~) is the sum over the two directions (originals as anchors, augmentations as
    anchors) of each direction's mean of eq. 1 over its N anchors, i.e. the sum over all 2N anchors
    divided by N: the scale of neural-audio-fp's NTxentLoss (the code of the paper's reference [16])
    and of SimCLR's add_contrastive_loss, against which lambda_reg = 0.05 was chosen. The accuracy is
    the fraction of the 2N anchors whose positive wins.

    Under tf.distribute each replica holds n of the global batch's N pairs. Its 2n anchors are
    scored against the 2N embeddings gathered from every replica (SimCLR's global batch; with
    `local_negatives`, against its own 2n only), their per-anchor losses summed and divided by the
    global pair count (hits by the anchor count), so the replicas' shares add up to what one device
    computes on the whole batch. The gradient flows through the gathered rows back to the replica
    that holds them.
    """
    if local_negatives or distribute.num_replicas() == 1:
        z_all, z_aug_all, offset = z, z_aug, 0
    else:
        dim = tf.shape(z)[1]
        both, offset = distribute.gather_rows(tf.concat([z, z_aug], axis=1))
        z_all, z_aug_all = both[:, :dim], both[:, dim:]
    logits, labels = anchor_logits(z, z_aug, z_all, z_aug_all, offset, temperature)
    per_anchor = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    anchors = distribute.global_sum(tf.cast(tf.size(labels), tf.float32))
    hits = hits_from_logits(tf.stop_gradient(logits), labels)
    return tf.reduce_sum(per_anchor) / (anchors / 2.0), tf.reduce_sum(hits) / anchors


def global_cross_entropy(y, logits, labeled=None):
    """CrossEntropy(y, logits): the mean over the global batch's labeled clips, this replica's share.

    Under tf.distribute each replica sums its clips' losses and divides by the global count, so
    the replicas' shares add up to the one-device mean. With `labeled` (a boolean mask; the single
    pass classifies every row of the global batch on every replica) only the marked rows count,
    and each replica holds 1/replicas of their mean.
    """
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.reshape(tf.cast(y, tf.int32), [-1]), logits=tf.cast(logits, tf.float32))
    if labeled is not None:
        weights = tf.cast(labeled, tf.float32)
        mean = tf.reduce_sum(weights * per_example) / tf.reduce_sum(weights)
        return mean / float(distribute.num_replicas())
    count = distribute.global_sum(tf.cast(tf.size(per_example), tf.float32))
    return tf.reduce_sum(per_example) / count


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
