"""Download, verify and unpack ESC-50 or UrbanSound8K: `csr-download` (csr/cli/download.py).

    python data/download.py --dataset esc50|us8k|all [--root DIR]
"""

import sys

from csr.cli.download import run

if __name__ == "__main__":
    sys.exit(run())
