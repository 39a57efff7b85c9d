"""Small procedural stand-ins for ESC-50 and UrbanSound8K, so the method runs with no download.

Why: a newcomer without data (and the tests) needs labelled audio whose classes are learnable from
log-mel spectrograms, laid out exactly like the real datasets so the real loaders read it. Each
class is a distinct spectro-temporal shape (tone, chirp, click train, band noise, ...) with random
frequency, onset, duration and level over a quiet coloured-noise background. The two sets have
different classes, which is what the paper's cross-domain setting needs.

Determinism: every clip draws from its own generator seeded by (seed, set, clip index), and the one
timestamp libsndfile writes (float WAV PEAK chunk) is zeroed, so the same seed gives byte-identical
files on the same machine.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

ESC_SAMPLE_RATE = 22_050  # the model's rate (ESC-50 itself is 44.1 kHz; loaders resample anyway)
ESC_CLIP_SECONDS = 5.0
ESC_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
US8K_COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
US8K_SECONDS = (1.0, 4.0)
# (subtype, sample rate, channels): cycled over the US8K clips so every loader path is exercised.
US8K_FORMATS = (
    ("PCM_16", 44_100, 1),
    ("PCM_24", 48_000, 2),
    ("PCM_U8", 22_050, 1),
    ("FLOAT", 44_100, 2),
    ("PCM_16", 16_000, 1),
    ("PCM_24", 32_000, 1),
    ("PCM_16", 48_000, 2),
)
_ESC_SET, _US8K_SET = 0, 1
MARKER = ".csr_synthetic"  # identifies a folder this module may overwrite


# ------------------------------------------------------------------------------ signal primitives
def _log_uniform(rng, low, high):
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _envelope(n, sr, attack, release):
    """Raised-cosine fade in/out so events have no clicks at their edges (unless wanted)."""
    env = np.ones(n)
    a = min(max(int(attack * sr), 1), n // 2)
    r = min(max(int(release * sr), 1), n // 2)
    env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, a))
    env[n - r:] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, r))
    return env


def _osc(freq, sr):
    """Sine following an instantaneous-frequency track (Hz per sample)."""
    return np.sin(2 * np.pi * np.cumsum(freq) / sr)


def _harmonics(freq, sr, count, rolloff):
    """Sum of harmonics k*f (k = 1..count) with 1/k**rolloff amplitudes, kept below 0.45 sr.

    sin(k*phase) comes from the Chebyshev recurrence s_k = 2 cos(phase) s_(k-1) - s_(k-2): one
    multiply-add per harmonic instead of a sine, which keeps 96 kHz clips fast.
    """
    phase = 2 * np.pi * np.cumsum(freq) / sr
    two_cos = 2 * np.cos(phase)
    prev, cur = np.zeros_like(phase), np.sin(phase)
    out = cur.copy()
    top = float(np.max(freq))
    for k in range(2, count + 1):
        if k * top >= 0.45 * sr:
            break
        prev, cur = cur, two_cos * cur - prev
        out += cur / k ** rolloff
    return out


def _shaped_noise(rng, n, sr, low=0.0, high=None, exponent=0.0):
    """Gaussian noise with power ~ f**exponent between low and high Hz (FFT shaping), unit RMS."""
    size = 1 << max(int(n - 1).bit_length(), 4)  # power of two: pocketfft is slow on large primes
    # The spectrum of white Gaussian noise is itself (complex) white Gaussian: draw it directly.
    spectrum = rng.standard_normal((size // 2 + 1, 2)) @ np.array([1.0, 1.0j])
    freqs = np.fft.rfftfreq(size, 1.0 / sr)
    gain = np.zeros_like(freqs)
    high = 0.45 * sr if high is None else min(high, 0.45 * sr)
    band = (freqs >= max(low, 1.0)) & (freqs <= high)
    gain[band] = freqs[band] ** (exponent / 2.0)
    out = np.fft.irfft(spectrum * gain, size)[:n]
    rms = np.sqrt(np.mean(out ** 2))
    return out / rms if rms > 0 else out


def _decay(n, sr, tau):
    return np.exp(-np.arange(n) / (tau * sr))


def _place(n, sr, events):
    """Sum (offset_seconds, signal) events into an n-sample buffer, cropping at the end."""
    out = np.zeros(n)
    for start, sig in events:
        i = int(start * sr)
        if i >= n:
            continue
        m = min(len(sig), n - i)
        out[i:i + m] += sig[:m]
    return out


def _span(rng, clip_n, sr, low, high):
    """A random event duration in [low, high] s (capped by the clip) and a random onset."""
    dur = min(rng.uniform(low, high), 0.95 * clip_n / sr)
    n = max(int(dur * sr), 16)
    onset = rng.uniform(0, (clip_n - n) / sr)
    return n, onset


# -------------------------------------------------------------------------- ESC-style event classes
def _tone(rng, clip_n, sr):
    n, t0 = _span(rng, clip_n, sr, 1.0, 3.0)
    f = _log_uniform(rng, 300, 1200)
    return _place(clip_n, sr, [(t0, _osc(np.full(n, f), sr) * _envelope(n, sr, 0.02, 0.05))])


def _chirp(rng, clip_n, sr, rising):
    n, t0 = _span(rng, clip_n, sr, 0.6, 2.0)
    lo, hi = _log_uniform(rng, 250, 600), _log_uniform(rng, 2500, 6000)
    track = np.geomspace(lo, hi, n) if rising else np.geomspace(hi, lo, n)
    return _place(clip_n, sr, [(t0, _osc(track, sr) * _envelope(n, sr, 0.01, 0.02))])


def _rising_chirp(rng, clip_n, sr):
    return _chirp(rng, clip_n, sr, rising=True)


def _falling_chirp(rng, clip_n, sr):
    return _chirp(rng, clip_n, sr, rising=False)


def _click_train(rng, clip_n, sr):
    n, t0 = _span(rng, clip_n, sr, 1.0, 3.0)
    rate = rng.uniform(8, 25)
    click_n = int(0.004 * sr)
    click = _shaped_noise(rng, click_n, sr, low=1000) * _decay(click_n, sr, 0.001)
    starts = t0 + np.arange(0, n / sr, 1.0 / rate)
    starts = starts + rng.uniform(-0.004, 0.004, len(starts))
    return _place(clip_n, sr, [(max(s, 0.0), click) for s in starts])


def _noise_burst(rng, clip_n, sr):
    n, t0 = _span(rng, clip_n, sr, 0.3, 1.5)
    centre, width = _log_uniform(rng, 1500, 5000), rng.uniform(0.5, 1.0)  # width in octaves
    sig = _shaped_noise(rng, n, sr, centre * 2 ** (-width / 2), centre * 2 ** (width / 2))
    return _place(clip_n, sr, [(t0, sig * _envelope(n, sr, 0.01, 0.05))])


def _harmonic_stack(rng, clip_n, sr):
    n, t0 = _span(rng, clip_n, sr, 1.0, 3.0)
    f0 = _log_uniform(rng, 100, 300)
    sig = _harmonics(np.full(n, f0), sr, int(rng.integers(6, 16)), rng.uniform(0.7, 1.2))
    return _place(clip_n, sr, [(t0, sig * _envelope(n, sr, 0.03, 0.1))])


def _am_tone(rng, clip_n, sr):
    n, t0 = _span(rng, clip_n, sr, 1.0, 3.0)
    carrier, rate = _log_uniform(rng, 1500, 4000), rng.uniform(6, 15)
    t = np.arange(n) / sr
    mod = 1.0 - rng.uniform(0.8, 1.0) * (0.5 + 0.5 * np.cos(2 * np.pi * rate * t))
    return _place(clip_n, sr, [(t0, _osc(np.full(n, carrier), sr) * mod *
                                 _envelope(n, sr, 0.02, 0.05))])


def _fm_warble(rng, clip_n, sr):
    n, t0 = _span(rng, clip_n, sr, 1.0, 3.0)
    carrier, rate, depth = _log_uniform(rng, 600, 2000), rng.uniform(4, 10), rng.uniform(0.1, 0.25)
    track = carrier * (1 + depth * np.sin(2 * np.pi * rate * np.arange(n) / sr))
    return _place(clip_n, sr, [(t0, _osc(track, sr) * _envelope(n, sr, 0.02, 0.05))])


def _knock(rng, clip_n, sr):
    count = int(rng.integers(2, 6))
    gap = rng.uniform(0.15, 0.4)
    t0 = rng.uniform(0, max(clip_n / sr - count * gap - 0.3, 0.01))
    events = []
    for k in range(count):
        hit_n = int(0.25 * sr)
        f = _log_uniform(rng, 120, 500)
        body = np.sin(2 * np.pi * f * np.arange(hit_n) / sr)
        body = body * _decay(hit_n, sr, rng.uniform(0.02, 0.06))
        tick = _shaped_noise(rng, hit_n, sr, low=500) * _decay(hit_n, sr, 0.002) * 0.5
        events.append((t0 + k * gap + rng.uniform(-0.02, 0.02), body + tick))
    return _place(clip_n, sr, events)


def _rumble(rng, clip_n, sr):
    n, t0 = _span(rng, clip_n, sr, 2.0, 4.5)
    sig = _shaped_noise(rng, n, sr, 20, _log_uniform(rng, 120, 250), exponent=-1.0)
    t = np.arange(n) / sr
    slow = 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 2 * np.pi))
    return _place(clip_n, sr, [(t0, sig * slow * _envelope(n, sr, 0.3, 0.3))])


ESC_CLASSES = (
    ("pure_tone", _tone),
    ("rising_chirp", _rising_chirp),
    ("falling_chirp", _falling_chirp),
    ("click_train", _click_train),
    ("noise_burst", _noise_burst),
    ("harmonic_stack", _harmonic_stack),
    ("am_tone", _am_tone),
    ("fm_warble", _fm_warble),
    ("knock", _knock),
    ("rumble", _rumble),
)


# ------------------------------------------------------------------------ US8K-style event classes
# Events mostly fill the clip, like UrbanSound8K slices cut around the sound.
def _fill(rng, clip_n, sr, sig):
    return sig * _envelope(clip_n, sr, rng.uniform(0.01, 0.1), rng.uniform(0.02, 0.2))


def _siren(rng, clip_n, sr):
    centre, depth, rate = _log_uniform(rng, 700, 1100), rng.uniform(0.25, 0.4), rng.uniform(0.8, 3)
    t = np.arange(clip_n) / sr
    track = centre * (1 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    return _fill(rng, clip_n, sr, _harmonics(track, sr, 3, 1.5))


def _engine_idling(rng, clip_n, sr):
    f0 = rng.uniform(25, 60)
    t = np.arange(clip_n) / sr
    hum = _harmonics(np.full(clip_n, f0), sr, 20, 0.8) * (1 + 0.6 * np.cos(np.pi * f0 * t))
    noise = _shaped_noise(rng, clip_n, sr, 20, 800, exponent=-1.0)
    return _fill(rng, clip_n, sr, hum + 0.3 * noise * np.std(hum))


def _drilling(rng, clip_n, sr):
    f0 = _log_uniform(rng, 150, 400)
    jitter = 1 + 0.01 * np.cumsum(rng.standard_normal(clip_n)) / np.sqrt(clip_n)
    whine = _harmonics(f0 * jitter, sr, 40, 0.5)
    hiss = _shaped_noise(rng, clip_n, sr, 2000, 5000)
    return _fill(rng, clip_n, sr, whine / np.std(whine) + 0.5 * hiss)


def _jackhammer(rng, clip_n, sr):
    rate = rng.uniform(10, 20)
    hit_n = int(0.05 * sr)
    events = []
    for s in np.arange(rng.uniform(0, 0.05), clip_n / sr, 1.0 / rate):
        hit = _shaped_noise(rng, hit_n, sr, 300, 3000) * _decay(hit_n, sr, 0.012)
        events.append((s, hit))
    return _fill(rng, clip_n, sr, _place(clip_n, sr, events))


def _bird_tweet(rng, clip_n, sr):
    events, t = [], rng.uniform(0, 0.2)
    while t < clip_n / sr - 0.15:
        for _ in range(int(rng.integers(3, 9))):
            n = int(rng.uniform(0.04, 0.12) * sr)
            track = np.geomspace(_log_uniform(rng, 5000, 7000), _log_uniform(rng, 2000, 3500), n)
            events.append((t, _osc(track, sr) * _envelope(n, sr, 0.005, 0.01)))
            t += n / sr + rng.uniform(0.03, 0.1)
        t += rng.uniform(0.3, 0.8)
    return _place(clip_n, sr, events)


def _car_horn(rng, clip_n, sr):
    n, t0 = _span(rng, clip_n, sr, 0.4, 1.5)
    f = _log_uniform(rng, 350, 450)
    sig = _harmonics(np.full(n, f), sr, 12, 0.6) + _harmonics(np.full(n, 1.26 * f), sr, 12, 0.6)
    return _place(clip_n, sr, [(t0, sig * _envelope(n, sr, 0.01, 0.03))])


def _dog_bark(rng, clip_n, sr):
    events, t = [], rng.uniform(0, 0.3)
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.uniform(0.1, 0.25) * sr)
        f0 = _log_uniform(rng, 400, 800)
        track = f0 * np.geomspace(1.3, 0.7, n)
        bark = _harmonics(track, sr, 8, 1.0) + 0.4 * _shaped_noise(rng, n, sr, 300, 3000)
        events.append((t, bark * _decay(n, sr, n / sr / 3) * _envelope(n, sr, 0.005, 0.01)))
        t += n / sr + rng.uniform(0.15, 0.5)
    return _place(clip_n, sr, events)


def _gun_shot(rng, clip_n, sr):
    n = int(min(rng.uniform(0.4, 0.9), 0.9 * clip_n / sr) * sr)
    t0 = rng.uniform(0, min(0.3, (clip_n - n) / sr))
    blast = _shaped_noise(rng, n, sr, 40, _log_uniform(rng, 2000, 5000), exponent=-0.5)
    blast = blast * _decay(n, sr, rng.uniform(0.05, 0.15))
    echo = (t0 + rng.uniform(0.15, 0.3), 0.3 * blast)
    return _place(clip_n, sr, [(t0, blast), echo])


US8K_CLASSES = (
    ("siren", _siren),
    ("engine_idling", _engine_idling),
    ("drilling", _drilling),
    ("jackhammer", _jackhammer),
    ("bird_tweet", _bird_tweet),
    ("car_horn", _car_horn),
    ("dog_bark", _dog_bark),
    ("gun_shot", _gun_shot),
)


# ------------------------------------------------------------------------------------------- clips
def _rng(seed: int, which: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), which, index]))


def render(make_event, rng, clip_n, sr, channels=1) -> np.ndarray:
    """One clip: event at 10-30 dB SNR over white/pink/brown background, peak -12..-1 dBFS.

    Returns float64 (clip_n,) or (clip_n, channels) with slightly different channel gains.
    """
    event = make_event(rng, clip_n, sr)
    active = event[np.abs(event) > 1e-3 * np.max(np.abs(event))]
    event_rms = np.sqrt(np.mean(active ** 2))
    snr_db = rng.uniform(10, 30)
    background = _shaped_noise(rng, clip_n, sr, 20, exponent=float(rng.choice([0.0, -1.0, -2.0])))
    clip = event + background * event_rms * 10 ** (-snr_db / 20)
    clip *= 10 ** (rng.uniform(-12, -1) / 20) / np.max(np.abs(clip))
    if channels == 1:
        return clip
    gains = 10 ** (rng.uniform(-3, 0, channels) / 20)
    return clip[:, None] * gains[None, :]


@dataclasses.dataclass(frozen=True)
class SynthesisResult:
    """Where each synthetic set was written (the roots the loaders take)."""

    esc: Path
    us8k: Path


def _write_wav(path: Path, data: np.ndarray, sr: int, subtype: str) -> None:
    """sf.write, then zero the timestamp libsndfile stamps into a float WAV's PEAK chunk (the only
    time-dependent bytes it writes), so float files are byte-identical across runs too."""
    sf.write(path, data, sr, subtype=subtype, format="WAV")
    if subtype not in ("FLOAT", "DOUBLE"):
        return
    with open(path, "r+b") as f:
        header = f.read(4096)
        pos = 12  # RIFF chunks follow "RIFF" <size> "WAVE"
        while pos + 8 <= len(header) and header[pos:pos + 4] != b"data":
            size = int.from_bytes(header[pos + 4:pos + 8], "little")
            if header[pos:pos + 4] == b"PEAK":  # version (4 bytes), then the timestamp (4 bytes)
                f.seek(pos + 12)
                f.write(b"\0\0\0\0")
                return
            pos += 8 + size + (size & 1)


def _write_csv(path: Path, columns, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _fresh_dir(out_dir: Path, params: dict) -> Path:
    """Empty ``out_dir`` for a new set, but only if it is empty or was written by this module:
    pointing --out at a real dataset must not delete it."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MARKER).is_file():
            raise FileExistsError(f"{out_dir} is not empty and was not written by csr.synthesize "
                                  f"(no {MARKER}); choose another output folder")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text(json.dumps(params, sort_keys=True) + "\n")
    return out_dir


