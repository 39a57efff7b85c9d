"""Download, verify and unpack ESC-50 or UrbanSound8K (csr.download).

    csr-download --dataset esc50|us8k|all [--root data/datasets] [--quiet]

Prints each dataset's folder. Interrupted downloads resume; offline, the error says where to put
the archive by hand.
"""

from __future__ import annotations

import sys

from absl import flags

from csr.cli import UsageError, run_command
from csr.download import DATASETS, DownloadError, ensure_dataset

PROG = "csr-download"
FLAGS = flags.FlagValues()
flags.DEFINE_enum("dataset", None, sorted(DATASETS) + ["all"],
                  "esc50 (GitHub archive, ~600 MB), us8k (Zenodo, 6 GB), or all.", flag_values=FLAGS)
flags.DEFINE_string("root", "data/datasets", "Folder that receives the archives and the unpacked datasets.",
                    flag_values=FLAGS)
flags.DEFINE_bool("quiet", False, "No progress bars.", flag_values=FLAGS)


def main(positional) -> int:
    """Makes each dataset present and verified under --root."""
    if positional:
        raise UsageError(f"unexpected argument(s) {' '.join(positional)}")
    if not FLAGS.dataset:
        raise UsageError(f"--dataset is required: one of {', '.join(sorted(DATASETS))}, all")
    names = sorted(DATASETS) if FLAGS.dataset == "all" else [FLAGS.dataset]
    try:
        for name in names:
            print(ensure_dataset(name, FLAGS.root, progress=not FLAGS.quiet))
    except DownloadError as err:
        raise UsageError(str(err)) from None
    return 0


def run(argv=None) -> int:
    return run_command(PROG, FLAGS, main, argv)


if __name__ == "__main__":
    sys.exit(run())
