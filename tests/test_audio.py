"""csr.audio: decoding of every format/bit depth, mono mixing, resampling, RMS, length, errors."""

import logging
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from csr import audio
from csr.audio import AudioError, fit_length, load_audio, rms_normalize, to_mono

ESC10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "esc10"


def sine(freq, sr, seconds, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def unit_rms(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt(np.mean(x ** 2))


def rms(x):
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def esc10_paths():
    if not (ESC10 / "meta" / "esc50.csv").is_file():
        pytest.skip(f"real ESC-10 data not found at {ESC10}")
    from csr.datasets import esc50

    return list(esc50(ESC10, "esc10")["path"])


# ---------------------------------------------------------------- real data

def check_real_clip(path):
    import librosa

    x = load_audio(path)
    assert x.shape == (110250,) and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    # Independent reference: librosa's own loader (soundfile + mono + soxr_hq), RMS over the
    # decoded clip, then pad/crop.
    ref, _ = librosa.load(path, sr=22050, mono=True, res_type="soxr_hq")
    ref = unit_rms(ref)
    n = min(len(ref), 110250)
    np.testing.assert_allclose(x[:n], ref[:n], atol=1e-4)
    assert np.all(x[n:] == 0)
    if 110250 <= len(ref) <= 110400:  # a 5 s clip (plus Vorbis padding): RMS 1 over the clip
        assert rms(x) == pytest.approx(1.0, abs=0.01)
    return len(ref)


def test_real_esc10_clips():
    paths = esc10_paths()
    for path in paths[:: len(paths) // 5][:5]:
        check_real_clip(path)


@pytest.mark.slow
def test_real_esc10_all_clips():
    lengths = [check_real_clip(path) for path in esc10_paths()]
    assert len(lengths) == 400 and sum(110250 <= n <= 110400 for n in lengths) >= 380


# ---------------------------------------------------------------- formats

@pytest.mark.parametrize("subtype,tol", [
    ("PCM_U8", 0.03), ("PCM_16", 2e-4), ("PCM_24", 2e-6), ("PCM_32", 2e-6), ("FLOAT", 2e-6)])
def test_wav_subtypes_decode_to_same_signal(tmp_path, subtype, tol):
    x = sine(440, 22050, 0.5) + sine(1250, 22050, 0.5, 0.2)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, x, 22050, subtype=subtype)
    assert sf.info(path).subtype == subtype  # PCM_U8 is WAV's unsigned 8-bit
    y = load_audio(path, sr=22050, seconds=0.5)
    np.testing.assert_allclose(y, unit_rms(x), atol=tol)


def test_flac_and_ogg(tmp_path):
    x = sine(440, 22050, 1.0)
    sf.write(tmp_path / "a.flac", x, 22050, subtype="PCM_16")
    sf.write(tmp_path / "a.ogg", x, 22050, format="OGG", subtype="VORBIS")
    np.testing.assert_allclose(load_audio(tmp_path / "a.flac", seconds=1.0), unit_rms(x), atol=2e-4)
    y = load_audio(tmp_path / "a.ogg", seconds=1.0)  # lossy: compare shape of the waveform
    assert np.corrcoef(y[1000:-1000], unit_rms(x)[1000:-1000])[0, 1] > 0.999


def test_stereo_is_channel_mean(tmp_path):
    left, right = sine(300, 22050, 0.5), sine(700, 22050, 0.5, 0.25)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 22050, subtype="FLOAT")
    y = load_audio(tmp_path / "st.wav", seconds=0.5)
    np.testing.assert_allclose(y, unit_rms((left + right) / 2), atol=1e-5)
    np.testing.assert_array_equal(to_mono(np.array([[1.0, 3.0], [2.0, -2.0]])), [2.0, 0.0])


@pytest.mark.parametrize("file_sr", [44100, 48000, 8000])
def test_resampling_preserves_frequency(tmp_path, file_sr):
    sf.write(tmp_path / "s.wav", sine(1000, file_sr, 1.0), file_sr, subtype="FLOAT")
    y = load_audio(tmp_path / "s.wav", sr=22050, seconds=1.0)
    assert y.shape == (22050,)
    spectrum = np.abs(np.fft.rfft(y[500:-500] * np.hanning(len(y) - 1000)))
    peak_hz = np.argmax(spectrum) * 22050 / (len(y) - 1000)
    assert abs(peak_hz - 1000) < 2.0
    assert rms(y[500:-500]) == pytest.approx(1.0, rel=1e-3)  # resampling keeps the level


def test_resampling_matches_tensorflow_io():
    tfio = pytest.importorskip("tensorflow_io")
    rng = np.random.default_rng(0)
    sr = 44100
    x = sine(1000, sr, 1.0) + sine(3000, sr, 1.0, 0.3)
    # band-limited noise (< 8 kHz) makes the signal aperiodic, so the alignment below is unique
    spec = np.fft.rfft(rng.standard_normal(sr))
    spec[np.fft.rfftfreq(sr, 1 / sr) > 8000] = 0
    x = (x + 0.2 * np.fft.irfft(spec, sr) / np.std(np.fft.irfft(spec, sr))).astype(np.float32)
    ours = audio.resample(x, sr, 22050)
    theirs = tfio.audio.resample(x, sr, 22050).numpy()
    assert ours.shape == theirs.shape == (22050,)
    # tfio's streaming soxr output is delayed by the filter latency; align before comparing
    core = slice(1000, 21000)
    corr = {lag: np.corrcoef(ours[core], theirs[1000 + lag:21000 + lag])[0, 1] for lag in range(0, 65)}
    lag = max(corr, key=corr.get)
    assert corr[lag] > 0.9999
    err = np.abs(ours[core] - theirs[1000 + lag:21000 + lag]).max() / np.abs(ours[core]).max()
    assert err < 1e-3


# ---------------------------------------------------------------- level and length

def test_rms_normalize_exact():
    x = np.array([3.0, -4.0, 0.0, 1.0], dtype=np.float32)
    y = rms_normalize(x)
    assert rms(y) == pytest.approx(1.0, abs=1e-7)
    np.testing.assert_allclose(y, x / np.sqrt(26 / 4), rtol=1e-6)


def test_silent_clip_is_zeros_with_warning(tmp_path, caplog):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(5000, dtype=np.float32), 22050, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="csr.audio"):
        y = load_audio(path, seconds=0.5)
    assert y.shape == (11025,) and not np.any(y) and np.all(np.isfinite(y))
    assert str(path) in caplog.text and "silent" in caplog.text


