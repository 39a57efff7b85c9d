"""Log-mel front end as Keras layers, so features are computed inside the model (paper 3.2).

Computing the spectrogram in the graph lets the augmentation work on waveforms (mixing at an exact
SNR needs the signal domain) and keeps one code path for training, evaluation and inference.
The numbers match ``librosa.power_to_db(librosa.feature.melspectrogram(...), ref=1.0, amin=1e-10,
top_db=80)`` with centred framing, a periodic Hann window and librosa's Slaney mel filterbank.

Both layers always compute in float32, whatever the global dtype policy: a float16 waveform or
power spectrum would lose the low-level bins the 80 dB range keeps (float16 has ~3 significant
digits and overflows at 65,504). The backbone that follows casts to its own compute dtype.

Speed on a CPU (the demo, tests, a GPU-less workstation): a whole batch's STFT materialises
~80 MB of frames and spectra for 40 five-second clips, far more than the CPU caches, so the layer
runs ``chunk_size`` rows at a time (csr.chunking; default "auto": chunks of 2 without a GPU, the
whole batch with one), and compiles that chunk loop with XLA, which fuses the window, power and
dB passes (together ~4x faster than the whole-batch graph on 2 cores). The whole-batch path
is plain graph code, compiled only if the caller asks (--jit_compile). The frames are cut by
reshaping the signal into hop-long rows and concatenating shifted slices (a copy at memory speed)
instead of ``tf.signal.frame``'s gather; the numbers are the same.
"""

from __future__ import annotations

import math

import keras
import librosa
import numpy as np
import tensorflow as tf

from csr import config
from csr.chunking import map_rows, resolve_chunk_size

# Rows per chunk without a GPU: 2 five-second clips' STFT is ~4 MB (2 beat 4 and 8 on 2 cores).
CPU_CHUNK_ROWS = 2

SCALINGS = ("minmax", "none")


def frames_for(num_samples: int, hop_length: int = config.HOP_LENGTH) -> int:
    """Number of STFT frames for ``num_samples`` with centred framing (librosa ``center=True``).

    Padding n_fft//2 on both sides makes the frame count independent of n_fft:
    110,250 samples with hop 230 give the paper's 480 frames.
    """
    if int(num_samples) < 0 or int(hop_length) <= 0:
        raise ValueError(
            f"frames_for: need num_samples >= 0 and hop_length > 0, got {num_samples}, {hop_length}"
        )
    return 1 + int(num_samples) // int(hop_length)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """librosa's Slaney-style, Slaney-normalised filterbank, shape (n_mels, 1 + n_fft // 2), float32.

    Taken from librosa rather than re-derived so the features are librosa's by construction.
    """
    return librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, htk=False, norm="slaney"
    ).astype(np.float32)


def power_to_db(power: tf.Tensor, amin: float, top_db: float | None) -> tf.Tensor:
    """10*log10(max(amin, S)) with ref=1, clamped at each example's own max - top_db.

    The max is taken per example (all axes but the first), as librosa does for one clip, so a quiet
    clip in a batch with a loud one keeps its own 80 dB range.
    """
    db = (10.0 / math.log(10.0)) * tf.math.log(tf.maximum(power, tf.constant(amin, power.dtype)))
    if top_db is None:
        return db
    peak = tf.reduce_max(db, axis=list(range(1, db.shape.rank)), keepdims=True)
    return tf.maximum(db, peak - top_db)


def frame_signal(x: tf.Tensor, n_fft: int, hop_length: int) -> tf.Tensor:
    """Centred STFT frames (librosa center=True, zero padding): (batch, frames, n_fft).

    Frame t is padded[t*hop : t*hop + n_fft] with padded = n_fft//2 zeros + x + zeros. Reshaping
    padded into rows of hop samples makes frame t the concatenation of rows t, t+1, ... cut to
    n_fft: a few contiguous slices, instead of tf.signal.frame's element gather (gcd(1024, 230) =
    2 makes that a gather of 2-sample pieces).
    """
    samples = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
    frames = 1 + samples // hop_length
    whole, rest = divmod(n_fft, hop_length)
    half = n_fft // 2
    slices_need = frames + whole + (1 if rest else 0)  # rows the slices below read
    padding_needs = -(-(samples + 2 * half) // hop_length)  # rows holding the centred padding
    if isinstance(samples, int):
        rows_needed = max(slices_need, padding_needs)
    else:
        rows_needed = tf.maximum(slices_need, padding_needs)
    x = tf.pad(x, [[0, 0], [half, rows_needed * hop_length - samples - half]])
    rows = tf.reshape(x, [tf.shape(x)[0], rows_needed, hop_length])
    parts = [rows[:, j:j + frames] for j in range(whole)]
    if rest:
        parts.append(rows[:, whole:whole + frames, :rest])
    out = tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
    if isinstance(frames, int):
        out = tf.ensure_shape(out, [None, frames, n_fft])
    return out


class _Float32Layer(keras.layers.Layer):
    """Base for layers that must compute in float32 even under a mixed-precision policy.

    The dtype defaults to "float32" (as Keras advises for numerically sensitive layers) and float
    inputs are always converted to float32 before ``call``, even if a float16 policy is passed.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    @property
    def input_dtype(self):
        return "float32"


