"""Download, verify and unpack ESC-50 or UrbanSound8K into --root (see csr/download.py).

Usage: python data/download.py --dataset esc50|us8k|all [--root DIR]

This is only the command line; the logic lives in csr/download.py. Prints the dataset root(s).
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

from csr.download import DATASETS, DownloadError, ensure_dataset  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS) + ["all"],
                        help="esc50 (GitHub archive, ~600 MB) or us8k (Zenodo, 6 GB), or all")
    parser.add_argument("--root", default=str(REPO / "data" / "datasets"),
                        help="folder that receives the archives and the unpacked datasets "
                             "(default: data/datasets in the repository)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    names = sorted(DATASETS) if args.dataset == "all" else [args.dataset]
    try:
        for name in names:
            print(ensure_dataset(name, args.root, progress=not args.quiet))
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
