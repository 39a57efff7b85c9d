"""Hear and see what the contrastive task asks of the network (csr.listening).

    csr-listen OUT_DIR [--data ESC50_DIR] [--pairs 4] [--seed 0]

Writes original/augmented WAV pairs, mixed exactly as in training, and their log-mel spectrograms
(logmel_pairs.png). Real clips come from an ESC-50-layout folder; without one, synthetic tones and
chirps.
"""

from __future__ import annotations

import sys

from absl import flags

from csr.cli import UsageError, run_command

PROG = "csr-listen"
FLAGS = flags.FlagValues()
flags.DEFINE_string("data", None, "An ESC-50-layout folder (audio/, meta/esc50.csv) to take clips from; "
                    "default: synthetic tones and chirps.", flag_values=FLAGS)
flags.DEFINE_integer("pairs", 4, "Original/augmented pairs to write.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the mixing.", flag_values=FLAGS)


def main(positional) -> int:
    """Writes the pairs and the PNG into OUT_DIR and prints their paths."""
    from csr import config
    from csr.listening import real_clips, synthetic_clips, write_pairs

    if len(positional) != 1:
        raise UsageError("give one output folder: csr-listen OUT_DIR")
    count = 2 * FLAGS.pairs
    found = real_clips(FLAGS.data, count) if FLAGS.data else None
    if FLAGS.data and found is None:
        print(f"{PROG}: note: fewer than {count} clips under {FLAGS.data}/audio: using synthetic tones and "
              "chirps", file=sys.stderr)
    clips, names = found or synthetic_clips(count, config.SAMPLE_RATE, config.CLIP_SAMPLES)
    for path in write_pairs(positional[0], clips, names, seed=FLAGS.seed):
        print(path)
    return 0


main.positional = "OUT_DIR"


def run(argv=None) -> int:
    return run_command(PROG, FLAGS, main, argv)


if __name__ == "__main__":
    sys.exit(run())
