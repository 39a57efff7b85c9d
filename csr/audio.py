"""Decode one audio file into the paper's model input: mono, 22,050 Hz, RMS 1, exactly 5 s.

Every dataset (ESC-50, UrbanSound8K, a user's folders) goes through `load_audio`, so clips of any
format, bit depth, channel count and rate reach the model on the same footing (DESIGN.md, "clip").
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from csr import config

logger = logging.getLogger(__name__)

RESAMPLE_TYPE = "soxr_hq"  # librosa's default high-quality band-limited resampler

# Below this RMS a clip is digital silence (a 24-bit LSB is 1.2e-7): dividing by it would blow up
# rounding residue into a full-scale signal, so such clips stay zeros.
SILENCE_RMS = 1e-10


class AudioError(ValueError):
    """A file that cannot become a clip; the message names the file and the problem."""


def _check_positive(value, what: str, path) -> float:
    """Reject zero, negative, non-finite or non-numeric settings up front, naming the file."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AudioError(f"{path}: invalid {what} {value!r}: must be a positive number") from None
    if not math.isfinite(number) or number <= 0:
        raise AudioError(f"{path}: invalid {what} {value!r}: must be a positive number")
    return number


def read_audio(path) -> tuple[np.ndarray, int]:
    """Decode with soundfile into float32 (frames, channels) and the file's sample rate.

    Integer PCM (8-bit unsigned, 16/24/32-bit) is scaled by soundfile to [-1, 1); float files are
    returned as stored. Every failure becomes an AudioError naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, EOFError, OSError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err})") from err
    if not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(f"{path}: file reports an invalid sample rate {rate!r}")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{path}: file contains no audio samples")
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioError(f"{path}: {bad} non-finite (NaN/inf) samples")
    return data, int(rate)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average channels: (frames, channels) -> (frames,); a 1-D signal is returned unchanged."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise ValueError(f"expected (frames,) or (frames, channels), got shape {x.shape}")
    return x.mean(axis=1, dtype=np.float32)


def resample(x: np.ndarray, orig_sr: float, target_sr: float) -> np.ndarray:
    """Band-limited resampling with librosa (soxr_hq); a no-op when the rates already match."""
    if orig_sr == target_sr:
        return np.asarray(x, dtype=np.float32)
    import librosa  # deferred: librosa's import is slow and only needed off-rate

    y = librosa.resample(np.asarray(x, dtype=np.float32), orig_sr=orig_sr, target_sr=target_sr,
                         res_type=RESAMPLE_TYPE)
    return np.asarray(y, dtype=np.float32)


def rms(x: np.ndarray) -> float:
    """Root mean square in float64 (float32 sums of 10^5 squares lose digits)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def rms_normalize(x: np.ndarray, name=None) -> np.ndarray:
    """Scale to RMS 1 so loud and quiet recordings reach the network alike.

    Digital silence (RMS below SILENCE_RMS) is returned as zeros with a warning naming `name`,
    never NaN.
    """
    x = np.asarray(x, dtype=np.float32)
    level = rms(x)
    if level < SILENCE_RMS:
        logger.warning("%s: silent clip (RMS %.3g); using zeros", name if name else "signal", level)
        return np.zeros_like(x)
    return (x.astype(np.float64) / level).astype(np.float32)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad at the end or crop the end to exactly `length` samples (the paper's fixed 5 s)."""
    x = np.asarray(x, dtype=np.float32)
    length = int(length)
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if x.shape[0] >= length:
        return x[:length].copy()
    return np.concatenate([x, np.zeros(length - x.shape[0], dtype=np.float32)])


def load_audio(path, sr: float = config.SAMPLE_RATE, seconds: float = config.CLIP_SECONDS) -> np.ndarray:
    """Decode `path` into a float32 clip of shape (int(sr * seconds),).

    Steps (DESIGN.md): soundfile decode -> mean to mono -> librosa soxr_hq resample to `sr` ->
    RMS normalise over the decoded clip (before padding) -> zero-pad at the end / crop to length.
    """
    path = os.fspath(path)
    sr = _check_positive(sr, "target sample rate", path)
    seconds = _check_positive(seconds, "clip duration (seconds)", path)
    length = int(sr * seconds)
    if length <= 0:
        raise AudioError(f"{path}: sr={sr} x seconds={seconds} gives an empty clip")
    if sr == int(sr):
        sr = int(sr)
    data, file_sr = read_audio(path)
    mono = resample(to_mono(data), file_sr, sr)
    return fit_length(rms_normalize(mono, name=path), length)
