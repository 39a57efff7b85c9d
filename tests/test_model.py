"""CSRModel: heads, backbones, weight files, and the supervised / proposed training steps.

Everything runs at toy sizes (8 kHz, 0.5 s clips, 32 mel bins, the "small" CNN) so the file stays
fast on 2 CPU cores; the one ResNet50V2 build uses a 32 x 64 input.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from csr.features import frames_for
from csr.model import (
    CSRModel,
    WeightsError,
    build_backbone,
    build_classifier_head,
    build_model,
    build_projection_head,
)

SR = 8000
CLIP = 4000
TINY = dict(sample_rate=SR, clip_samples=CLIP, n_fft=256, hop_length=64, n_mels=32, f_max=4000.0,
            backbone="small", weights=None, projection_dim=16, hidden_dim=32)


def tones(freqs, seed, clip=CLIP):
    """Unit-RMS sine clips with random phase plus a little white noise, float32 (len(freqs), clip)."""
    rng = np.random.default_rng(seed)
    t = np.arange(clip) / SR
    out = [np.sqrt(2) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs]
    return (np.stack(out) + 0.05 * rng.normal(size=(len(freqs), clip))).astype(np.float32)


def low_high_problem(n, seed):
    """Two classes: a low tone (class 0, 200-400 Hz) or a high tone (class 1, 2-3 kHz)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    freqs = np.where(y == 0, rng.uniform(200, 400, n), rng.uniform(2000, 3000, n))
    return tones(freqs, seed), y.astype(np.int32)


def proposed_batch(seed):
    """A dict batch as the pipeline makes it: 8 labeled + 8 unlabeled, split in two halves of 8, each
    augmented by a time shift plus mixing with the other half at ~10 dB and a little noise."""
    x, y = low_high_problem(8, seed)
    rng = np.random.default_rng(seed + 100)
    u = tones(rng.uniform(500, 1500, 8), seed + 200)  # "other domain": mid tones
    both = np.concatenate([x, u])[rng.permutation(16)]
    s1, s2 = both[:8], both[8:]

    def augment(s, other):
        shifted = np.roll(s, rng.integers(0, CLIP), axis=1)
        return (shifted + 0.3 * other + 0.1 * rng.normal(size=s.shape)).astype(np.float32)

    return {"x": x, "y": y, "s1": s1, "s1_aug": augment(s1, s2), "s2": s2, "s2_aug": augment(s2, s1)}


def test_classifier_head_gives_float32_logits_of_num_classes():
    head = build_classifier_head(5, hidden=16)
    out = head(np.random.default_rng(0).normal(size=(4, 32)).astype(np.float32))
    assert tuple(out.shape) == (4, 5)
    assert out.dtype == tf.float32
    assert [type(layer).__name__ for layer in head.layers] == ["Dense", "BatchNormalization", "ReLU", "Dense"]


def test_projection_head_outputs_unit_vectors():
    head = build_projection_head(dim=8, hidden=16)
    z = head(10 * np.random.default_rng(1).normal(size=(6, 32)).astype(np.float32)).numpy()
    assert z.shape == (6, 8)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)


def test_small_model_maps_waveforms_to_logits_features_and_embeddings():
    model = build_model(3, seed=0, **TINY)
    assert isinstance(model, CSRModel)
    assert model.backbone.input_shape == (None, 32, frames_for(CLIP, 64), 3)
    waves = tones([300, 1000], seed=0)
    assert tuple(model(waves).shape) == (2, 3)
    assert tuple(model.embed(waves).shape) == (2, 128)
    z = model.project(waves).numpy()
    assert z.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    assert model.mode == "supervised"
    assert model.options.reg_weight == 0.05 and model.options.temperature == 0.01


def test_resnet50v2_backbone_is_2048d_and_loads_local_weight_files(tmp_path):
    model = build_model(4, backbone="resnet50v2", weights=None, sample_rate=SR, clip_samples=64 * 63,
                        n_fft=256, hop_length=64, n_mels=32, f_max=4000.0, seed=0)
    assert model.backbone.input_shape == (None, 32, 64, 3)
    assert model.embed(tones([440], seed=1, clip=64 * 63)).shape == (1, 2048)

    # Keras 3 save_weights file -> a second model built from it has the same backbone weights.
    path = tmp_path / "backbone.weights.h5"
    model.backbone.save_weights(path)
    other = build_model(4, backbone="resnet50v2", weights=str(path), sample_rate=SR,
                        clip_samples=64 * 63, n_fft=256, hop_length=64, n_mels=32, f_max=4000.0, seed=1)
    want = model.backbone.get_weights()
    got = other.backbone.get_weights()
    assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))

    # The legacy .h5 layout of Keras' own downloadable ImageNet file
    # (resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5), for offline machines.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    legacy = tmp_path / "resnet50v2_notop.h5"
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model.backbone)
    loaded = build_backbone("resnet50v2", (32, 64, 3), weights=str(legacy))
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), want))

    # A file for a different network is refused, naming the file.
    with pytest.raises(WeightsError, match="resnet50v2_notop.h5.*does not fit"):
        build_backbone("small", (32, 64, 3), weights=str(legacy))


