"""A listening check of the contrastive task: what batch-split mixing does to real clips.

`write_pairs(out_dir)` mixes a few clips exactly as training does (csr.augment.batch_split_mix at
the paper's settings) and writes each original and its augmented view as WAV files at the same
scale, with one PNG of their log-mel spectrograms side by side. The command line is csr.cli.listen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from csr import config
from csr.augment import AugmentConfig, batch_split_mix


def real_clips(data_dir, count: int, sample_rate: int = config.SAMPLE_RATE,
               num_samples: int = config.CLIP_SAMPLES) -> tuple[np.ndarray, list[str]] | None:
    """`count` real clips from an ESC-50-layout folder (one per category where possible), with their
    names; None when the folder holds fewer."""
    from csr.audio import load_audio

    data_dir = Path(data_dir)
    if (data_dir / "audio").is_dir():
        files = sorted((data_dir / "audio").glob("*.ogg")) + sorted((data_dir / "audio").glob("*.wav"))
        meta = data_dir / "meta" / "esc50.csv"
        if meta.is_file():  # one clip per category for variety
            import pandas as pd

            table = pd.read_csv(meta).drop_duplicates("category")
            files = [data_dir / "audio" / f for f in table["filename"]] + files
        files = list(dict.fromkeys(files))[:count]
        if len(files) == count:
            clips = [load_audio(p, sr=sample_rate, seconds=num_samples / sample_rate) for p in files]
            return np.stack(clips).astype(np.float32), [p.stem for p in files]
    return None


def synthetic_clips(count: int, sample_rate: int, num_samples: int) -> tuple[np.ndarray, list[str]]:
    """Decaying tones and rising chirps, unit RMS, with their names."""
    t = np.arange(num_samples) / sample_rate
    clips, names = [], []
    for i in range(count):
        start = (i * 0.6) % 3.5
        envelope = np.exp(-4.0 * np.clip(t - start, 0, None)) * (t >= start)
        if i % 2:
            f0, f1 = 300.0 * (i + 1), 4000.0
            phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
            clip, name = np.sin(phase), f"chirp{i}"
        else:
            clip, name = np.sin(2 * np.pi * 220.0 * (i + 1) * t) * envelope, f"tone{i}"
        clips.append(clip / np.sqrt(np.mean(clip**2)))
        names.append(name)
    return np.stack(clips).astype(np.float32), names


def _log_mel(wave: np.ndarray) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=wave, sr=config.SAMPLE_RATE, n_fft=config.N_FFT,
                                         hop_length=config.HOP_LENGTH, n_mels=config.N_MELS,
                                         fmin=config.F_MIN, fmax=config.F_MAX)
    return librosa.power_to_db(mel, ref=1.0, amin=config.AMIN, top_db=config.TOP_DB)


def write_pairs(out_dir, clips: np.ndarray, names: list[str], seed: int = 0) -> list[Path]:
    """Write len(clips) // 2 original/augmented WAV pairs and one PNG of their log-mel spectrograms.

    The first half of `clips` plays the labeled batch, the second the unlabeled one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    from csr.runio import atomic_write

    pairs = len(clips) // 2
    s1, s1_aug, s2, s2_aug, index = (t.numpy() for t in batch_split_mix(
        clips[:pairs], clips[pairs:2 * pairs], AugmentConfig(), seed=seed, return_index=True))
    originals, augmented = np.concatenate([s1, s2]), np.concatenate([s1_aug, s2_aug])
    out_dir = Path(out_dir)
    written = []
    fig, axes = plt.subplots(pairs, 2, figsize=(11, 2.6 * pairs), squeeze=False)
    for k in range(pairs):
        row = k // 2 if k % 2 == 0 else len(s1) + k // 2  # alternate between the two halves
        name = names[int(index[row])]
        scale = 0.99 / max(np.abs(originals[row]).max(), np.abs(augmented[row]).max(), 1e-9)
        images = {}
        for kind, wave in (("original", originals[row]), ("augmented", augmented[row])):
            path = out_dir / f"pair{k}_{name}_{kind}.wav"
            with atomic_write(path, "wb") as handle:  # same scale: levels comparable
                sf.write(handle, wave * scale, config.SAMPLE_RATE, subtype="PCM_16", format="WAV")
            written.append(path)
            images[kind] = _log_mel(wave)
        vmax = max(img.max() for img in images.values())  # one colour scale per pair
        for col, (kind, img) in enumerate(images.items()):
            ax = axes[k, col]
            ax.imshow(img, origin="lower", aspect="auto", cmap="magma", vmin=vmax - config.TOP_DB, vmax=vmax)
            ax.set_title(f"{name} ({kind})", fontsize=9)
            ax.set_xlabel("frame")
            ax.set_ylabel("mel bin")
    fig.tight_layout()
    png = out_dir / "logmel_pairs.png"
    with atomic_write(png, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)
    return written + [png]
