"""Export a trained run as a deployable model (csr.export): SavedModels and TFLite.

    csr-export --run RUN_DIR --out EXPORT_DIR [--format saved_model,tflite] [--quantize none|dynamic]
               [--overwrite]

EXPORT_DIR/saved_model needs only TensorFlow (waveforms in); EXPORT_DIR/saved_model_audio also
classifies encoded audio files and needs `import tensorflow_io`; model.tflite (and
model_dynamic.tflite with --quantize=dynamic) run with tf.lite.Interpreter; metadata.json holds the
class names, sample rate and clip length. See docs/deploy.md.

Exit status: 0 on success, 2 when the run cannot be exported (one line on stderr).
"""

from __future__ import annotations

import sys

from absl import flags

from csr.cli import UsageError, run_command
from csr.config import EXPORT_FORMATS, EXPORT_QUANTIZE

PROG = "csr-export"
FLAGS = flags.FlagValues()
flags.DEFINE_string("run", None, "A run directory (results/<experiment>/<run-id>/).", flag_values=FLAGS)
flags.DEFINE_string("out", None, "The export folder to write (replaced only with --overwrite).", flag_values=FLAGS)
flags.DEFINE_list("format", list(EXPORT_FORMATS), "What to write, comma-separated: saved_model (saved_model/ and "
                  "saved_model_audio/), tflite (model.tflite).", flag_values=FLAGS)
flags.DEFINE_enum("quantize", "none", list(EXPORT_QUANTIZE),
                  "dynamic: also write model_dynamic.tflite, dynamic-range quantised (int8 weights).",
                  flag_values=FLAGS)
flags.DEFINE_bool("overwrite", False, "Replace an existing, non-empty --out folder.", flag_values=FLAGS)


def main(positional) -> int:
    """Writes the export of RUN_DIR's model to EXPORT_DIR and prints what it wrote."""
    if positional:
        raise UsageError(f"unexpected arguments {' '.join(positional)!r} (use --run and --out)")
    if not FLAGS.run:
        raise UsageError("--run=RUN_DIR is required")
    if not FLAGS.out:
        raise UsageError("--out=EXPORT_DIR is required")

    from csr.export import export_run  # its ExportError, like UsageError, is one line and status 2

    result = export_run(FLAGS.run, FLAGS.out, formats=[f for f in FLAGS.format if f], quantize=FLAGS.quantize,
                        overwrite=FLAGS.overwrite)
    meta = result.metadata
    print(f"{PROG}: wrote {result.out_dir} ({meta['num_classes']} classes, {meta['sample_rate']} Hz, "
          f"{meta['clip_samples']} samples per clip, {meta['embedding_dim']}-d embedding)")
    for name, size in result.files.items():
        print(f"  {name:<22} {size:>12,d} bytes")
    if result.linked:
        print("  (saved_model_audio/variables are hard links to saved_model/variables: the weights are "
              "stored once)")
    if (meta.get("source") or {}).get("note"):
        print(f"{PROG}: note: {meta['source']['note']}", file=sys.stderr)
    return 0


def run(argv=None) -> int:
    return run_command(PROG, FLAGS, main, argv)


if __name__ == "__main__":
    sys.exit(run())
