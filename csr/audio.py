"""Decode one audio file into the paper's model input: mono, 22,050 Hz, RMS 1, exactly 5 s.

Every dataset (ESC-50, UrbanSound8K, a user's folders) goes through `load_audio`, so clips of any
format, bit depth, channel count and rate reach the model on the same footing (docs/method.md, "clip").

A file shorter than its container says (a cut download) is an AudioError, not silently partial
audio: libsndfile shortens such WAV/AIFF files to what is there and decodes an Ogg stream up to its
last complete page, so `read_audio` checks the container itself: the WAV/AIFF audio chunk's
declared size, FLAC's STREAMINFO frame count, and that every Ogg stream ends with its
end-of-stream page (page headers only, no second decode). MP3 has no declared length to check.
Files are opened by Python and handed to soundfile, so any name the OS accepts works, including
names that are not valid UTF-8 (Python keeps their bytes as surrogate escapes).
"""

from __future__ import annotations

import logging
import math
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from csr import config
from csr.errors import UserError

logger = logging.getLogger(__name__)

RESAMPLE_TYPE = "soxr_hq"  # librosa's default high-quality band-limited resampler

# Below this RMS a clip is digital silence (a 24-bit LSB is 1.2e-7): dividing by it would blow up
# rounding residue into a full-scale signal, so such clips stay zeros.
SILENCE_RMS = 1e-10

# Bump when a change lets files decode that failed before: the waveform cache remembers failures
# per file and retries them only when the file or this number changes.
DECODER_REVISION = 2

_WAV_PCM_TAGS = (1, 3, 0xFFFE)  # PCM, IEEE float, extensible: fixed bytes per frame
_OGG_EOS = 0x04  # header_type flag of a logical stream's last page


class AudioError(UserError, ValueError):
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


def _chunks(handle, size: int, endian: str):
    """(id, body offset, declared body size) of each top-level RIFF/IFF chunk, in file order."""
    pos = 12
    while pos + 8 <= size:
        handle.seek(pos)
        chunk_id, length = struct.unpack(endian + "4sI", handle.read(8))
        yield chunk_id, pos + 8, length
        pos += 8 + length + (length & 1)  # chunks are padded to an even size


def _wav_truncation(handle, size: int, endian: str) -> str | None:
    """Compare the data chunk's declared size with the bytes the file holds after it."""
    frame_bytes = None
    for chunk_id, start, length in _chunks(handle, size, endian):
        if chunk_id == b"fmt " and length >= 14:
            tag, _, _, _, block_align = struct.unpack(endian + "HHIIH", handle.read(14))
            frame_bytes = block_align if tag in _WAV_PCM_TAGS and block_align else None
        elif chunk_id == b"data":
            held = size - start
            if length in (0, 0xFFFFFFFF) or length <= held:  # 0 / -1: a streaming writer's "unknown"
                return None
            if frame_bytes:
                return f"header declares {length // frame_bytes} frames, file holds {held // frame_bytes}"
            return f"header declares {length} bytes of audio, file holds {held}"
    return None


def _aiff_truncation(handle, size: int, compressed: bool) -> str | None:
    """Compare the SSND chunk's declared size with the bytes the file holds after it."""
    declared, frame_bytes = None, None
    for chunk_id, start, length in _chunks(handle, size, ">"):
        if chunk_id == b"COMM" and length >= 8:
            channels, declared, bits = struct.unpack(">hIh", handle.read(8))
            frame_bytes = None if compressed else channels * ((bits + 7) // 8)
        elif chunk_id == b"SSND":
            held = size - start
            if length <= held:
                return None
            if frame_bytes and declared is not None:
                return f"header declares {declared} frames, file holds {max(held - 8, 0) // frame_bytes}"
            return f"header declares {length} bytes of audio, file holds {held}"
    return None


def _ogg_truncation(handle, size: int) -> str | None:
    """Walk the Ogg page headers (27 bytes + lacing table each, the packets are skipped): a cut
    file ends inside a page, or its last page lacks the end-of-stream flag."""
    pos, unfinished = 0, set()
    while pos + 27 <= size:
        handle.seek(pos)
        header = handle.read(27)
        if header[:4] != b"OggS":
            break  # trailing bytes that are not a page (e.g. a tag): judge the pages before them
        flags, serial, segments = header[5], struct.unpack("<I", header[14:18])[0], header[26]
        lacing = handle.read(segments)
        end = pos + 27 + segments + sum(lacing)
        if len(lacing) < segments or end > size:
            return f"the file ends inside an Ogg page ({size} bytes, the page at byte {pos} needs {end})"
        (unfinished.discard if flags & _OGG_EOS else unfinished.add)(serial)
        pos = end
    if unfinished:
        return f"the Ogg stream stops without its end-of-stream page after {pos} bytes"
    return None


def _truncation(handle, size: int) -> str | None:
    """Why the file holds less audio than its container declares, or None (headers only)."""
    head = handle.read(12)
    try:
        if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
            return _wav_truncation(handle, size, "<" if head[:4] == b"RIFF" else ">")
        if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            return _aiff_truncation(handle, size, compressed=head[8:12] == b"AIFC")
    except struct.error:  # a header field runs past the end of the file
        return f"the file ends inside its header ({size} bytes)"
    if head[:4] == b"OggS":
        return _ogg_truncation(handle, size)
    return None  # FLAC is checked while decoding; others declare no length


def _decode(handle, path) -> tuple[np.ndarray, int]:
    """soundfile decode of an open file into float32 (frames, channels). FLAC's STREAMINFO
    declares the exact frame count, so a FLAC that decodes fewer frames is reported truncated."""
    with sf.SoundFile(handle) as snd:
        declared, is_flac = snd.frames, snd.format == "FLAC"
        try:
            data = snd.read(dtype="float32", always_2d=True)
        except sf.LibsndfileError as err:
            held = snd.tell()
            if is_flac and 0 <= held < declared:
                raise AudioError(f"{path}: truncated or corrupt: header declares {declared} frames, "
                                 f"decoding stopped after {held} ({err})") from err
            raise
        rate = snd.samplerate
    if is_flac and data.shape[0] < declared:
        raise AudioError(f"{path}: truncated: header declares {declared} frames, file holds {data.shape[0]}")
    return data, rate


def read_audio(path) -> tuple[np.ndarray, int]:
    """Decode with soundfile into float32 (frames, channels) and the file's sample rate.

    Integer PCM (8-bit unsigned, 16/24/32-bit) is scaled by soundfile to [-1, 1); float files are
    returned as stored. Every failure, including a file cut short, becomes an AudioError naming
    the file. The file is opened by Python, so names that are not valid UTF-8 work too.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise AudioError(f"{path}: cannot open ({err})") from err
    with handle:
        try:
            problem = _truncation(handle, size)
            if problem:
                raise AudioError(f"{path}: truncated: {problem}")
            handle.seek(0)
            data, rate = _decode(handle, path)
        except AudioError:
            raise
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

    Steps (docs/method.md): soundfile decode -> mean to mono -> librosa soxr_hq resample to `sr` ->
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
