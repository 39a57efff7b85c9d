"""csr.augment: exact-SNR mixing, circular offsets and Algorithm 1's batch-split mixing."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from csr.augment import AugmentConfig, batch_split_mix, mix, random_offset

N = 2048  # samples per row: small keeps the tests fast; nothing here depends on the clip length


def snr_db(signal, other):
    signal, other = np.asarray(signal, np.float64), np.asarray(other, np.float64)
    return 10 * np.log10(np.mean(signal**2, axis=-1) / np.mean(other**2, axis=-1))


def rows(count, seed, n=N):
    """Random waveforms with varied levels (RMS spans ~0.1..3)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((count, n)) * rng.uniform(0.1, 3.0, (count, 1))).astype(np.float32)


def constant_rows(start, count, n=64):
    """Row i is filled with the value start + i: identifies rows after shuffling, offsets leave it unchanged."""
    return np.repeat(np.arange(start, start + count, dtype=np.float32)[:, None], n, axis=1)


# ----------------------------------------------------------------------------- mix

def test_mix_exact_snr_batched():
    signal, other = rows(200, 1), rows(200, 2)
    target = np.random.default_rng(3).uniform(-30, 40, 200).astype(np.float32)
    out = mix(signal, other, target).numpy()
    np.testing.assert_allclose(snr_db(signal, out - signal), target, atol=1e-3)


def test_mix_1d_scalar_snr_and_scaled_copy_of_other():
    signal, other = rows(2, 4)
    out = mix(signal, other, 7.5).numpy()
    assert out.shape == (N,)
    assert snr_db(signal, out - signal) == pytest.approx(7.5, abs=1e-3)
    gain = (out - signal) / other
    np.testing.assert_allclose(gain, gain[0], rtol=1e-3)  # added part is g * other, nothing else


def test_mix_scalar_snr_broadcasts_over_batch():
    signal, other = rows(5, 5), rows(5, 6)
    np.testing.assert_allclose(snr_db(signal, mix(signal, other, -5.0).numpy() - signal), -5.0, atol=1e-3)


def test_mix_silence_is_finite():
    signal, silent = rows(1, 7)[0], np.zeros(N, np.float32)
    np.testing.assert_array_equal(mix(signal, silent, 0.0).numpy(), signal)  # silent partner: g = 0
    out = mix(silent, signal, 0.0).numpy()  # silent anchor: g = 0, stays silent
    assert np.all(np.isfinite(out)) and not out.any()
    assert not mix(silent, silent, 10.0).numpy().any()
    tiny = np.full(N, 1e-30, np.float32)  # denormal-level partner must not blow up
    np.testing.assert_array_equal(mix(signal, tiny, 0.0).numpy(), signal)


# ----------------------------------------------------------------------------- random_offset

def test_random_offset_is_a_pure_rotation():
    x = rows(6, 8)
    out, shift = random_offset(x, seed=3, return_shift=True)
    out, shift = out.numpy(), shift.numpy()
    assert shift.shape == (6,) and np.all((shift >= 0) & (shift < N)) and len(set(shift)) > 1
    for row, rolled, s in zip(x, out, shift):
        np.testing.assert_array_equal(rolled, np.roll(row, s))
        np.testing.assert_array_equal(np.sort(rolled), np.sort(row))
        assert np.sum(rolled.astype(np.float64) ** 2) == pytest.approx(np.sum(row.astype(np.float64) ** 2))
    again, shift_again = random_offset(x, seed=3, return_shift=True)
    np.testing.assert_array_equal(again.numpy(), out)
    np.testing.assert_array_equal(shift_again.numpy(), shift)
    assert not np.array_equal(random_offset(x, seed=4).numpy(), out)


def test_random_offset_1d():
    x = np.arange(N, dtype=np.float32)
    out, shift = random_offset(x, seed=tf.constant([5, 6]), return_shift=True)
    np.testing.assert_array_equal(out.numpy(), np.roll(x, int(shift)))


# ----------------------------------------------------------------------------- batch_split_mix

