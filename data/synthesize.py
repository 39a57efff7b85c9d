"""Write the synthetic ESC-50-like and UrbanSound8K-like sets (see csr/synthesize.py).

Usage: python data/synthesize.py [--out DIR] [--seed S] [--clips_per_class N] ...

The generator lives in csr/synthesize.py; this is only the command line. Creates DIR/esc
(meta/esc50.csv, audio/*.wav) and DIR/us8k (metadata/UrbanSound8K.csv, audio/fold1..10/*.wav).
"""

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

from csr.synthesize import ESC_CLASSES, synthesize  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "data" / "synthetic"),
                        help="output folder (default: data/synthetic in the repository)")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical files")
    parser.add_argument("--clips_per_class", type=int, default=8,
                        help="ESC-like clips per class (10 classes, dealt round-robin to 5 folds)")
    parser.add_argument("--us8k_clips_per_fold", type=int, default=8,
                        help="US8K-like clips per fold (10 folds; 8 classes dealt round-robin)")
    parser.add_argument("--esc10_classes", type=int, default=len(ESC_CLASSES),
                        help="how many ESC-like classes get esc10=True (default all; 5 gives an "
                             "ESC-10/ESC-40 style split)")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        result = synthesize(args.out, seed=args.seed, esc_clips_per_class=args.clips_per_class,
                            us8k_clips_per_fold=args.us8k_clips_per_fold,
                            esc10_classes=args.esc10_classes)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{result.esc}\n{result.us8k}\n({time.time() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
