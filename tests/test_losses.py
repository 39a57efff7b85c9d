"""NT-Xent and contrastive accuracy against a plain-loop numpy reference (paper eq. 1)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from csr.losses import contrastive_accuracy, nt_xent, pair_logits


def _normalise(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def reference_nt_xent(z, z_aug, temperature):
    """Eq. 1 anchor by anchor, in float64: positive = the pair, negatives = the other 2N-2; the loss
    is the mean over the originals as anchors plus the mean over the augmentations as anchors."""
    emb = np.concatenate([z, z_aug]).astype(np.float64)
    n = len(z)
    losses = []
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = {j: emb[i] @ emb[j] / temperature for j in range(2 * n) if j != i}
        top = max(sims.values())
        log_denominator = top + np.log(sum(np.exp(s - top) for s in sims.values()))
        losses.append(log_denominator - sims[pos])
    return float(np.mean(losses[:n]) + np.mean(losses[n:]))


def reference_accuracy(z, z_aug):
    emb = np.concatenate([z, z_aug]).astype(np.float64)
    n = len(z)
    hits = 0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        negatives = [emb[i] @ emb[j] for j in range(2 * n) if j not in (i, pos)]
        hits += all(emb[i] @ emb[pos] > s for s in negatives)
    return hits / (2 * n)


@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0])
def test_matches_reference_on_random_embeddings(temperature):
    rng = np.random.default_rng(0)
    z = _normalise(rng.normal(size=(10, 16))).astype(np.float32)
    z_aug = _normalise(rng.normal(size=(10, 16))).astype(np.float32)
    got = float(nt_xent(z, z_aug, temperature))
    assert got == pytest.approx(reference_nt_xent(z, z_aug, temperature), rel=1e-4)


def test_matches_reference_on_near_identical_pairs():
    rng = np.random.default_rng(1)
    z = _normalise(rng.normal(size=(8, 32)))
    z_aug = _normalise(z + 0.01 * rng.normal(size=z.shape))
    z, z_aug = z.astype(np.float32), z_aug.astype(np.float32)
    got = float(nt_xent(z, z_aug, 0.01))
    want = reference_nt_xent(z, z_aug, 0.01)
    assert got == pytest.approx(want, rel=1e-3, abs=1e-4)
    assert got < 1e-3  # every positive beats the negatives by ~100 logits
    assert float(contrastive_accuracy(z, z_aug)) == 1.0


def test_orthogonal_set_has_closed_form():
    # 2N mutually orthogonal vectors: every logit is 0, so each direction's mean is log(2N - 1) and
    # NTXentLoss, the sum of the two directions, is 2 log(2N - 1).
    n = 4
    basis = np.eye(2 * n, dtype=np.float32)
    z, z_aug = basis[:n], basis[n:]
    assert float(nt_xent(z, z_aug, 0.01)) == pytest.approx(2 * np.log(2 * n - 1), rel=1e-6)
    assert float(nt_xent(z, z_aug, 0.01)) == pytest.approx(reference_nt_xent(z, z_aug, 0.01), rel=1e-6)
    # The positive (0) ties with the negatives (0): a tie is not a hit.
    assert float(contrastive_accuracy(z, z_aug)) == 0.0


def test_pairs_identical_and_orthogonal_to_each_other_give_zero_loss():
    # z_i == z_aug_i and pairs mutually orthogonal: positive logit 100, negatives 0 -> loss ~ 2N e^-100.
    n = 3
    z = np.eye(n, dtype=np.float32)
    loss = float(nt_xent(z, z.copy(), 0.01))
    assert 0.0 <= loss < 1e-30
    assert float(contrastive_accuracy(z, z.copy())) == 1.0


def test_all_rows_identical_is_finite_at_temperature_001():
    # Every logit equals 1/0.01 = 100; a -inf self-mask or a naive exp would give NaN/inf here.
    z = np.tile(_normalise(np.ones((1, 8))), (6, 1)).astype(np.float32)
    loss = float(nt_xent(z, z, 0.01))
    assert np.isfinite(loss)
    assert loss == pytest.approx(2 * np.log(2 * 6 - 1), rel=1e-5)
    grads = _grad_of_loss(z, z, 0.01)
    assert all(np.isfinite(g).all() for g in grads)
    assert float(contrastive_accuracy(z, z)) == 0.0


def test_extreme_embeddings_stay_finite():
    # Opposite vectors give logits of -100; unnormalised inputs (norm 10) give logits of 10,000.
    z = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    z_aug = np.array([[-1.0, 0.0], [1.0, 0.0]], np.float32)
    assert np.isfinite(float(nt_xent(z, z_aug, 0.01)))
    assert float(nt_xent(z, z_aug, 0.01)) == pytest.approx(reference_nt_xent(z, z_aug, 0.01), rel=1e-5)
    big = 10.0 * _normalise(np.random.default_rng(2).normal(size=(5, 4))).astype(np.float32)
    assert np.isfinite(float(nt_xent(big, -big, 0.01)))
    assert all(np.isfinite(g).all() for g in _grad_of_loss(big, -big, 0.01))


def _grad_of_loss(z, z_aug, temperature):
    z, z_aug = tf.Variable(z), tf.Variable(z_aug)
    with tf.GradientTape() as tape:
        loss = nt_xent(z, z_aug, temperature)
    return [g.numpy() for g in tape.gradient(loss, [z, z_aug])]


def test_accuracy_perfect_pairs_and_random_pairs():
    rng = np.random.default_rng(3)
    z = _normalise(rng.normal(size=(20, 64))).astype(np.float32)
    assert float(contrastive_accuracy(z, z)) == 1.0
    z_aug = _normalise(rng.normal(size=(20, 64))).astype(np.float32)
    acc = float(contrastive_accuracy(z, z_aug))
    assert acc == pytest.approx(reference_accuracy(z, z_aug))
    assert acc < 0.3  # chance for 39 candidates is ~1/39


def test_accuracy_matches_reference_on_partly_matched_pairs():
    rng = np.random.default_rng(4)
    z = _normalise(rng.normal(size=(12, 8)))
    noise = rng.normal(size=z.shape) * np.linspace(0.0, 3.0, 12)[:, None]
    z_aug = _normalise(z + noise)
    acc = float(contrastive_accuracy(z.astype(np.float32), z_aug.astype(np.float32)))
    want = reference_accuracy(z, z_aug)
    assert acc == pytest.approx(want)
    assert 0.0 < want < 1.0  # the case really mixes hits and misses


def test_float16_inputs_give_float32_result():
    rng = np.random.default_rng(5)
    z = _normalise(rng.normal(size=(6, 16))).astype(np.float16)
    z_aug = _normalise(rng.normal(size=(6, 16))).astype(np.float16)
    loss = nt_xent(tf.constant(z), tf.constant(z_aug), 0.01)
    acc = contrastive_accuracy(tf.constant(z), tf.constant(z_aug))
    assert loss.dtype == tf.float32 and acc.dtype == tf.float32
    # Same value as the float32 computation on the float16-rounded embeddings.
    want = reference_nt_xent(z.astype(np.float32), z_aug.astype(np.float32), 0.01)
    assert float(loss) == pytest.approx(want, rel=1e-4)


def test_pair_logits_labels_and_self_mask():
    z = np.eye(4, dtype=np.float32)[:2]
    z_aug = np.eye(4, dtype=np.float32)[2:]
    logits, labels = pair_logits(z, z_aug, temperature=0.5)
    assert labels.numpy().tolist() == [2, 3, 0, 1]
    assert (np.diag(logits.numpy()) < -1e8).all()
    off_diagonal = logits.numpy()[~np.eye(4, dtype=bool)]
    assert np.all(off_diagonal == 0.0)


def test_works_inside_tf_function_with_unknown_batch():
    fn = tf.function(lambda a, b: nt_xent(a, b, 0.01),
                     input_signature=[tf.TensorSpec([None, 8], tf.float32)] * 2)
    rng = np.random.default_rng(6)
    z = _normalise(rng.normal(size=(5, 8))).astype(np.float32)
    z_aug = _normalise(rng.normal(size=(5, 8))).astype(np.float32)
    assert float(fn(z, z_aug)) == pytest.approx(reference_nt_xent(z, z_aug, 0.01), rel=1e-4)


def test_rejects_mismatched_views_and_bad_temperature():
    with pytest.raises(ValueError, match="differ in shape"):
        nt_xent(np.zeros((4, 8), np.float32), np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match="temperature must be positive"):
        nt_xent(np.zeros((4, 8), np.float32), np.zeros((4, 8), np.float32), temperature=0.0)


@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0])
def test_ntxentloss_is_the_two_directions_means_summed_twice_the_anchor_mean(temperature):
    """The scale of neural-audio-fp's NTxentLoss.compute_loss (loss_a + loss_b, each a mean over the
    N anchors of one direction) and SimCLR's add_contrastive_loss: 2x the mean over the 2N anchors."""
    rng = np.random.default_rng(7)
    z = _normalise(rng.normal(size=(12, 16))).astype(np.float32)
    z_aug = _normalise(z + 0.5 * rng.normal(size=z.shape)).astype(np.float32)
    logits, labels = pair_logits(z, z_aug, temperature)
    per_anchor = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits).numpy()
    loss_a, loss_b = per_anchor[:12].mean(), per_anchor[12:].mean()
    got = float(nt_xent(z, z_aug, temperature))
    assert got == pytest.approx(loss_a + loss_b, rel=1e-6)
    assert got == pytest.approx(2 * per_anchor.mean(), rel=1e-6)
