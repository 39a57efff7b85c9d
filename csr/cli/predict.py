"""Classify audio files with a trained run (csr.predict): top-k classes, optionally embeddings.

    csr-predict --run RUN_DIR FILE... [--top_k 3] [--windows] [--embed OUT.npy] [--batch 16]

Exit status: 0 when every file was classified, 1 when some failed (each named on stderr, the
others still classified), 2 when none could be classified or the run cannot be used.
"""

from __future__ import annotations

import sys

from absl import flags

from csr.cli import UsageError, run_command

PROG = "csr-predict"
FLAGS = flags.FlagValues()
flags.DEFINE_string("run", None, "A run directory (results/<experiment>/<run-id>/) or a csr-export folder.",
                    flag_values=FLAGS)
flags.DEFINE_integer("top_k", 3, "Classes to print per file.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool("windows", False, "Average the softmax over consecutive non-overlapping clip-length (5 s) "
                  "windows covering the whole file (a remainder under half a clip is dropped); default: "
                  "the first clip, as in training.", flag_values=FLAGS)
flags.DEFINE_string("embed", None, "Write the backbone embeddings (n_ok_files, D) to this .npy file, and "
                    "the file names to OUT.files.txt.", flag_values=FLAGS)
flags.DEFINE_integer("batch", 16, "Clips per forward pass.", lower_bound=1, flag_values=FLAGS)


def main(files) -> int:
    """Prints the top-k classes of each FILE (any format soundfile reads)."""
    from csr.predict import PredictError, format_result, load_run, predict_files, write_embeddings

    if not FLAGS.run:
        raise UsageError("--run=RUN_DIR is required")
    if not files:
        raise UsageError("no audio files given")
    try:
        model, names, info = load_run(FLAGS.run)
    except PredictError as err:
        raise UsageError(str(err)) from None
    if info["note"]:
        print(f"{PROG}: note: {info['note']}", file=sys.stderr)
    if not info["named"]:
        print(f"{PROG}: note: {FLAGS.run}: no class_names.json; classes print as class_<i>", file=sys.stderr)
    results = predict_files(model, files, top_k=FLAGS.top_k, class_names=names, windows=FLAGS.windows,
                            batch_size=FLAGS.batch)
    for result in results:
        if result.ok:
            print(format_result(result))
        else:
            print(f"{PROG}: error: {result.error}", file=sys.stderr)
    sys.stdout.flush()
    if FLAGS.embed:
        side = write_embeddings(FLAGS.embed, results, model.embedding_dim)
        print(f"{PROG}: wrote {FLAGS.embed} and {side}", file=sys.stderr)
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"{PROG}: {failed} of {len(results)} files failed", file=sys.stderr)
    return 0 if not failed else 2 if failed == len(results) else 1  # 2: nothing could be classified


main.positional = "FILE..."


def run(argv=None) -> int:
    return run_command(PROG, FLAGS, main, argv)


if __name__ == "__main__":
    sys.exit(run())
