"""Write the project's synthetic ESC-50-like and UrbanSound8K-like sets (csr.synthesize).

    csr-synthesize [--out data/synthetic] [--seed 0] [--clips_per_class 8] ...

Creates OUT/esc (meta/esc50.csv, audio/*.wav) and OUT/us8k (metadata/UrbanSound8K.csv,
audio/fold1..10/*.wav). The same seed gives byte-identical files.
"""

from __future__ import annotations

import sys
import time

from absl import flags

from csr.cli import UsageError, run_command
from csr.synthesize import ESC_CLASSES, synthesize

PROG = "csr-synthesize"
FLAGS = flags.FlagValues()
flags.DEFINE_string("out", "data/synthetic", "Output folder.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Same seed -> byte-identical files.", flag_values=FLAGS)
flags.DEFINE_integer("clips_per_class", 8, "ESC-like clips per class (10 classes, dealt round-robin to 5 folds).",
                     flag_values=FLAGS)
flags.DEFINE_integer("us8k_clips_per_fold", 8, "US8K-like clips per fold (10 folds; 8 classes dealt "
                     "round-robin).", flag_values=FLAGS)
flags.DEFINE_integer("esc10_classes", len(ESC_CLASSES), "How many ESC-like classes get esc10=True (default all; "
                     "5 gives an ESC-10/ESC-40 style split).", flag_values=FLAGS)


def main(positional) -> int:
    """Writes both sets and prints their folders."""
    if positional:
        raise UsageError(f"unexpected argument(s) {' '.join(positional)}")
    start = time.time()
    try:
        result = synthesize(FLAGS.out, seed=FLAGS.seed, esc_clips_per_class=FLAGS.clips_per_class,
                            us8k_clips_per_fold=FLAGS.us8k_clips_per_fold, esc10_classes=FLAGS.esc10_classes)
    except (ValueError, FileExistsError) as err:
        raise UsageError(str(err)) from None
    print(f"{result.esc}\n{result.us8k}\n({time.time() - start:.1f} s)")
    return 0


def run(argv=None) -> int:
    return run_command(PROG, FLAGS, main, argv)


if __name__ == "__main__":
    sys.exit(run())
