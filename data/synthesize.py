"""Write the synthetic ESC-50-like and UrbanSound8K-like sets: `csr-synthesize` (csr/cli/synthesize.py).

    python data/synthesize.py [--out DIR] [--seed S] [--clips_per_class N] ...
"""

import sys

from csr.cli.synthesize import run

if __name__ == "__main__":
    sys.exit(run())
