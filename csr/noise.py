"""Coloured noise for the augmentation's "additional artificial noise" (paper section 2.2).

The paper adds one of six noises (white, pink, brown, blue, violet, grey) to each augmented view
but does not say how they are made. Here every colour is Gaussian noise shaped in the frequency
domain, so one irfft serves a whole batch of rows of different colours:

    complex Gaussian spectrum -> x spectral amplitude of the row's colour -> irfft -> RMS 1

Drawing the spectrum directly (Box-Muller, see `shape_noise`) is the same random process as
taking the rfft of white Gaussian noise, whose bins are independent complex Gaussians, without
spending an rfft on it.

Power spectral density slopes (log power against log frequency): white 0, pink -1, brown -2,
blue +1, violet +2. Grey is white noise shaped by the inverse of the IEC 61672 A-weighting curve
(perceptually flat), normalised to gain 1 (0 dB) at 1 kHz.

Band limit (a choice the paper leaves open): every colour is zero below ``low_hz`` (default
``config.F_MIN`` = 50 Hz, the lowest frequency the log-mel front end sees) and at DC. Without it,
brown noise and grey noise (inverse A-weighting is +50 dB at 20 Hz and grows without bound towards
DC) put most of their energy below the model's lowest mel band -- 99% of grey noise's power would
lie under 50 Hz -- so they would count in the SNR yet be nearly invisible to the network, and
their character would depend on the clip length (the lowest FFT bin is sr / n). Above ``low_hz``
each colour follows its law exactly.

Everything is TensorFlow ops with stateless RNG, so it runs inside ``tf.data`` maps, in
``tf.function`` graphs and on a GPU, and the same seed always gives the same noise.
"""

from __future__ import annotations

import math

import tensorflow as tf

from csr.config import F_MIN, NOISE_COLORS, SAMPLE_RATE

COLORS = tuple(NOISE_COLORS)

# PSD slope (power ~ f ** slope) for the power-law colours; grey is handled separately.
_SLOPES = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0, "violet": 2.0}

# IEC 61672-1 A-weighting pole frequencies (Hz) and the +2.00 dB that makes A(1 kHz) = 0 dB.
_A_F1, _A_F2, _A_F3, _A_F4 = 20.598997, 107.65265, 737.86223, 12194.217
_A_1KHZ_DB = 2.0


def color_index(color: str) -> int:
    """Position of ``color`` in COLORS; ValueError naming the valid colours otherwise."""
    if color not in COLORS:
        raise ValueError(f"unknown noise colour {color!r}; valid colours: {', '.join(COLORS)}")
    return COLORS.index(color)