def test_every_row_once_and_source_index():
    labeled, unlabeled = constant_rows(1, 8), constant_rows(101, 32)
    labels = np.arange(8) * 10
    s1, s1_aug, s2, s2_aug, index = (t.numpy() for t in batch_split_mix(
        labeled, unlabeled, AugmentConfig(), seed=1, return_index=True))
    assert s1.shape == s2.shape == s1_aug.shape == s2_aug.shape == (20, 64)
    originals = np.concatenate([labeled, unlabeled])
    both = np.concatenate([s1, s2])
    assert sorted(both[:, 0]) == sorted(originals[:, 0])  # every input row exactly once
    assert index.dtype == np.int32 and sorted(index) == list(range(40))
    np.testing.assert_array_equal(both, originals[index])  # s1, s2 are the un-augmented rows
    is_labeled = index < 8
    assert is_labeled.sum() == 8
    np.testing.assert_array_equal(labels[index[is_labeled]], (both[is_labeled, 0] - 1) * 10)
    assert not np.array_equal(index, np.arange(40))  # rows really are shuffled


def test_augmented_rows_differ_and_keep_shape():
    labeled, unlabeled = rows(8, 10), rows(32, 11)
    s1, s1_aug, s2, s2_aug = (t.numpy() for t in batch_split_mix(labeled, unlabeled, seed=2))
    assert s1_aug.dtype == np.float32 and s1_aug.shape == s1.shape
    assert all(not np.allclose(a, b) for a, b in zip(np.concatenate([s1, s2]), np.concatenate([s1_aug, s2_aug])))
    assert np.all(np.isfinite(s1_aug)) and np.all(np.isfinite(s2_aug))


def test_mixing_snr_in_range_and_partner_is_other_half():
    config = AugmentConfig(noise=False, offset=False)
    labeled, unlabeled = rows(8, 12), rows(32, 13)
    s1, s1_aug, s2, s2_aug = (t.numpy() for t in batch_split_mix(labeled, unlabeled, config, seed=3))
    for anchor, aug, partner in ((s1, s1_aug, s2), (s2, s2_aug, s1)):
        added = aug - anchor
        snr = snr_db(anchor, added)
        assert np.all(snr >= -5 - 1e-3) and np.all(snr <= 20 + 1e-3), snr
        assert snr.max() - snr.min() > 5  # drawn per row, not one value
        gain = np.sum(added * partner, axis=1) / np.sum(partner * partner, axis=1)
        np.testing.assert_allclose(added, gain[:, None] * partner, atol=1e-4)  # row i mixed with row i


def test_noise_snr_in_range():
    # a partner 300 dB down leaves the added part = the noise, measurable against the anchor
    config = AugmentConfig(mix_snr_db=(300.0, 300.0), offset=False)
    labeled, unlabeled = rows(8, 14), rows(32, 15)
    s1, s1_aug, s2, s2_aug = (t.numpy() for t in batch_split_mix(labeled, unlabeled, config, seed=4))
    snr = snr_db(np.concatenate([s1, s2]), np.concatenate([s1_aug - s1, s2_aug - s2]))
    assert np.all(snr >= -1e-3) and np.all(snr <= 6 + 1e-3), snr
    assert snr.max() - snr.min() > 1


def test_noise_colour_subset_is_respected():
    # white-only noise has a flat spectrum; violet-only rises steeply: compare high/low band power
    labeled = np.zeros((4, 8192), np.float32)
    labeled[:, ::97] = 1.0  # impulse trains: flat spectrum, so the residual spectrum is the noise's
    ratios = {}
    for color in ("white", "violet"):
        config = AugmentConfig(mix_snr_db=(300.0, 300.0), offset=False, colors=(color,))
        s1, s1_aug, _, _ = batch_split_mix(labeled, None, config, seed=5)
        spectrum = np.abs(np.fft.rfft((s1_aug - s1).numpy(), axis=1)) ** 2
        ratios[color] = spectrum[:, 3000:3100].sum() / spectrum[:, 300:400].sum()  # equal widths, 10x apart
    assert 0.5 < ratios["white"] < 2 and ratios["violet"] > 50


def test_minus_mixing_is_only_an_offset():
    config = AugmentConfig(mixing=False)
    labeled, unlabeled = rows(8, 16), rows(32, 17)
    s1, s1_aug, s2, s2_aug = (t.numpy() for t in batch_split_mix(labeled, unlabeled, config, seed=6))
    for original, aug in zip(np.concatenate([s1, s2]), np.concatenate([s1_aug, s2_aug])):
        shift = int(np.argmax([original[0] == v for v in aug]))  # first sample's new position
        np.testing.assert_array_equal(aug, np.roll(original, shift))


def test_minus_unlabeled_uses_labeled_rows_only():
    config = AugmentConfig(use_unlabeled=False)
    labeled, unlabeled = constant_rows(1, 8), constant_rows(101, 32)
    s1, s1_aug, s2, s2_aug, index = (t.numpy() for t in batch_split_mix(
        labeled, unlabeled, config, seed=7, return_index=True))
    assert s1.shape == s2.shape == s1_aug.shape == (4, 64) and index.shape == (8,)
    assert sorted(index) == list(range(8))
    np.testing.assert_array_equal(np.concatenate([s1, s2]), labeled[index])


