"""`make demo`: the whole method on the project's own synthetic data, on a CPU, in minutes.

    python reproduce/demo.py [--data_dir data/synthetic] [--out_dir results] [--fold 1]

Writes (once) a 10-class synthetic set in ESC-50's layout and a differently-classed set in
UrbanSound8K's layout, then trains on one fold: the supervised baseline (random init) and the
proposed method (warm-up, then joint training with the synthetic UrbanSound8K-like clips as
cross-domain unlabeled data), and prints their best / last test accuracy beside chance.

Demo settings, not the paper's: a small CNN instead of ResNet50V2, a coarser log-mel (64 bins,
hop 920: 64 x 120 instead of 128 x 480), fewer epochs and learning rates raised to match, and
BatchNorm momentum 0.9 so that its moving statistics keep up with so few steps.
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import flags

from csr import experiments as E
from csr import figures, rundir
from csr.cli import run_script
from csr.runner import execute
from csr.sources import DataPlaces
from csr.spec import RunSpec

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "data/synthetic", "Where the synthetic data sets are (written if absent).")
flags.DEFINE_string("out_dir", "results", "Run folders go to <out_dir>/demo/.")
flags.DEFINE_integer("fold", 1, "Held-out fold (1-5).")
flags.DEFINE_integer("seed", 0, "Seed for the data and the runs.")
flags.DEFINE_integer("verbose", 2, "0 silent, 1 Keras' progress bar too, 2 one line per epoch.")

DEMO_METHODS = {"supervised": "none", "proposed": "us8k"}  # method -> its unlabeled data


def demo_specs(fold: int, seed: int) -> list[RunSpec]:
    """The supervised baseline and the proposed method on ESC-10's layout, the demo profile's way."""
    profile = E.PROFILES["demo"]
    return [profile.apply(RunSpec(experiment="demo", method=method, target="esc10", unlabeled=unlabeled,
                                  fold=fold, seed=seed))
            for method, unlabeled in DEMO_METHODS.items()]


def main(argv):
    del argv
    from csr.synthesize import synthesize

    data = Path(FLAGS.data_dir)
    if not (data / "esc" / "meta" / "esc50.csv").exists() or not (data / "us8k" / "metadata").exists():
        print(f"writing the synthetic data sets to {data} ...")
        synthesize(data, seed=FLAGS.seed)
    places = DataPlaces(esc50_root=str(data / "esc"), us8k_root=str(data / "us8k"), cache_dir=str(data / "cache"))
    rows, runs = [], {}
    for spec in demo_specs(FLAGS.fold, FLAGS.seed):
        start = time.time()
        print(f"\n=== {spec.method}: {spec.run_id()} ===")
        result = execute(spec, places, FLAGS.out_dir, verbose=FLAGS.verbose)
        rows.append((spec.method, result, time.time() - start))
        runs[spec.method] = rundir.path(FLAGS.out_dir, spec)
    classes = result["data"]["classes"]
    print(f"\nDemo on synthetic data, fold {FLAGS.fold} (chance {100 / classes:.1f}%):")
    print("| method | best test acc. (%) | last-20 mean (%) | minutes |")
    print("|---|---|---|---|")
    for method, res, seconds in rows:
        print(f"| {method} | {100 * res['best']:.1f} | {100 * res['last']:.1f} | {seconds / 60:.1f} |")
    curves = figures.run_curves(runs, Path(FLAGS.out_dir) / "demo" / "learning_curves.png",
                                f"Demo: learning curves on synthetic data, fold {FLAGS.fold}")
    print(f"\nRun folders: {Path(FLAGS.out_dir) / 'demo'}")
    print(f"Learning curves (train dashed, test solid, dotted: warm-up ends): {curves}")


if __name__ == "__main__":
    run_script(main)