def make_seed(seed=None) -> tf.Tensor:
    """A shape-[2] int64 seed for the stateless RNG ops.

    None draws a fresh seed (stateful op: different every call/step), an int or scalar int tensor
    becomes [0, seed], a shape-[2] int tensor is used as is.
    """
    if seed is None:
        return tf.random.uniform([2], minval=-(2**62), maxval=2**62, dtype=tf.int64)
    if isinstance(seed, bool):
        raise ValueError(f"seed must be None, an int or a shape-[2] int tensor, got {seed!r}")
    if isinstance(seed, int):
        return tf.constant([0, seed], dtype=tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer:
        raise ValueError(f"seed must be an integer tensor, got dtype {seed.dtype.name}")
    seed = tf.cast(seed, tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([tf.constant(0, tf.int64), seed])
    if seed.shape.rank != 1 or seed.shape[0] not in (2, None):
        raise ValueError(f"seed tensor must be a scalar or have shape [2], got shape {seed.shape}")
    return tf.ensure_shape(seed, [2])


def a_weighting_db(freqs_hz: tf.Tensor) -> tf.Tensor:
    """IEC 61672-1 A-weighting in dB (0 dB at 1 kHz) for a float64 tensor of frequencies."""
    f2 = tf.square(tf.cast(freqs_hz, tf.float64))
    ra = (_A_F4**2 * tf.square(f2)) / (
        (f2 + _A_F1**2) * tf.sqrt((f2 + _A_F2**2) * (f2 + _A_F3**2)) * (f2 + _A_F4**2)
    )
    return 20.0 * tf.math.log(ra) / math.log(10.0) + _A_1KHZ_DB


@tf.autograph.experimental.do_not_convert  # plain graph code; skips AutoGraph's slow rewrite
def spectral_table(num_samples, sample_rate: float = SAMPLE_RATE, low_hz: float = F_MIN) -> tf.Tensor:
    """Amplitude gains, float32 (len(COLORS), num_samples // 2 + 1), one row per colour.

    Amplitude is the square root of the PSD law, each row is 1 at 1 kHz (keeps float32 in range);
    bins below ``low_hz`` and DC are 0 (see module docstring).
    """
    n = tf.cast(num_samples, tf.float64)
    num_bins = tf.cast(num_samples, tf.int32) // 2 + 1
    freqs = tf.cast(tf.range(num_bins), tf.float64) * (float(sample_rate) / n)
    in_band = tf.logical_and(freqs >= float(low_hz), freqs > 0.0)
    safe_f = tf.where(in_band, freqs, tf.constant(1000.0, tf.float64))  # keeps pow/log finite off-band; masked below
    rows = []
    for color in COLORS:
        if color == "grey":
            gain = tf.pow(tf.constant(10.0, tf.float64), -a_weighting_db(safe_f) / 20.0)
        else:
            gain = tf.pow(safe_f / 1000.0, _SLOPES[color] / 2.0)
        rows.append(tf.where(in_band, gain, tf.zeros_like(gain)))
    return tf.cast(tf.stack(rows), tf.float32)


def check_color_indices(color_indices) -> tf.Tensor:
    """int32 colour indices, with run-time checks that each is a valid position in COLORS."""
    color_indices = tf.cast(tf.convert_to_tensor(color_indices), tf.int32)
    checks = [
        tf.debugging.assert_non_negative(color_indices, message="noise colour index < 0"),
        tf.debugging.assert_less(color_indices, len(COLORS),
                                 message=f"noise colour index >= {len(COLORS)} (COLORS={COLORS})"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(color_indices)


def spectrum_uniforms(rows, num_samples, seed=None) -> tf.Tensor:
    """Uniform [0, 1) float32 (rows, num_samples // 2 + 1, 2): the random numbers of each bin.

    The random half of the noise, drawn for the whole batch at once so that `shape_noise` can run
    on any split of the rows (csr.chunking) and give the same noise.
    """
    bins = tf.cast(num_samples, tf.int32) // 2 + 1
    return tf.random.stateless_uniform(tf.stack([rows, bins, 2]), seed=make_seed(seed), dtype=tf.float32)


@tf.autograph.experimental.do_not_convert  # plain graph code; skips AutoGraph's slow rewrite
def shape_noise(uniforms, gains, num_samples) -> tf.Tensor:
    """Unit-RMS noise (rows, num_samples) from spectrum_uniforms and per-row spectral amplitudes.

    Each bin is a standard complex Gaussian made by Box-Muller: Rayleigh magnitude
    sqrt(-2 ln(1 - u1)) (1 - u1 is in (0, 1], so the log is finite) at phase 2 pi u2. That is the
    distribution of the rfft of white Gaussian noise, at a third of the cost of drawing normals
    (tf.random's normal is Box-Muller over twice as many numbers, then an rfft).
    """
    magnitude = gains * tf.sqrt(-2.0 * tf.math.log1p(-uniforms[..., 0]))
    phase = (2.0 * math.pi) * uniforms[..., 1]
    spectrum = tf.complex(magnitude * tf.cos(phase), magnitude * tf.sin(phase))
    shaped = tf.signal.irfft(spectrum, fft_length=tf.reshape(tf.cast(num_samples, tf.int32), [1]))
    rms = tf.sqrt(tf.reduce_mean(tf.square(shaped), axis=-1, keepdims=True))
    return shaped / tf.maximum(rms, 1e-30)


@tf.autograph.experimental.do_not_convert  # plain graph code; skips AutoGraph's slow rewrite
def colored_noise_batch(color_indices, num_samples, seed=None, sample_rate: float = SAMPLE_RATE,
                        low_hz: float = F_MIN) -> tf.Tensor:
    """Unit-RMS noise, float32 (batch, num_samples); row i has colour COLORS[color_indices[i]].

    One irfft for the whole batch: the per-row spectral shape is gathered from
    ``spectral_table``. ``num_samples`` may be an int or a scalar int tensor.
    """
    if isinstance(num_samples, int) and num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples}")
    color_indices = check_color_indices(color_indices)
    uniforms = spectrum_uniforms(tf.shape(color_indices)[0], num_samples, seed)
    gains = tf.gather(spectral_table(num_samples, sample_rate, low_hz), color_indices)
    noise = shape_noise(uniforms, gains, num_samples)
    if isinstance(num_samples, int):
        noise = tf.ensure_shape(noise, [None, num_samples])
    return noise


def colored_noise(color: str, num_samples, seed=None, sample_rate: float = SAMPLE_RATE,
                  low_hz: float = F_MIN) -> tf.Tensor:
    """Unit-RMS noise of one colour, float32 (num_samples,).

    ``seed``: None (fresh random noise), int, or shape-[2] int tensor (same seed, same noise).
    """
    index = color_index(color)
    return colored_noise_batch(tf.constant([index], tf.int32), num_samples, seed,
                               sample_rate=sample_rate, low_hz=low_hz)[0]