def test_same_seed_same_outputs_different_seed_different():
    labeled, unlabeled = rows(4, 18), rows(12, 19)
    a = [t.numpy() for t in batch_split_mix(labeled, unlabeled, seed=8, return_index=True)]
    b = [t.numpy() for t in batch_split_mix(labeled, unlabeled, seed=tf.constant([0, 8]), return_index=True)]
    c = [t.numpy() for t in batch_split_mix(labeled, unlabeled, seed=9, return_index=True)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[4], c[4])


@pytest.mark.parametrize("config", [AugmentConfig(), AugmentConfig(noise=False), AugmentConfig(offset=False),
                                    AugmentConfig(mixing=False)])
def test_chunk_size_never_changes_the_result(config):
    labeled, unlabeled = rows(4, 22), rows(10, 23)  # halves of 7 rows
    whole = [t.numpy() for t in batch_split_mix(labeled, unlabeled, config, seed=5, chunk_size=0)]
    graph = tf.function(lambda lab, unl, chunk: batch_split_mix(lab, unl, config, seed=5, chunk_size=chunk))
    for chunk in (3, 7):  # padded last chunk; exactly one chunk
        for got, want in zip(graph(labeled, unlabeled, chunk), whole):
            np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


def test_runs_in_tf_data_map_and_tf_function():
    labeled, unlabeled = rows(8, 20), rows(24, 21)
    config = AugmentConfig()
    ds = tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices(labeled).batch(4),
                              tf.data.Dataset.from_tensor_slices(unlabeled).batch(12)))

    def augment(step, pair):  # a per-step seed, as a training pipeline would derive it
        return batch_split_mix(pair[0], pair[1], config, seed=tf.stack([step, tf.constant(99, tf.int64)]),
                               return_index=True)

    ds = ds.enumerate().map(augment)
    out = list(ds)
    assert len(out) == 2 and out[0][1].shape == (8, N)
    eager = batch_split_mix(labeled[4:], unlabeled[12:], config, seed=tf.constant([1, 99]), return_index=True)
    for x, y in zip(out[1], eager):
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-5)

    @tf.function
    def graph(lab, unl, seed):
        return batch_split_mix(lab, unl, config, seed=seed)

    for x, y in zip(graph(labeled, unlabeled, tf.constant([3, 4])),
                    batch_split_mix(labeled, unlabeled, config, seed=tf.constant([3, 4]))):
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-5)


def test_odd_batch_is_an_error():
    with pytest.raises(ValueError, match="even total batch.*got 7 rows \\(3 \\+ 4\\)"):
        batch_split_mix(rows(3, 22), rows(4, 23), seed=0)
    unknown = tf.TensorSpec([None, N], tf.float32)

    @tf.function(input_signature=[unknown, unknown])
    def graph(lab, unl):
        return batch_split_mix(lab, unl, seed=0)

    with pytest.raises(tf.errors.InvalidArgumentError, match="even total batch"):
        graph(rows(3, 22), rows(4, 23))
    assert graph(rows(3, 22), rows(5, 23))[0].shape == (4, N)


def test_config_validation():
    assert dataclasses.is_dataclass(AugmentConfig) and AugmentConfig().mix_snr_db == (-5.0, 20.0)
    assert AugmentConfig().noise_snr_db == (0.0, 6.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        AugmentConfig().mixing = False
    with pytest.raises(ValueError, match="colors"):
        AugmentConfig(colors=("white", "purple"))
    with pytest.raises(ValueError, match="mix_snr_db"):
        AugmentConfig(mix_snr_db=(20.0, -5.0))


def test_listening_command_writes_pairs_and_png(tmp_path, capsys):
    from csr.cli.listen import run

    assert run([str(tmp_path), "--data", str(tmp_path / "absent"), "--seed", "1"]) == 0  # synthetic sources
    assert "using synthetic tones and chirps" in capsys.readouterr().err
    wavs = sorted(tmp_path.glob("*.wav"))
    assert len(wavs) == 8 and (tmp_path / "logmel_pairs.png").stat().st_size > 10_000
    import soundfile as sf

    original, sr = sf.read(next(p for p in wavs if p.name.endswith("_original.wav")))
    assert sr == 22050 and original.shape == (110250,) and np.abs(original).max() <= 1.0
