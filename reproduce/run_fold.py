"""One run of the paper's experiments: `csr-run` (csr/cli/run_fold.py), kept here for the README's commands.

    python reproduce/run_fold.py --experiment=table1 --method=proposed --fraction=0.1 --fold=1
"""

from csr.cli.run_fold import run

if __name__ == "__main__":
    run()