def synthesize_esc(out_dir, seed: int = 0, clips_per_class: int = 8, folds: int = 5,
                   sample_rate: int = ESC_SAMPLE_RATE, esc10_classes: int | None = None) -> Path:
    """ESC-50 layout: out_dir/meta/esc50.csv + out_dir/audio/{fold}-{src_file}-A-{target}.wav.

    5-s 16-bit mono clips. Clips are dealt round-robin to folds (class-major order), so folds have
    equal sizes (when clips_per_class*classes divides) and each class spreads evenly over folds.
    esc10 is True for the first ``esc10_classes`` classes (default: all, so the "esc10" and "esc50"
    subsets both select every clip; with e.g. 5, "esc10"/"esc40" split the classes 5/5 like the
    paper's ESC-10 labelled / ESC-40 unlabelled setting).
    """
    if clips_per_class < 1 or folds < 1:
        raise ValueError(f"clips_per_class and folds must be >= 1, got {clips_per_class}, {folds}")
    esc10_classes = len(ESC_CLASSES) if esc10_classes is None else esc10_classes
    if not 1 <= esc10_classes <= len(ESC_CLASSES):
        raise ValueError(f"esc10_classes must be in 1..{len(ESC_CLASSES)}, got {esc10_classes}")
    params = {"set": "esc", "seed": seed, "folds": folds, "clips_per_class": clips_per_class,
              "sample_rate": sample_rate, "esc10_classes": esc10_classes}
    out_dir = _fresh_dir(Path(out_dir), params)
    (out_dir / "audio").mkdir()
    clip_n = int(ESC_CLIP_SECONDS * sample_rate)
    rows = []
    for target, (category, make_event) in enumerate(ESC_CLASSES):
        for k in range(clips_per_class):
            index = target * clips_per_class + k
            fold = index % folds + 1
            src_file = 100_000 + index
            name = f"{fold}-{src_file}-A-{target}.wav"
            clip = render(make_event, _rng(seed, _ESC_SET, index), clip_n, sample_rate)
            _write_wav(out_dir / "audio" / name, clip, sample_rate, "PCM_16")
            rows.append({"filename": name, "fold": fold, "target": target, "category": category,
                         "esc10": target < esc10_classes, "src_file": src_file, "take": "A"})
    rows.sort(key=lambda r: r["filename"])
    _write_csv(out_dir / "meta" / "esc50.csv", ESC_COLUMNS, rows)
    return out_dir


