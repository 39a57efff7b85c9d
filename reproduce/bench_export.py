"""Benchmark of the deployable export (csr.export): sizes on disk, per-clip CPU latency, agreement.

    python reproduce/bench_export.py [--backbone=small|resnet50v2] [--threads=2] [--esc10_clips=400]

Builds the network with random weights (default: the small backbone at the paper's input, 22,050 Hz
x 5 s; --backbone=resnet50v2 for the paper's network), exports it (SavedModels, TFLite float and
dynamic-range quantised) and measures, side by side in one run:
  1. bytes on disk of each export file;
  2. per-clip latency at batch 1 of the Keras model as trained (chunked XLA front end), the
     SavedModel's waveform signature, TFLite float, TFLite dynamic-range, and the SavedModel's
     audio signature on a 5 s Ogg Vorbis file at 44.1 kHz (decode + resample + model). Calls are
     interleaved round by round and the median is kept, so a shared machine slows all alike;
  3. on the real ESC-10 clips (when --esc10 exists): the clip the audio signature decodes and
     resamples in the graph against csr.audio's (soundfile + librosa soxr_hq): waveform and log-mel
     differences; the audio signature against csr.predict, and each TFLite model against the
     SavedModel: largest probability difference and top-1 agreement. With random weights the outputs are close to
     uniform, so top-1 agreement is a harsh measure (a trained model's margins are larger).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import flags

from csr import config as C
from csr.cli import run_script

FLAGS = flags.FLAGS
flags.DEFINE_enum("backbone", "small", list(C.BACKBONES), "Backbone (random weights).")
flags.DEFINE_integer("threads", 2, "CPU threads for TensorFlow (intra-op) and the TFLite interpreter.")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds; each times every variant --calls times.")
flags.DEFINE_integer("calls", 4, "Timed calls per variant and round (after one untimed warm-up).")
flags.DEFINE_string("esc10", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"),
                    "ESC-10 folder (meta/esc50.csv, audio/) for the agreement measurements.")
flags.DEFINE_integer("esc10_clips", 400, "Real clips for the agreement measurements (0: none).")
flags.DEFINE_string("out", None, "Keep the export in this folder (default: a temporary one).")


def _esc10_paths(root: Path, count: int) -> list[str]:
    from csr import datasets

    if count <= 0 or not (root / "meta" / "esc50.csv").is_file():
        return []
    return [str(p) for p in datasets.esc50(root, "esc10")["path"][:count]]


def _ogg_clip(folder: Path, sample_rate=44100, seconds=5.0) -> bytes:
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-t) + 0.05 * rng.standard_normal(len(t))
    sf.write(folder / "clip.ogg", x.astype(np.float32), sample_rate, format="OGG", subtype="VORBIS")
    return (folder / "clip.ogg").read_bytes()


def main(argv):
    del argv
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    from csr import audio_graph, export
    from csr.features import LogMelSpectrogram
    from csr.model import build_model
    from csr.predict import _forward, _softmax, load_windows

    clip = C.CLIP_SAMPLES
    print(f"backbone {FLAGS.backbone} (random weights), {C.SAMPLE_RATE} Hz x {clip / C.SAMPLE_RATE:g} s, "
          f"{FLAGS.threads} threads, TensorFlow {tf.__version__}")
    model = build_model(10, backbone=FLAGS.backbone, weights=None, seed=0)
    names = [f"class_{i}" for i in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(FLAGS.out) if FLAGS.out else Path(tmp) / "export"
        start = time.perf_counter()
        result = export.export_model(model, names, out, quantize="dynamic", overwrite=True)
        print(f"export: {time.perf_counter() - start:.1f} s")

        print("\nsize on disk (bytes)")
        sizes = {"SavedModel (saved_model/)": export.dir_bytes(out / export.SAVED_MODEL),
                 "  its variables": export.dir_bytes(out / export.SAVED_MODEL / "variables"),
                 "SavedModel + audio (both folders)": export.dir_bytes(out),
                 "TFLite float (model.tflite)": export.dir_bytes(out / export.TFLITE),
                 "TFLite dynamic (model_dynamic.tflite)": export.dir_bytes(out / export.TFLITE_DYNAMIC)}
        others = (export.TFLITE, export.TFLITE_DYNAMIC, export.METADATA)
        sizes["SavedModel + audio (both folders)"] -= sum(export.dir_bytes(out / f) for f in others)
        for name, size in sizes.items():
            print(f"  {name:<40} {size:>13,d}")
        if result.linked:
            print("  (saved_model_audio/variables are hard links to saved_model/variables)")

        saved = export.load_export(out, "saved_model")
        flt = export.load_export(out, "tflite", num_threads=FLAGS.threads)
        dyn = export.load_export(out, "tflite_dynamic", num_threads=FLAGS.threads)
        keras_forward = _forward(model)
        ogg = _ogg_clip(Path(tmp))
        wave = np.random.default_rng(1).standard_normal((1, clip)).astype(np.float32)
        variants = {
            "Keras model (chunked XLA front end)": lambda: keras_forward(wave)[1].numpy(),
            "SavedModel serving_default": lambda: saved(wave),
            "TFLite float": lambda: flt(wave),
            "TFLite dynamic-range": lambda: dyn(wave),
            "SavedModel classify_audio (44.1 kHz Ogg)": lambda: saved.classify_audio([ogg]),
        }
        times = {name: [] for name in variants}
        for fn in variants.values():
            fn()  # warm-up: tracing, first allocations
        for _ in range(FLAGS.rounds):
            for name, fn in variants.items():
                for _ in range(FLAGS.calls):
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
        print(f"\nper-clip latency, batch 1, {FLAGS.rounds} x {FLAGS.calls} calls (ms: median / p90)")
        for name, t in times.items():
            print(f"  {name:<42} {1e3 * statistics.median(t):9.1f} / {1e3 * np.percentile(t, 90):7.1f}")

        paths = _esc10_paths(Path(FLAGS.esc10), FLAGS.esc10_clips)
        if not paths:
            print(f"\nno ESC-10 clips at {FLAGS.esc10}: agreement not measured")
            return 0
        print(f"\nagreement on {len(paths)} real ESC-10 clips (44.1 kHz Ogg Vorbis)")
        rows = {"audio signature vs csr.predict": [], "TFLite float vs SavedModel": [],
                "TFLite dynamic vs SavedModel": [], "TFLite dynamic vs csr.predict": []}
        # the model-independent part: the clip decoded and resampled in the graph vs by csr.audio
        to_clip = tf.function(lambda data: audio_graph.to_clips(*audio_graph.decode_audio(data), C.SAMPLE_RATE, clip),
                              input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
        log_mel = LogMelSpectrogram(chunk_size=0)
        wave_rel, mel_db = [], []
        start = time.perf_counter()
        for i in range(0, len(paths), 16):
            chunk = paths[i:i + 16]
            waves = np.concatenate([load_windows(p, C.SAMPLE_RATE, clip) for p in chunk])
            graph = np.concatenate([to_clip(Path(p).read_bytes()).numpy() for p in chunk])
            d = graph - waves
            wave_rel += list(np.sqrt(np.mean(d ** 2, 1)) / np.maximum(np.sqrt(np.mean(waves ** 2, 1)), 1e-12))
            mel_db += list(np.abs(log_mel(graph).numpy() - log_mel(waves).numpy()).reshape(len(chunk), -1).max(1))
            ref = _softmax(keras_forward(waves)[1].numpy().astype(np.float64))
            got = saved.classify_audio([Path(p).read_bytes() for p in chunk])["probabilities"]
            p_saved, p_float, p_dyn = saved(waves)[1], flt(waves)[1], dyn(waves)[1]
            pairs = (("audio signature vs csr.predict", got, ref), ("TFLite float vs SavedModel", p_float, p_saved),
                     ("TFLite dynamic vs SavedModel", p_dyn, p_saved), ("TFLite dynamic vs csr.predict", p_dyn, ref))
            for key, a, b in pairs:
                rows[key] += [(float(np.abs(x - y).max()), bool(x.argmax() == y.argmax())) for x, y in zip(a, b)]
        print(f"  clip in the graph vs csr.audio: waveform relative RMS difference median {np.median(wave_rel):.1e} "
              f"max {np.max(wave_rel):.1e}; log-mel |d| (dB) median of clip maxima {np.median(mel_db):.2f}, "
              f"max {np.max(mel_db):.2f}")
        for key, values in rows.items():
            dp = np.array([v[0] for v in values])
            print(f"  {key:<34} |dp| median {np.median(dp):.1e}  max {dp.max():.1e}  "
                  f"top-1 agreement {np.mean([v[1] for v in values]):.4f}")
        print(f"  ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    run_script(main)