def test_short_clip_padded_rms_before_padding(tmp_path):
    x = sine(500, 22050, 0.2)
    sf.write(tmp_path / "short.wav", x, 22050, subtype="FLOAT")
    y = load_audio(tmp_path / "short.wav", seconds=0.5)
    n = len(x)
    assert y.shape == (11025,)
    np.testing.assert_allclose(y[:n], unit_rms(x), atol=1e-5)  # RMS 1 over the real audio
    assert not np.any(y[n:])


def test_long_clip_cropped_after_normalising_whole_clip(tmp_path):
    x = np.concatenate([sine(500, 22050, 0.5, 0.8), sine(500, 22050, 0.5, 0.1)])
    sf.write(tmp_path / "long.wav", x, 22050, subtype="FLOAT")
    y = load_audio(tmp_path / "long.wav", seconds=0.5)
    np.testing.assert_allclose(y, unit_rms(x)[:11025], atol=1e-5)


def test_fit_length():
    x = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(x, 3), [1, 2, 3])
    np.testing.assert_array_equal(fit_length(x, 7), [1, 2, 3, 4, 5, 0, 0])
    assert fit_length(x, 5).dtype == np.float32


# ---------------------------------------------------------------- errors

def expect_error(path, *words, **kwargs):
    with pytest.raises(AudioError) as info:
        load_audio(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.wav", "not found")


def test_directory_is_not_a_file(tmp_path):
    expect_error(tmp_path, "not a regular file")


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    expect_error(tmp_path / "empty.wav", "empty file")


def test_corrupt_bytes(tmp_path):
    (tmp_path / "junk.wav").write_bytes(os.urandom(4000))
    expect_error(tmp_path / "junk.wav", "cannot decode")


def test_header_without_samples(tmp_path):
    sf.write(tmp_path / "nosamples.wav", np.zeros(0, dtype=np.float32), 22050)
    expect_error(tmp_path / "nosamples.wav", "no audio samples")


def test_file_with_zero_sample_rate(tmp_path):
    path = tmp_path / "rate0.wav"
    sf.write(path, sine(440, 8000, 0.1), 8000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[24:28] == struct.pack("<I", 8000)  # the fmt chunk's sample-rate field
    data[24:28] = struct.pack("<I", 0)
    path.write_bytes(bytes(data))
    expect_error(path)


def test_decoder_reporting_nonsense_rate(tmp_path, monkeypatch):
    path = tmp_path / "ok.wav"
    sf.write(path, sine(440, 8000, 0.1), 8000)
    monkeypatch.setattr(audio, "_decode", lambda *a, **k: (np.zeros((10, 1), np.float32), 0))
    expect_error(path, "invalid sample rate")


def test_non_finite_samples(tmp_path):
    x = sine(440, 8000, 0.1)
    x[10] = np.nan
    x[20] = np.inf
    sf.write(tmp_path / "nan.wav", x, 8000, subtype="FLOAT")
    expect_error(tmp_path / "nan.wav", "2 non-finite")


@pytest.mark.parametrize("kwargs", [{"sr": 0}, {"sr": -22050}, {"sr": float("nan")}, {"seconds": 0}])
def test_invalid_requested_settings(tmp_path, kwargs):
    sf.write(tmp_path / "ok.wav", sine(440, 8000, 0.1), 8000)
    expect_error(tmp_path / "ok.wav", "invalid", **kwargs)


# ---------------------------------------------------------------- cut downloads

def cut(path, keep):
    """Keep the first `keep` bytes of the file (negative: drop that many from the end)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep])


def truncated_frames(path):
    """The frame counts of a 'header declares N frames, file holds M' error."""
    with pytest.raises(AudioError) as info:
        load_audio(path, sr=8000, seconds=1.0)
    match = re.search(r"truncated: header declares (\d+) frames, file holds (\d+)", str(info.value))
    assert match and str(path) in str(info.value), str(info.value)
    return int(match[1]), int(match[2])


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"),
                                         ("AIFF", "PCM_16")])
def test_truncated_wav_and_aiff_are_errors(tmp_path, fmt, subtype):
    path = tmp_path / f"cut.{fmt.lower()}"
    sf.write(path, sine(440, 8000, 1.0), 8000, format=fmt, subtype=subtype)
    cut(path, -1001)
    # libsndfile alone shortens the file to what is there and decodes it without a word
    assert 0 < sf.info(path).frames < 8000
    declared, held = truncated_frames(path)
    assert declared == 8000 and held == sf.info(path).frames


def test_wav_of_unknown_length_is_not_truncated(tmp_path):
    """A streaming writer may leave the data size as 0xFFFFFFFF ("unknown"): not a cut file."""
    path = tmp_path / "stream.wav"
    x = sine(440, 8000, 0.1)
    sf.write(path, x, 8000, subtype="FLOAT")
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[at + 4:at + 8] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    np.testing.assert_allclose(load_audio(path, sr=8000, seconds=0.1), unit_rms(x), atol=1e-5)


def test_wav_cut_inside_its_header(tmp_path):
    path = tmp_path / "head.wav"
    sf.write(path, sine(440, 8000, 0.1), 8000, subtype="PCM_16")
    cut(path, 30)  # inside the fmt chunk
    expect_error(path)


def test_truncated_flac_is_an_error(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, sine(440, 8000, 2.0) + sine(3000, 8000, 2.0, 0.1), 8000, format="FLAC")
    cut(path, path.stat().st_size // 2)
    expect_error(path, "truncated", "header declares 16000 frames")


def ogg_pages(data):
    """Byte offsets of the Ogg pages of a file (walking the page headers)."""
    offsets, pos = [], 0
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS"
        offsets.append(pos)
        segments = data[pos + 26]
        pos += 27 + segments + sum(data[pos + 27:pos + 27 + segments])
    return offsets


def check_cut_ogg(path):
    data = path.read_bytes()
    pages = ogg_pages(data)
    assert data[pages[-1] + 5] & 0x04 and not data[pages[-2] + 5] & 0x04  # only the last has EOS
    full = load_audio(path, sr=8000, seconds=1.0)
    assert full.shape == (8000,)
    for keep in (pages[-1], len(data) - 50, (pages[1] + pages[-1]) // 2):
        cut_path = path.with_name("cut.ogg")
        cut_path.write_bytes(data[:keep])
        # libsndfile decodes up to the last complete page and reports no error ...
        assert sf.read(cut_path)[0].shape[0] < sf.info(path).frames
        # ... read_audio names the cut (at a page boundary: the end-of-stream page is missing)
        expect_error(cut_path, "truncated", "Ogg")


def test_truncated_ogg_is_an_error(tmp_path):
    path = tmp_path / "tone.ogg"
    sf.write(path, sine(440, 22050, 5.0) + sine(2000, 22050, 5.0, 0.2), 22050, format="OGG",
             subtype="VORBIS")
    check_cut_ogg(path)


def test_truncated_real_esc10_ogg_is_an_error(tmp_path):
    source = Path(esc10_paths()[7])
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes())
    check_cut_ogg(path)


# ---------------------------------------------------------------- file names

def non_utf8_path(folder, name=b"caf\xe9.wav"):
    """A str path whose file name is bytes that are not UTF-8 (kept as surrogate escapes)."""
    path = os.path.join(os.fsencode(folder), name)
    try:
        open(path, "wb").close()
    except OSError as err:  # e.g. macOS, whose file systems insist on UTF-8 names
        pytest.skip(f"file system refuses a non-UTF-8 name: {err}")
    os.remove(path)
    return os.fsdecode(path)


def test_non_utf8_file_name_decodes(tmp_path):
    x = sine(440, 8000, 0.2)
    path = non_utf8_path(tmp_path)
    assert "\udce9" in path
    sf.write(tmp_path / "plain.wav", x, 8000, subtype="PCM_16")
    os.replace(tmp_path / "plain.wav", path)
    y = load_audio(path, sr=8000, seconds=0.2)
    np.testing.assert_allclose(y, unit_rms(x), atol=2e-4)
    np.testing.assert_array_equal(load_audio(Path(path), sr=8000, seconds=0.2), y)
    (tmp_path / "junk.wav").write_bytes(b"junk" * 100)
    os.replace(tmp_path / "junk.wav", path)
    expect_error(path, "cannot decode")
