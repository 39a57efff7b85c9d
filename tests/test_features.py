"""The log-mel layer must give librosa's numbers (DESIGN.md, log-mel row) in every execution mode."""

from pathlib import Path

import keras
import librosa
import numpy as np
import pytest
import tensorflow as tf

from csr import config
from csr.features import LogMelSpectrogram, SpectrogramToImage, frame_signal, frames_for, resolve_chunk_size

ESC10_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "esc10" / "audio"
FULL = dict(sample_rate=22050, n_fft=1024, hop_length=230, n_mels=128, f_min=50.0, f_max=10000.0)
SMALL = dict(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, f_min=50.0, f_max=4000.0)
MEAN_TOL_DB, MAX_TOL_DB = 0.01, 0.5


def librosa_logmel(y, sample_rate, n_fft, hop_length, n_mels, f_min, f_max, top_db=80.0):
    """The reference: exactly the librosa call the paper's features are defined by (one clip)."""
    mel = librosa.feature.melspectrogram(
        y=np.asarray(y, np.float32), sr=sample_rate, n_fft=n_fft, hop_length=hop_length,
        window="hann", center=True, pad_mode="constant", power=2.0, n_mels=n_mels,
        fmin=f_min, fmax=f_max, htk=False, norm="slaney",
    )
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=top_db)


def assert_matches_librosa(waves, cfg, label):
    out = LogMelSpectrogram(**cfg)(np.stack(waves)).numpy()
    for i, y in enumerate(waves):
        ref = librosa_logmel(y, **cfg)
        assert out[i].shape == ref.shape, label
        diff = np.abs(out[i] - ref)
        assert diff.mean() < MEAN_TOL_DB and diff.max() < MAX_TOL_DB, (
            f"{label}[{i}]: mean {diff.mean():.2e} dB, max {diff.max():.2e} dB"
        )


def synthetic_signals(sr, n):
    t = np.arange(n) / sr
    rng = np.random.default_rng(0)
    sine = np.sin(2 * np.pi * 1000.0 * t)
    chirp = librosa.chirp(fmin=60.0, fmax=0.45 * sr, sr=sr, length=n)
    noise = rng.standard_normal(n)
    burst = np.where(t < t[-1] / 3, rng.standard_normal(n), 0.0)  # silent tail: clamp is active
    return [s.astype(np.float32) for s in (sine, chirp, noise, burst)]


def test_frames_for_gives_paper_shape_and_librosa_frame_count():
    assert frames_for(config.CLIP_SAMPLES) == 480 == config.NUM_FRAMES
    for n in (0, 63, 64, 65, 1000, 8000):
        expected = librosa.util.frame(np.zeros(n + 256), frame_length=256, hop_length=64).shape[-1]
        assert frames_for(n, hop_length=64) == expected, n
    with pytest.raises(ValueError, match="hop_length"):
        frames_for(100, hop_length=0)


def test_output_shape_and_dtype_for_five_second_clips():
    layer = LogMelSpectrogram()
    out = layer(np.zeros((2, config.CLIP_SAMPLES), np.float32))
    assert tuple(out.shape) == (2, 128, 480) and out.dtype == tf.float32
    assert layer.compute_output_shape((None, config.CLIP_SAMPLES)) == (None, 128, 480)


def test_matches_librosa_on_synthetic_signals_full_config():
    assert_matches_librosa(synthetic_signals(22050, config.CLIP_SAMPLES), FULL, "full")


def test_matches_librosa_on_small_config():
    assert_matches_librosa(synthetic_signals(8000, 8000), SMALL, "small")


def test_silence_gives_amin_floor_like_librosa():
    out = LogMelSpectrogram(**SMALL)(np.zeros((1, 4000), np.float32)).numpy()
    ref = librosa_logmel(np.zeros(4000, np.float32), **SMALL)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], ref, atol=1e-4)
    np.testing.assert_allclose(out, -100.0, atol=1e-4)  # 10*log10(amin)