def synthesize_us8k(out_dir, seed: int = 0, clips_per_fold: int = 8, folds: int = 10) -> Path:
    """UrbanSound8K layout: out_dir/metadata/UrbanSound8K.csv + out_dir/audio/fold{N}/*.wav.

    Clips last 1-4 s and cycle through US8K_FORMATS (8-bit, 16-bit, 24-bit, float; mono/stereo;
    16-48 kHz). Classes are dealt round-robin, so 8 clips per fold hold one of each class.
    File names follow US8K: {fsID}-{classID}-{occurrence}-{slice}.wav.
    """
    if clips_per_fold < 1 or folds < 1:
        raise ValueError(f"clips_per_fold and folds must be >= 1, got {clips_per_fold}, {folds}")
    out_dir = _fresh_dir(Path(out_dir), {"set": "us8k", "seed": seed, "folds": folds,
                                         "clips_per_fold": clips_per_fold})
    rows = []
    for fold in range(1, folds + 1):
        (out_dir / "audio" / f"fold{fold}").mkdir(parents=True)
        for k in range(clips_per_fold):
            index = (fold - 1) * clips_per_fold + k
            class_id = index % len(US8K_CLASSES)
            category, make_event = US8K_CLASSES[class_id]
            subtype, sr, channels = US8K_FORMATS[index % len(US8K_FORMATS)]
            rng = _rng(seed, _US8K_SET, index)
            seconds = round(rng.uniform(*US8K_SECONDS), 3)
            clip = render(make_event, rng, int(seconds * sr), sr, channels)
            fs_id = 200_000 + index
            start = round(rng.uniform(0, 30), 6)
            name = f"{fs_id}-{class_id}-0-0.wav"
            _write_wav(out_dir / "audio" / f"fold{fold}" / name, clip, sr, subtype)
            rows.append({"slice_file_name": name, "fsID": fs_id, "start": start,
                         "end": round(start + seconds, 6), "salience": int(rng.integers(1, 3)),
                         "fold": fold, "classID": class_id, "class": category})
    _write_csv(out_dir / "metadata" / "UrbanSound8K.csv", US8K_COLUMNS, rows)
    return out_dir


def synthesize(out, seed: int = 0, esc_clips_per_class: int = 8, us8k_clips_per_fold: int = 8,
               esc10_classes: int | None = None) -> SynthesisResult:
    """Write both sets: out/esc (ESC-50 layout) and out/us8k (UrbanSound8K layout)."""
    out = Path(out)
    return SynthesisResult(esc=synthesize_esc(out / "esc", seed, esc_clips_per_class,
                                              esc10_classes=esc10_classes),
                           us8k=synthesize_us8k(out / "us8k", seed, us8k_clips_per_fold))