def test_missing_or_unsupported_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(WeightsError, match="nope.weights.h5.*does not exist"):
        build_model(2, **{**TINY, "weights": str(missing)})
    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    with pytest.raises(WeightsError, match="weights.txt.*unsupported format"):
        build_backbone("small", (32, 63, 3), weights=str(text))
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_backbone("small", (32, 63, 3), weights="imagenet")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg", (32, 63, 3))


def test_supervised_steps_lower_the_loss_and_leave_the_projector_alone():
    x, y = low_high_problem(16, seed=1)
    model = build_model(2, seed=1, **TINY)
    projector_before = [w.copy() for w in model.projector.get_weights()]
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    history = model.fit(ds, epochs=3, steps_per_epoch=5, verbose=0).history
    assert set(history) == {"loss", "clf_loss", "accuracy"}
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["loss"] == history["clf_loss"]
    assert history["accuracy"][-1] == 1.0
    for before, after in zip(projector_before, model.projector.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_proposed_steps_lower_the_total_loss_and_report_contrastive_metrics():
    model = build_model(2, seed=2, **TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    # Warm-up step in supervised mode, then switch mode on the same compiled model (Algorithm 1).
    x, y = low_high_problem(8, seed=2)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.configure(mode="proposed")
    batches = [proposed_batch(seed) for seed in range(3)]
    ds = tf.data.Dataset.from_tensor_slices(
        {k: np.stack([b[k] for b in batches]) for k in batches[0]}).repeat()
    history = model.fit(ds, epochs=3, steps_per_epoch=5, verbose=0).history
    assert set(history) == {"loss", "clf_loss", "reg_loss", "accuracy", "contrastive_accuracy"}
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert all(np.isfinite(history["reg_loss"]))
    assert all(0.0 <= a <= 1.0 for a in history["contrastive_accuracy"])
    assert history["reg_loss"][-1] < history["reg_loss"][0]

    # One step (fit resets the metrics each epoch): the total is exactly CE + lambda * (NTXent_1 +
    # NTXent_2), and a new reg_weight takes effect without recompiling.
    model.configure(reg_weight=0.5)
    logs = {k: v[0] for k, v in model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0).history.items()}
    assert logs["loss"] == pytest.approx(logs["clf_loss"] + 0.5 * logs["reg_loss"], rel=1e-5)
    assert logs["reg_loss"] > 0.0


def test_test_step_accuracy_matches_predict_and_predict_returns_logits():
    x, y = low_high_problem(12, seed=3)
    model = build_model(2, seed=3, **TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    logits = model.predict(x, batch_size=6, verbose=0)
    assert logits.shape == (12, 2) and logits.dtype == np.float32
    result = model.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)
    assert set(result) == {"loss", "accuracy"}
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert result["loss"] == pytest.approx(-np.mean(log_probs[np.arange(12), y]), rel=1e-4)


def test_mode_and_batch_type_are_checked():
    model = build_model(2, seed=4, **TINY)
    with pytest.raises(ValueError, match="mode must be one of"):
        model.configure(mode="semi")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match="expects \\(x, y\\) batches here.*got a dict"):
        model.train_step(proposed_batch(0))
    x, y = low_high_problem(2, seed=4)
    with pytest.raises(ValueError, match="sample_weight"):
        model.train_step((x, y, np.ones(2, np.float32)))
    model.configure(mode="proposed")
    with pytest.raises(ValueError, match="expects dict batches with keys"):
        model.train_step((x, y))
    with pytest.raises(ValueError, match="temperature must be positive"):
        model.configure(temperature=0.0)


def test_saved_model_reloads_with_mode_and_predictions(tmp_path):
    x, _ = low_high_problem(4, seed=5)
    model = build_model(2, seed=5, **TINY)
    model.configure(mode="proposed")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, CSRModel) and loaded.mode == "proposed"
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_mixed_precision_keeps_front_end_and_outputs_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model(2, seed=6, **TINY)
        assert model.backbone.compute_dtype == "float16"
        x, y = low_high_problem(4, seed=6)
        assert model(x).dtype == tf.float32
        assert model.project(x).dtype == tf.float32
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        before = model.backbone.get_weights()[0].copy()
        logs = model.train_on_batch(x, y, return_dict=True)
        assert all(np.isfinite(v) for v in logs.values())
        # The loss-scaled step was applied (not skipped as non-finite): Adam's first step moves
        # each weight by at most ~lr.
        assert model.optimizer.inner_optimizer.iterations.numpy() == 1
        moved = np.abs(model.backbone.get_weights()[0] - before).max()
        assert 1e-4 < moved < 1.1e-3
    finally:
        keras.config.set_dtype_policy(previous)
