"""csr.noise: coloured noise has the right spectral slope, unit RMS, and is reproducible from a seed."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.signal import welch

from csr.config import NOISE_COLORS, SAMPLE_RATE
from csr.noise import COLORS, colored_noise, colored_noise_batch

N = 2**18  # ~12 s at 22,050 Hz: enough Welch segments for a tight slope estimate
TARGET_SLOPE = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0, "violet": 2.0}


def psd(x):
    return welch(np.asarray(x, np.float64), fs=SAMPLE_RATE, nperseg=4096)


def fitted_slope(x, lo=100.0, hi=8000.0):
    """Least-squares slope of log10 PSD against log10 frequency over [lo, hi] Hz."""
    f, p = psd(x)
    band = (f >= lo) & (f <= hi)
    return np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]


def band_db(f, p, centre, rel=0.1):
    band = (f >= centre * (1 - rel)) & (f <= centre * (1 + rel))
    return 10 * np.log10(p[band].mean())


def test_colors_follow_config_order():
    assert COLORS == tuple(NOISE_COLORS)


@pytest.mark.parametrize("color", sorted(TARGET_SLOPE))
def test_psd_slope(color):
    slope = fitted_slope(colored_noise(color, N, seed=11))
    assert abs(slope - TARGET_SLOPE[color]) < 0.25, f"{color}: slope {slope:.3f}"


def test_batch_rows_have_their_colours_slopes():
    rows = colored_noise_batch(tf.constant([4, 3, 2, 1, 0]), N, seed=5).numpy()  # violet..white
    for row, color in zip(rows, ["violet", "blue", "brown", "pink", "white"]):
        assert abs(fitted_slope(row) - TARGET_SLOPE[color]) < 0.25, color


# IEC 61672-1 nominal A-weighting (dB) at preferred frequencies; grey noise is its inverse.
IEC_A_WEIGHTING_DB = {100: -19.1, 200: -10.9, 500: -3.2, 2000: 1.2, 4000: 1.0, 8000: -1.1, 10000: -2.5}


def test_grey_follows_inverse_a_weighting():
    f, p = psd(colored_noise("grey", N, seed=3))
    ref = band_db(f, p, 1000, rel=0.03)
    for freq, a_db in IEC_A_WEIGHTING_DB.items():
        level = band_db(f, p, freq, rel=0.1 if freq <= 200 else 0.03) - ref
        assert level == pytest.approx(-a_db, abs=1.0), f"grey at {freq} Hz: {level:.2f} dB re 1 kHz"


@pytest.mark.parametrize("color", COLORS)
def test_no_energy_below_band_limit(color):
    x = colored_noise(color, 44100, seed=2).numpy().astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    assert spectrum[f < 45].sum() < 1e-8 * spectrum.sum()


@pytest.mark.parametrize("n", [1000, 4097, 22050])
def test_unit_rms_and_shape(n):
    for color in COLORS:
        x = colored_noise(color, n, seed=1)
        assert x.dtype == tf.float32 and x.shape == (n,)
        assert np.sqrt(np.mean(np.square(x.numpy(), dtype=np.float64))) == pytest.approx(1.0, abs=1e-5)


def test_same_seed_same_noise_different_seed_different():
    a = colored_noise("pink", 2048, seed=7).numpy()
    np.testing.assert_array_equal(a, colored_noise("pink", 2048, seed=7).numpy())
    assert not np.allclose(a, colored_noise("pink", 2048, seed=8).numpy())
    pair = tf.constant([3, 4], tf.int64)
    np.testing.assert_array_equal(colored_noise("blue", 512, pair), colored_noise("blue", 512, pair))
    assert not np.allclose(colored_noise("blue", 512, pair), colored_noise("blue", 512, tf.constant([4, 3])))
    # seed=None draws a fresh seed each call
    assert not np.allclose(colored_noise("white", 512), colored_noise("white", 512))


def test_runs_in_tf_function_with_tensor_seed():
    @tf.function
    def make(seed):
        return colored_noise("grey", 4096, seed), colored_noise_batch(tf.constant([0, 5]), 4096, seed)

    seed = tf.constant([1, 2], tf.int32)
    single, batch = make(seed)
    np.testing.assert_array_equal(single.numpy(), colored_noise("grey", 4096, seed).numpy())
    np.testing.assert_array_equal(batch.numpy(), colored_noise_batch(tf.constant([0, 5]), 4096, seed).numpy())
    assert not np.allclose(make(tf.constant([2, 1]))[0], single)


def test_bad_colour_lists_valid_colours():
    with pytest.raises(ValueError, match="unknown noise colour 'purple'.*white, pink, brown, blue, violet, grey"):
        colored_noise("purple", 100, seed=0)


def test_bad_colour_index_and_seed_rejected():
    with pytest.raises(tf.errors.InvalidArgumentError, match="colour index"):
        colored_noise_batch(tf.constant([0, 6]), 100, seed=0)
    with pytest.raises(ValueError, match="shape \\[2\\]"):
        colored_noise("white", 100, seed=tf.constant([1, 2, 3]))
    with pytest.raises(ValueError, match="num_samples"):
        colored_noise("white", 1, seed=0)
