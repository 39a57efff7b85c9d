"""Benchmark of the contrastive front end: TF batch ops against numpy + librosa clip by clip.

    python reproduce/bench_frontend.py [--rounds 3] [--batches 3] [--pipeline_batches 40]

Measured side by side in one run, on batches of 40 five-second clips (8 labeled + 32 unlabeled):
  1. TF:      batch_split_mix (offsets, partner mixing, coloured noise) + log-mel of the 40 mixed
              views, one tf.function per batch (the CPU defaults: chunked rows, XLA log-mel).
  2. librosa: the same transform with numpy and librosa, one clip at a time, twice: with
              librosa.feature.melspectrogram (the usual call) and with librosa.stft and a
              filterbank computed once (the fastest clip-by-clip path).
  3. pipeline: float16 waveform cache on disk -> tf.data -> batch, with the mixing in the tf.data
              map (mix_on=host) and without it (mix_on=device: the train step mixes on the GPU).
The three alternate for --rounds rounds; the medians are compared. Prints clips/s, the ratio
and the process's peak memory after each stage.
Targets (issue 3): TF >= 3x librosa; pipeline >= 1,000 clips/s.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import flags

from csr import config as C
from csr.cli import run_script

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 3, "Alternating rounds of the TF and librosa transforms (medians compared).")
flags.DEFINE_integer("batches", 3, "Batches of 40 clips per round and transform.")
flags.DEFINE_integer("pipeline_batches", 40, "Timed batches for each input pipeline.")
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


def librosa_transform(batch: np.ndarray, rng, gains: np.ndarray, mel_basis=None) -> list[np.ndarray]:
    """The same augmentation + log-mel, numpy and librosa, one clip at a time.

    mel_basis None: librosa.feature.melspectrogram, the usual call (it rebuilds the filterbank for
    every clip); else librosa.stft and the given filterbank, the fastest clip-by-clip path.
    """
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
            if mel_basis is None:
                mel = librosa.feature.melspectrogram(
                    y=y, sr=C.SAMPLE_RATE, n_fft=C.N_FFT, hop_length=C.HOP_LENGTH, center=True,
                    pad_mode="constant", power=2.0, n_mels=C.N_MELS, fmin=C.F_MIN, fmax=C.F_MAX)
            else:
                spectrum = librosa.stft(y, n_fft=C.N_FFT, hop_length=C.HOP_LENGTH, center=True,
                                        pad_mode="constant")
                mel = mel_basis @ (spectrum.real**2 + spectrum.imag**2)
            out.append(librosa.power_to_db(mel, ref=1.0, amin=C.AMIN, top_db=C.TOP_DB))
    return out


def pipeline_rate(waves_path: Path, batches: int, mix_on: str) -> float:
    """Clips/s of proposed_dataset (cache memmap -> tf.data -> batch) with mixing on `mix_on`."""
    from csr import pipeline

    waves = np.load(waves_path, mmap_mode="r")
    half = len(waves) // 2
    labels = np.zeros(half, np.int32)
    ds = pipeline.proposed_dataset(waves[:half], labels, waves[half:], epoch=0, seed=0,
                                   mix_on=mix_on).repeat()
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    batch["x"].numpy()
    return BATCH * batches / (time.perf_counter() - start)


def main(argv):
    del argv
    import tensorflow as tf

    from csr.augment import AugmentConfig, batch_split_mix
    from csr.features import LogMelSpectrogram, mel_filterbank
    from csr.noise import spectral_table

    with tempfile.TemporaryDirectory() as tmp:
        waves = make_cache(Path(tmp), FLAGS.clips)
        print(f"cache: {FLAGS.clips} clips x {C.CLIP_SAMPLES} samples float16; peak RSS {peak_rss_mb():.0f} MB")
        logmel = LogMelSpectrogram()
        config = AugmentConfig()

        @tf.function
        def tf_transform(labeled, unlabeled, seed):
            s1, s1_aug, s2, s2_aug = batch_split_mix(labeled, unlabeled, config, seed=seed)
            return logmel(tf.concat([s1_aug, s2_aug], axis=0))

        batches = [np.asarray(waves[(np.arange(BATCH) + k * BATCH) % len(waves)], np.float32)
                   for k in range(FLAGS.batches)]
        tensors = [(tf.constant(b[:8]), tf.constant(b[8:])) for b in batches]  # as tf.data delivers them
        tf_transform(*tensors[0], tf.constant([0, 0], tf.int64)).numpy()  # trace and compile
        gains = spectral_table(C.CLIP_SAMPLES).numpy()
        mel_basis = mel_filterbank(C.SAMPLE_RATE, C.N_FFT, C.N_MELS, C.F_MIN, C.F_MAX)
        rng = np.random.default_rng(0)
        librosa_transform(batches[0][:2], rng, gains)  # import and warm up librosa
        librosa_transform(batches[0][:2], rng, gains, mel_basis)

        def run_tf(round_):
            start = time.perf_counter()
            for k, (labeled, unlabeled) in enumerate(tensors):
                tf_transform(labeled, unlabeled, tf.constant([round_, k], tf.int64)).numpy()
            return BATCH * len(batches) / (time.perf_counter() - start)

        def run_librosa(basis):
            start = time.perf_counter()
            for b in batches:
                librosa_transform(b, rng, gains, basis)
            return BATCH * len(batches) / (time.perf_counter() - start)

        rates = {"tf": [], "librosa": [], "librosa_cached": []}
        for round_ in range(FLAGS.rounds):
            rates["tf"].append(run_tf(round_ + 1))
            rates["librosa"].append(run_librosa(None))
            rates["librosa_cached"].append(run_librosa(mel_basis))
        median = {k: float(np.median(v)) for k, v in rates.items()}

        def show(label, key):
            rounds = ", ".join(f"{r:.0f}" for r in rates[key])
            print(f"{label:50s} {median[key]:7.1f} clips/s   (rounds: {rounds})")

        show("TF batch mix + noise + log-mel:", "tf")
        show("numpy + librosa.feature.melspectrogram, per clip:", "librosa")
        show("numpy + librosa.stft + cached filterbank, per clip:", "librosa_cached")
        print(f"ratio TF / melspectrogram path: {median['tf'] / median['librosa']:6.2f}x   "
              f"TF / cached-filterbank path: {median['tf'] / median['librosa_cached']:6.2f}x   "
              f"(target >= 3x)   peak RSS {peak_rss_mb():.0f} MB")

        path = Path(tmp) / "bench.npy"
        host = pipeline_rate(path, FLAGS.pipeline_batches, "host")
        print(f"pipeline cache -> mixed batch (mix_on=host):       {host:7.1f} clips/s   "
              f"peak RSS {peak_rss_mb():.0f} MB")
        device = pipeline_rate(path, FLAGS.pipeline_batches, "device")
        print(f"pipeline cache -> raw batch (mix_on=device):       {device:7.1f} clips/s   "
              f"peak RSS {peak_rss_mb():.0f} MB   (target >= 1000; the step mixes on the GPU)")


if __name__ == "__main__":
    run_script(main)
