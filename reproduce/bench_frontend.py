"""Benchmark of the contrastive front end: TF batch ops against numpy + librosa clip by clip.

    python reproduce/bench_frontend.py [--batches 5] [--pipeline_batches 30]

Measured side by side in one run, on batches of 40 five-second clips (8 labeled + 32 unlabeled):
  1. TF:      batch_split_mix (offsets, partner mixing, coloured noise) + log-mel of the 40 mixed
              views, one tf.function per batch.
  2. librosa: the same transform with numpy and librosa, one clip at a time.
  3. pipeline: the whole input pipeline, float16 waveform cache on disk -> tf.data -> mixed batch
              (what feeds the GPU; the log-mel runs inside the model).
Prints clips/s, the TF/librosa ratio and the process's peak memory after each stage.
Targets (issue 3): TF >= 3x librosa; pipeline >= 1,000 clips/s.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from csr import config as C  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batches", 5, "Timed batches of 40 clips for the TF and librosa transforms.")
flags.DEFINE_integer("pipeline_batches", 30, "Timed batches for the full input pipeline.")
flags.DEFINE_integer("clips", 200, "Clips in the benchmark's waveform cache.")

BATCH = C.LABELED_BATCH + C.UNLABELED_BATCH


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_cache(folder: Path, clips: int) -> np.ndarray:
    """A float16 memmap of unit-RMS clips: decaying tones over noise, like a real cache's content."""
    rng = np.random.default_rng(0)
    t = np.arange(C.CLIP_SAMPLES) / C.SAMPLE_RATE
    waves = np.lib.format.open_memmap(folder / "bench.npy", mode="w+", dtype=np.float16,
                                      shape=(clips, C.CLIP_SAMPLES))
    for i in range(clips):
        x = np.sin(2 * np.pi * rng.uniform(100, 4000) * t) * np.exp(-t * rng.uniform(0.5, 4))
        x += 0.1 * rng.standard_normal(C.CLIP_SAMPLES)
        waves[i] = (x / np.sqrt(np.mean(x**2))).astype(np.float16)
    waves.flush()
    return np.load(folder / "bench.npy", mmap_mode="r")


def librosa_transform(batch: np.ndarray, rng, gains: np.ndarray) -> list[np.ndarray]:
    """The same augmentation + log-mel, numpy and librosa, one clip at a time."""
    import librosa

    n = batch.shape[1]
    order = rng.permutation(len(batch))
    half = len(batch) // 2
    s1, s2 = batch[order[:half]], batch[order[half:]]
    out = []
    for anchors, partners in ((s1, s2), (s2, s1)):
        for a, b in zip(anchors, partners):
            a = np.roll(a, rng.integers(n))
            b = np.roll(b, rng.integers(n))
            g = np.sqrt(np.mean(a**2) / (np.mean(b**2) * 10 ** (rng.uniform(*C.MIX_SNR_DB) / 10)))
            mixture = a + g * b
            # Complex Gaussian bins, as csr.noise draws them (numpy's ziggurat normals are its
            # fastest way to the same distribution), shaped by the colour's gains.
            z = rng.standard_normal((2, n // 2 + 1))
            noise = np.fft.irfft((z[0] + 1j * z[1]) * gains[rng.integers(len(gains))], n)
            noise *= np.sqrt(np.mean(mixture**2) / (np.mean(noise**2) * 10 ** (rng.uniform(*C.NOISE_SNR_DB) / 10)))
            y = (mixture + noise).astype(np.float32)
            mel = librosa.feature.melspectrogram(
                y=y, sr=C.SAMPLE_RATE, n_fft=C.N_FFT, hop_length=C.HOP_LENGTH, center=True,
                pad_mode="constant", power=2.0, n_mels=C.N_MELS, fmin=C.F_MIN, fmax=C.F_MAX)
            out.append(librosa.power_to_db(mel, ref=1.0, amin=C.AMIN, top_db=C.TOP_DB))
    return out


def main(argv):
    del argv
    import tensorflow as tf

    from csr import pipeline
    from csr.augment import AugmentConfig, batch_split_mix
    from csr.features import LogMelSpectrogram
    from csr.noise import spectral_table

    with tempfile.TemporaryDirectory() as tmp:
        waves = make_cache(Path(tmp), FLAGS.clips)
        print(f"cache: {FLAGS.clips} clips x {C.CLIP_SAMPLES} samples float16; peak RSS {peak_rss_mb():.0f} MB")
        logmel = LogMelSpectrogram()
        config = AugmentConfig()

        @tf.function(reduce_retracing=True)
        def tf_transform(labeled, unlabeled, seed):
            s1, s1_aug, s2, s2_aug = batch_split_mix(labeled, unlabeled, config, seed=seed)
            return logmel(tf.concat([s1_aug, s2_aug], axis=0))

        batches = [np.asarray(waves[(np.arange(BATCH) + k * BATCH) % len(waves)], np.float32)
                   for k in range(FLAGS.batches)]
        tf_transform(batches[0][:8], batches[0][8:], tf.constant([0, 0], tf.int64)).numpy()  # trace
        start = time.perf_counter()
        for k, b in enumerate(batches):
            tf_transform(b[:8], b[8:], tf.constant([1, k], tf.int64)).numpy()
        tf_rate = BATCH * len(batches) / (time.perf_counter() - start)
        print(f"TF batch mix + noise + log-mel:      {tf_rate:8.1f} clips/s   peak RSS {peak_rss_mb():.0f} MB")

        gains = spectral_table(C.CLIP_SAMPLES).numpy()
        rng = np.random.default_rng(0)
        librosa_transform(batches[0][:2], rng, gains)  # import and warm up librosa
        start = time.perf_counter()
        for b in batches:
            librosa_transform(b, rng, gains)
        lr_rate = BATCH * len(batches) / (time.perf_counter() - start)
        print(f"numpy + librosa, clip by clip:       {lr_rate:8.1f} clips/s   peak RSS {peak_rss_mb():.0f} MB")
        print(f"ratio TF / librosa:                  {tf_rate / lr_rate:8.2f}x   (target >= 3x)")

        labels = np.zeros(C.LABELED_BATCH * FLAGS.pipeline_batches, np.int32)
        labeled = np.load(Path(tmp) / "bench.npy", mmap_mode="r")
        ds = pipeline.proposed_dataset(labeled[: len(labeled) // 2], labels[: len(labeled) // 2],
                                       labeled[len(labeled) // 2:], epoch=0, seed=0)
        ds = ds.repeat()
        it = iter(ds)
        next(it)
        start = time.perf_counter()
        for _ in range(FLAGS.pipeline_batches):
            next(it)["s2_aug"].numpy()
        pipe_rate = BATCH * FLAGS.pipeline_batches / (time.perf_counter() - start)
        print(f"input pipeline cache -> mixed batch: {pipe_rate:8.1f} clips/s   peak RSS {peak_rss_mb():.0f} MB"
              f"   (target >= 1000)")


if __name__ == "__main__":
    app.run(main)