@keras.saving.register_keras_serializable(package="csr")
class LogMelSpectrogram(_Float32Layer):
    """(batch, samples) float32 waveform -> (batch, n_mels, frames) float32 log-mel in dB.

    frames = 1 + samples // hop_length (centred framing); (128, 480) for 5 s at 22,050 Hz.
    Works with a dynamic batch size and length, in graph mode and under XLA.
    """

    def __init__(
        self,
        sample_rate: int = config.SAMPLE_RATE,
        n_fft: int = config.N_FFT,
        hop_length: int = config.HOP_LENGTH,
        n_mels: int = config.N_MELS,
        f_min: float = config.F_MIN,
        f_max: float = config.F_MAX,
        top_db: float | None = config.TOP_DB,
        amin: float = config.AMIN,
        chunk_size: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("sample_rate", sample_rate)
        _check_positive_int("n_fft", n_fft)
        _check_positive_int("hop_length", hop_length)
        _check_positive_int("n_mels", n_mels)
        if not 0.0 <= f_min < f_max <= sample_rate / 2:
            raise ValueError(
                f"LogMelSpectrogram: need 0 <= f_min < f_max <= sample_rate/2 = {sample_rate / 2}, "
                f"got f_min={f_min}, f_max={f_max}"
            )
        if not amin > 0:
            raise ValueError(f"LogMelSpectrogram: amin must be > 0, got {amin}")
        if top_db is not None and not top_db >= 0:
            raise ValueError(f"LogMelSpectrogram: top_db must be >= 0 or None, got {top_db}")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.f_min = float(f_min)
        self.f_max = float(f_max)
        self.top_db = None if top_db is None else float(top_db)
        self.amin = float(amin)
        if chunk_size is not None:
            chunk_size = resolve_chunk_size(chunk_size, CPU_CHUNK_ROWS)  # validates; None = auto
        self.chunk_size = chunk_size
        self._compiled_chunks = None  # XLA-compiled chunk loop, made on first use
        # csr.export sets this while it traces the dynamic-range-quantised TFLite model: a filterbank
        # that depends on the batch is no constant weight, so the quantiser leaves it in float32
        # (int8 per tensor would zero the upper mel bands, whose Slaney weights are ~10x smaller).
        self._runtime_filterbank = False
        # A plain array (not a weight): fixed by the config, so it never lands in checkpoints.
        # Only the FFT bins some mel filter uses (3..464 of 513 for 50 Hz-10 kHz) are kept.
        filters = mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.f_min, self.f_max)
        used = np.flatnonzero(filters.any(axis=0))
        self._bins = (int(used[0]), int(used[-1]) + 1) if used.size else (0, filters.shape[1])
        self._mel_t = filters[:, self._bins[0]:self._bins[1]].T.copy()  # (bins, n_mels), right-multiplied

    def call(self, inputs):
        x = tf.convert_to_tensor(inputs, dtype=tf.float32)
        if x.shape.rank != 2:
            raise ValueError(
                f"LogMelSpectrogram expects waveforms of shape (batch, samples), got shape {x.shape}"
            )
        chunk = resolve_chunk_size(self.chunk_size, CPU_CHUNK_ROWS)
        if not chunk:
            return self._log_mel(x)
        if self._compiled_chunks is None:
            self._compiled_chunks = tf.function(self._log_mel_in_chunks, jit_compile=True)
        # Two independent halves: XLA runs one chunk loop on one thread at a time, while the graph
        # executor runs the two compiled halves side by side.
        half = -(-tf.shape(x)[0] // (2 * chunk)) * chunk
        return tf.concat([self._compiled_chunks(x[:half], chunk),
                          self._compiled_chunks(x[half:], chunk)], axis=0)

    def _log_mel_in_chunks(self, x, chunk):
        samples = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
        row_shape = (self.n_mels, 1 + samples // self.hop_length)
        return map_rows(self._log_mel, x, chunk, row_shape)

    def _log_mel(self, x):
        """The whole transform on a (rows, samples) batch."""
        frames = frame_signal(x, self.n_fft, self.hop_length)  # centred: librosa center=True
        window = tf.signal.hann_window(self.n_fft)  # periodic=True by default, as librosa's fftbins=True
        stft = tf.signal.rfft(frames * window)  # (batch, frames, 1 + n_fft // 2)
        # The used bins are cut from the real and imaginary parts, not from the complex spectrum:
        # the same numbers, but TFLite has no builtin strided slice of a complex tensor (csr.export).
        lo, hi = self._bins
        power = tf.math.square(tf.math.real(stft)[..., lo:hi]) + tf.math.square(tf.math.imag(stft)[..., lo:hi])
        filterbank = tf.constant(self._mel_t)
        if self._runtime_filterbank:  # times 1, computed at run time: the same numbers
            filterbank *= tf.cast(tf.shape(power)[0] >= 0, tf.float32)
        mel = tf.matmul(power, filterbank)  # (batch, frames, n_mels)
        mel = tf.transpose(mel, [0, 2, 1])  # frames-last, like librosa
        return power_to_db(mel, self.amin, self.top_db)

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = None if samples is None else frames_for(samples, self.hop_length)
        return (input_shape[0], self.n_mels, frames)

    def get_config(self):
        base = super().get_config()
        base.update(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            f_min=self.f_min,
            f_max=self.f_max,
            top_db=self.top_db,
            amin=self.amin,
            chunk_size=self.chunk_size,
        )
        return base


@keras.saving.register_keras_serializable(package="csr")
class SpectrogramToImage(_Float32Layer):
    """(batch, n_mels, frames) dB -> (batch, n_mels, frames, 3) image for an ImageNet backbone.

    The paper stacks the mono log-mel three times on the channel axis (3.2) but does not say how
    it is scaled. ``scaling="minmax"`` (default) maps each example's [max - top_db, max] dB range
    linearly onto [-1, 1], i.e. (S - max) / (top_db / 2) + 1, the range that ResNet50V2's
    ``preprocess_input`` produces for the images its ImageNet weights were trained on; values
    below max - top_db (only possible if the input was not clamped) are clipped to -1.
    A constant input (e.g. silence) maps to 1 everywhere. ``scaling="none"`` passes raw dB.
    """

    def __init__(self, scaling: str = "minmax", top_db: float = config.TOP_DB, **kwargs):
        super().__init__(**kwargs)
        if scaling not in SCALINGS:
            raise ValueError(f"SpectrogramToImage: scaling must be one of {SCALINGS}, got {scaling!r}")
        if not top_db > 0:
            raise ValueError(f"SpectrogramToImage: top_db must be > 0, got {top_db}")
        self.scaling = scaling
        self.top_db = float(top_db)

    def call(self, inputs):
        s = tf.convert_to_tensor(inputs, dtype=tf.float32)
        if s.shape.rank != 3:
            raise ValueError(
                f"SpectrogramToImage expects spectrograms of shape (batch, n_mels, frames), got {s.shape}"
            )
        if self.scaling == "minmax":
            peak = tf.reduce_max(s, axis=[1, 2], keepdims=True)
            s = tf.maximum((s - peak) / (self.top_db / 2.0) + 1.0, -1.0)
        return tf.repeat(s[..., tf.newaxis], 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape, 3)

    def get_config(self):
        base = super().get_config()
        base.update(scaling=self.scaling, top_db=self.top_db)
        return base


def _check_positive_int(name: str, value) -> None:
    if int(value) != value or int(value) <= 0:
        raise ValueError(f"LogMelSpectrogram: {name} must be a positive integer, got {value!r}")
