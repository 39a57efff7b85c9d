"""One run of the paper's experiments: one method, one fold, one label fraction.

    python reproduce/run_fold.py --experiment=table1 --method=proposed --fraction=0.1 --fold=1

Writes results/<experiment>/<run-id>/ (config.json, history.csv, result.json, checkpoints,
tensorboard/). A killed run resumes from its last epoch when started again with the same flags; a
finished run is skipped unless --overwrite.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from csr import sources  # noqa: E402
from csr.runner import RunSpec, execute  # noqa: E402
from shared_flags import define_data_flags, define_execution_flags  # noqa: E402

EXPERIMENTS = ("table1", "table2", "ablation", "custom", "demo")
METHODS = ("supervised", "supervised_imagenet", "proposed", "no_mixing", "no_unlabeled")

FLAGS = flags.FLAGS
flags.DEFINE_enum("experiment", "custom", EXPERIMENTS, "Which experiment the run belongs to (output subfolder).")
flags.DEFINE_enum("method", "proposed", METHODS,
                  "supervised (random init), supervised_imagenet, proposed, no_mixing (-Mixing), "
                  "no_unlabeled (-Unlabeled).")
flags.DEFINE_string("target", "esc10", "Labeled data: esc10, esc50, us8k, or a CSV of path,label[,fold].")
flags.DEFINE_string("unlabeled", "esc40", "Unlabeled data: esc40, esc50, us8k, none, or a folder of audio.")
flags.DEFINE_float("fraction", 1.0, "Fraction of each class's training clips that keep their label.")
flags.DEFINE_integer("fold", 1, "Held-out test fold (ESC: 1-5, UrbanSound8K: 1-10).")
flags.DEFINE_integer("seed", 0, "Seed for the label fraction, initialisation, batches and augmentation.")
define_data_flags()
flags.DEFINE_string("out_dir", "results", "Where run folders are written.")
flags.DEFINE_integer("warmup_epochs", None, "Override warm-up epochs (paper: 20 for ESC, 10 for US8K).")
flags.DEFINE_integer("joint_epochs", None, "Override joint-training epochs (paper: 100).")
flags.DEFINE_integer("supervised_epochs", None, "Override supervised-baseline epochs (paper: 200).")
flags.DEFINE_float("warmup_lr", None, "Override the warm-up Adam learning rate (paper: 1e-4).")
flags.DEFINE_float("joint_lr", None, "Override the joint-training Adam learning rate (paper: 1e-5).")
flags.DEFINE_float("supervised_lr", None, "Override the baselines' Adam learning rate (paper: 1e-4).")
flags.DEFINE_enum("backbone", "resnet50v2", ["resnet50v2", "small"], "Feature extractor f.")
flags.DEFINE_string("weights", "imagenet", "Backbone init for non-random methods: imagenet, none, or a local .h5 path.")
flags.DEFINE_integer("n_mels", None, "Override mel bins (paper: 128); for quick CPU runs.")
flags.DEFINE_integer("hop_length", None, "Override STFT hop (paper: 230); for quick CPU runs.")
flags.DEFINE_float("bn_momentum", None, "BatchNorm moving-average momentum (default: Keras' 0.99).")
define_execution_flags()
flags.DEFINE_bool("overwrite", False, "Delete an existing run folder and run again.")
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")


def spec_from_flags() -> RunSpec:
    model_kwargs = {k: v for k, v in (("n_mels", FLAGS.n_mels), ("hop_length", FLAGS.hop_length),
                                      ("bn_momentum", FLAGS.bn_momentum)) if v is not None}
    weights = None if FLAGS.weights.lower() == "none" else FLAGS.weights
    return RunSpec(
        experiment=FLAGS.experiment, method=FLAGS.method, target=FLAGS.target,
        unlabeled=FLAGS.unlabeled, fraction=FLAGS.fraction, fold=FLAGS.fold, seed=FLAGS.seed,
        backbone=FLAGS.backbone, weights=weights, warmup_epochs=FLAGS.warmup_epochs,
        joint_epochs=FLAGS.joint_epochs, supervised_epochs=FLAGS.supervised_epochs,
        warmup_lr=FLAGS.warmup_lr, joint_lr=FLAGS.joint_lr, supervised_lr=FLAGS.supervised_lr,
        model_kwargs=tuple(sorted(model_kwargs.items())),
        strategy=FLAGS.strategy, mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
        sync_bn=FLAGS.sync_bn, local_negatives=FLAGS.local_negatives, single_pass=FLAGS.single_pass,
        mix_on=FLAGS.mix_on)


def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    spec = spec_from_flags()
    from csr.distribute import StrategyError, make_strategy

    try:  # before any TensorFlow op: a multi-worker strategy must configure the runtime first
        make_strategy(spec.strategy)
    except StrategyError as err:
        raise app.UsageError(str(err))
    try:
        sources.check_combination(spec.method, spec.target, spec.unlabeled)
    except ValueError as err:
        raise app.UsageError(str(err))
    roots = sources.DataRoots.under(FLAGS.data_root, FLAGS.esc50_root, FLAGS.us8k_root)
    if FLAGS.download:
        from csr.download import ensure_dataset

        overrides = {"esc50": FLAGS.esc50_root, "us8k": FLAGS.us8k_root}
        for name in sorted(sources.needed_datasets(spec.target, spec.unlabeled)):
            if not overrides[name]:
                ensure_dataset(name, FLAGS.data_root)
    cache_dir = FLAGS.cache_dir or str(Path(FLAGS.data_root) / "cache")
    result = execute(spec, roots, FLAGS.out_dir, cache_dir, overwrite=FLAGS.overwrite, verbose=FLAGS.verbose)
    print(json.dumps({k: result[k] for k in ("method", "best", "last", "epochs") if k in result}))


if __name__ == "__main__":
    app.run(main)
