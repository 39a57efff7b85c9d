"""Single-pass proposed step: f(x) read from the views' backbone pass instead of a second pass.

The labeled clips are rows of s1 and s2, so the pass over the four views already computes f(x).
That is the same computation as the paper's two passes whenever the backbone treats each clip on
its own (BatchNorm in inference mode here); with training-mode BatchNorm it is not (batch
statistics of all views instead of the labeled batch), which is why it is an option, off by
default. Toy sizes (8 kHz, 0.5 s clips, the small CNN) keep the file fast.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from csr import pipeline
from csr.augment import AugmentConfig
from csr.model import build_model

SR, CLIP = 8000, 4000
TINY = dict(sample_rate=SR, clip_samples=CLIP, n_fft=256, hop_length=64, n_mels=32, f_max=4000.0,
            backbone="small", weights=None, projection_dim=16, hidden_dim=32)
LOG_KEYS = ("loss", "clf_loss", "reg_loss", "accuracy", "contrastive_accuracy")


def _tagged(n, offset=0.0, samples=256):
    """Rows whose constant value identifies them: row i holds (i + offset + 1)."""
    return (np.arange(n, dtype=np.float32)[:, None] + offset + 1) * np.ones((1, samples), np.float32)


def _batch(seed=0, labeled=8, unlabeled=8, config=AugmentConfig()):
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP) / SR
    y = (np.arange(labeled) % 2).astype(np.int32)
    freq = np.where(y == 0, 300.0, 2500.0)[:, None] * rng.uniform(0.9, 1.1, (labeled, 1))
    x = (np.sin(2 * np.pi * freq * t + rng.uniform(0, 6, (labeled, 1)))
         + 0.3 * rng.standard_normal((labeled, CLIP))).astype(np.float32)
    u = rng.standard_normal((unlabeled, CLIP)).astype(np.float32)
    ds = pipeline.proposed_dataset(x, y, u, epoch=0, seed=seed, config=config, labeled_batch=labeled,
                                   unlabeled_batch=unlabeled)
    return {k: v.numpy() for k, v in next(iter(ds)).items()}


def _step(batch, *, single_pass, freeze_backbone_bn, policy="float32", jit_compile=False, seed=0):
    """(logs, gradients) of one SGD(1.0) step of the proposed mode from a seeded init."""
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model(2, seed=seed, **TINY)
    finally:
        keras.config.set_dtype_policy("float32")
    if freeze_backbone_bn:  # inference-mode BatchNorm: the backbone maps each clip on its own
        for layer in model.backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    model.configure(mode="proposed", single_pass=single_pass)
    model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=jit_compile)
    before = [v.numpy().copy() for v in model.trainable_variables]
    logs = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
    grads = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
    return {k: float(v[0]) for k, v in logs.items()}, grads


def _mismatch(a, b):
    a = np.concatenate([np.ravel(g) for g in a]).astype(np.float64)
    b = np.concatenate([np.ravel(g) for g in b]).astype(np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def test_pipeline_gives_each_row_of_s1_s2_its_label_or_minus_one():
    labeled, unlabeled = _tagged(12), _tagged(40, offset=1000.0)
    labels = np.arange(12) * 10 + 3
    batches = list(pipeline.proposed_dataset(labeled, labels, unlabeled, epoch=0, seed=2))
    for batch in batches:
        rows = np.concatenate([batch["s1"].numpy(), batch["s2"].numpy()])[:, 0]
        row_y = np.concatenate([batch["s1_y"].numpy(), batch["s2_y"].numpy()])
        assert batch["s1_y"].dtype == tf.int32 and batch["s1_y"].shape == (20,)
        from_labeled = rows < 1000
        ids = np.rint(rows[from_labeled]).astype(int) - 1
        np.testing.assert_array_equal(row_y[from_labeled], labels[ids])
        assert (row_y[~from_labeled] == -1).all() and from_labeled.sum() == 8
        # The labeled rows of s1 and s2 are exactly the batch's (x, y), in another order.
        assert sorted(row_y[from_labeled]) == sorted(batch["y"].numpy())
    # -Unlabeled ablation: every row is labeled.
    batch = next(iter(pipeline.proposed_dataset(labeled, labels, unlabeled, epoch=0, seed=2,
                                                config=AugmentConfig(use_unlabeled=False))))
    assert (np.concatenate([batch["s1_y"].numpy(), batch["s2_y"].numpy()]) >= 0).all()


def test_row_labels_maps_source_index_to_labels():
    got = pipeline.row_labels(tf.constant([4, 0, 2, 7, 1, 3]), tf.constant([10, 11, 12]))
    np.testing.assert_array_equal(got.numpy(), [-1, 10, 12, -1, 11, -1])


def test_single_pass_equals_two_passes_when_the_backbone_is_per_clip():
    batch = _batch(seed=1)
    logs2, grads2 = _step(batch, single_pass=False, freeze_backbone_bn=True)
    logs1, grads1 = _step(batch, single_pass=True, freeze_backbone_bn=True)
    for key in LOG_KEYS:
        assert logs1[key] == pytest.approx(logs2[key], rel=1e-5, abs=1e-6), key
    assert np.linalg.norm(np.concatenate([np.ravel(g) for g in grads2])) > 1e-2
    # g_c's masked BatchNorm divides by (count + 1e-7); everything else is the same arithmetic.
    assert _mismatch(grads2, grads1) < 1e-4


def test_single_pass_differs_with_training_mode_batchnorm():
    # Why it is off by default: the two-pass step normalises f(x) with the labeled batch's own
    # statistics, the single pass with those of all views.
    batch = _batch(seed=1)
    logs2, _ = _step(batch, single_pass=False, freeze_backbone_bn=False)
    logs1, _ = _step(batch, single_pass=True, freeze_backbone_bn=False)
    assert abs(logs1["clf_loss"] - logs2["clf_loss"]) > 1e-2
    assert logs1["reg_loss"] == pytest.approx(logs2["reg_loss"], rel=1e-5)  # the views' pass is the same


def test_single_pass_under_xla_matches_the_graph_step():
    # XLA needs static shapes: the labeled rows are weighted, not gathered (a boolean mask would
    # give XLA a dynamic shape and, on the CPU, a silently different BatchNorm).
    batch = _batch(seed=2, labeled=4, unlabeled=4)
    logs, grads = _step(batch, single_pass=True, freeze_backbone_bn=False, policy="float64")
    logs_xla, grads_xla = _step(batch, single_pass=True, freeze_backbone_bn=False, policy="float64",
                                jit_compile=True)
    for key in LOG_KEYS:
        assert logs_xla[key] == pytest.approx(logs[key], rel=1e-5, abs=1e-6), key
    assert _mismatch(grads, grads_xla) < 1e-5


def test_single_pass_needs_the_row_labels():
    model = build_model(2, seed=0, **TINY)
    model.configure(mode="proposed", single_pass=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    batch = _batch(seed=0, labeled=2, unlabeled=2)
    del batch["s1_y"]
    with pytest.raises(ValueError, match="single_pass needs the per-row labels s1_y, s2_y"):
        model.train_step(batch)