def test_matches_librosa_on_real_esc10_clips():
    files = sorted(ESC10_AUDIO.glob("*.ogg")) if ESC10_AUDIO.is_dir() else []
    if not files:
        pytest.skip(f"real ESC-10 clips not found at {ESC10_AUDIO}")
    waves = []
    for path in files[:: max(1, len(files) // 4)][:4]:  # 4 clips spread over the folds/classes
        y, _ = librosa.load(path, sr=22050, mono=True)
        rms = np.sqrt(np.mean(y.astype(np.float64) ** 2))
        y = y / rms if rms > 0 else y
        waves.append(librosa.util.fix_length(y, size=config.CLIP_SAMPLES).astype(np.float32))
    assert_matches_librosa(waves, FULL, "esc10")


def test_top_db_clamp_is_per_example():
    sr, n = SMALL["sample_rate"], 8000
    loud, _, _, burst = synthetic_signals(sr, n)
    quiet = 0.1 * burst  # peak about -8 dB vs +57 dB for the loud one; silent tail at -100 dB
    layer = LogMelSpectrogram(**SMALL)
    both = layer(np.stack([100.0 * loud, quiet])).numpy()
    for i, y in enumerate((100.0 * loud, quiet)):
        alone = layer(y[None]).numpy()[0]
        np.testing.assert_allclose(both[i], alone, atol=1e-4)
        assert both[i].min() == pytest.approx(both[i].max() - 80.0, abs=1e-4)
    assert both[0].min() - both[1].min() > 40.0  # a batch-wide clamp would make these equal
    ref = librosa_logmel(quiet, **SMALL)
    np.testing.assert_allclose(both[1], ref, atol=MAX_TOL_DB)


def test_graph_mode_dynamic_batch_and_xla():
    layer = LogMelSpectrogram(**SMALL)
    x = np.stack(synthetic_signals(8000, 2048))
    eager = layer(x).numpy()
    graph = tf.function(layer, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    for batch in (1, 3):
        np.testing.assert_allclose(graph(x[:batch]).numpy(), eager[:batch], atol=1e-4)
    xla = tf.function(lambda w: SpectrogramToImage()(layer(w)), jit_compile=True)
    out = xla(x).numpy()  # raises if XLA cannot compile the STFT/matmul/reductions on this device
    np.testing.assert_allclose(out[..., 0], SpectrogramToImage()(eager).numpy()[..., 0], atol=1e-4)


@pytest.mark.parametrize("samples,n_fft,hop", [
    (110250, 1024, 230), (5000, 256, 64), (4000, 256, 300), (1000, 256, 1000), (999, 128, 128),
    (10, 64, 7),
])
def test_frame_signal_equals_librosa_centred_frames(samples, n_fft, hop):
    x = np.random.default_rng(samples).standard_normal((2, samples)).astype(np.float32)
    ref = np.stack([librosa.util.frame(np.pad(r, n_fft // 2), frame_length=n_fft, hop_length=hop, axis=0)
                    for r in x])
    np.testing.assert_array_equal(frame_signal(tf.constant(x), n_fft, hop).numpy(), ref)
    dynamic = tf.function(lambda w: frame_signal(w, n_fft, hop),
                          input_signature=[tf.TensorSpec([None, None], tf.float32)])
    np.testing.assert_array_equal(dynamic(x).numpy(), ref)


@pytest.mark.parametrize("chunk", [1, 2, 3, 4])
def test_chunked_equals_whole_batch_for_any_batch_size(chunk):
    x = np.stack(synthetic_signals(8000, 4096) + synthetic_signals(8000, 4096)[:1])  # 5 rows
    whole = LogMelSpectrogram(**SMALL, chunk_size=0)(x).numpy()
    layer = LogMelSpectrogram(**SMALL, chunk_size=chunk)
    graph = tf.function(layer, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    for rows in (0, 1, 5):  # empty, less than a chunk, not a multiple of the chunk
        out = graph(x[:rows]).numpy()
        assert out.shape == (rows, SMALL["n_mels"], frames_for(4096, SMALL["hop_length"]))
        np.testing.assert_allclose(out, whole[:rows], atol=1e-4)


def test_chunk_size_auto_and_validation():
    expected = 0 if tf.config.list_logical_devices("GPU") else 5
    assert resolve_chunk_size(None, cpu_rows=5) == expected
    assert resolve_chunk_size(0, 5) == 0 and resolve_chunk_size(3, 5) == 3
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="chunk_size"):
            LogMelSpectrogram(chunk_size=bad)


def test_spectrogram_to_image_minmax_and_none():
    spec = LogMelSpectrogram(**SMALL)(np.stack(synthetic_signals(8000, 8000))).numpy()
    img = SpectrogramToImage()(spec).numpy()
    assert img.shape == spec.shape + (3,) and img.dtype == np.float32
    np.testing.assert_array_equal(img[..., 0], img[..., 1])
    np.testing.assert_array_equal(img[..., 0], img[..., 2])
    peak = spec.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(img[..., 0], (spec - peak) / 40.0 + 1.0, atol=1e-5)
    assert np.all(img.max(axis=(1, 2, 3)) == 1.0) and img.min() >= -1.0
    assert img[3].min() == pytest.approx(-1.0, abs=1e-5)  # burst with silent tail hits the floor
    raw = SpectrogramToImage(scaling="none")(spec).numpy()
    np.testing.assert_array_equal(raw[..., 1], spec)
    with pytest.raises(ValueError, match="scaling"):
        SpectrogramToImage(scaling="zscore")


def test_bad_inputs_and_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        LogMelSpectrogram(**SMALL)(np.zeros(4000, np.float32))
    with pytest.raises(ValueError, match="f_max"):
        LogMelSpectrogram(sample_rate=8000, f_max=10000.0)
    with pytest.raises(ValueError, match="n_fft"):
        LogMelSpectrogram(n_fft=0)


def test_get_config_round_trip_and_keras_file(tmp_path):
    layer = LogMelSpectrogram(**SMALL, top_db=60.0, amin=1e-8, name="logmel")
    clone = LogMelSpectrogram.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert {k: clone.get_config()[k] for k in SMALL} == SMALL
    image = SpectrogramToImage(scaling="none", top_db=60.0)
    assert SpectrogramToImage.from_config(image.get_config()).get_config() == image.get_config()

    inputs = keras.Input(shape=(None,))
    model = keras.Model(inputs, SpectrogramToImage()(layer(inputs)))
    model.save(tmp_path / "frontend.keras")
    loaded = keras.models.load_model(tmp_path / "frontend.keras")
    x = np.stack(synthetic_signals(8000, 1000))
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_mixed_float16_policy_still_computes_float32():
    x = np.stack(synthetic_signals(8000, 4000))
    expected = LogMelSpectrogram(**SMALL)(x).numpy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        default = LogMelSpectrogram(**SMALL)
        forced = LogMelSpectrogram(**SMALL, dtype="mixed_float16")
        for layer in (default, forced):
            out = layer(x)
            assert out.dtype == tf.float32
            np.testing.assert_allclose(out.numpy(), expected, atol=1e-3)
        img = SpectrogramToImage()(default(x))
        assert img.dtype == tf.float32
        conv = keras.layers.Conv2D(2, 3)(img)  # the backbone then runs in float16 as usual
        assert conv.dtype == tf.float16
    finally:
        keras.mixed_precision.set_global_policy("float32")
