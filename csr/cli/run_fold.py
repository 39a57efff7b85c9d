"""One run of the paper's experiments: one method, one fold, one label fraction.

    python reproduce/run_fold.py --experiment=table1 --method=proposed --fraction=0.1 --fold=1
    python reproduce/run_fold.py --spec=RUN.spec.json      # a whole RunSpec, as run_experiment.py hands it over

(`csr-run`, `python -m csr.cli.run_fold` and reproduce/run_fold.py are the same command; the
worker processes of run_experiment.py run it.)

Every setting of a run is a flag named like its RunSpec field (csr/spec.py; defaults are the
paper's). Writes results/<experiment>/<run-id>/ (config.json, history.csv, result.json,
checkpoints, tensorboard/). A killed run resumes from its last epoch when started again with the
same flags; a finished run is skipped unless --overwrite.
"""

from __future__ import annotations

import json
import logging

from absl import flags

from csr.cli import run_script, spec_flags
from csr.runio import read_json
from csr.spec import FIELDS, RunSpec, SpecError

FLAGS = flags.FLAGS
spec_flags.define_spec_flags(FIELDS)
spec_flags.define_data_flags()
flags.DEFINE_string("spec", None, "A RunSpec JSON file (what run_experiment.py writes beside each run's log): "
                    "the run's settings come from it instead of the flags named after RunSpec fields.")
flags.DEFINE_string("out_dir", "results", "Where run folders are written.")
flags.DEFINE_bool("overwrite", False, "Delete an existing run folder and run again.")
flags.DEFINE_integer("verbose", 2, "0 silent; 1 Keras' progress bar and one line per epoch; 2 one line per "
                     "epoch (phase, position, training loss and accuracy, test accuracy and loss).")


def spec_from_command_line() -> RunSpec:
    """The run's RunSpec: from --spec FILE, or from the flags named after its fields."""
    if FLAGS.spec is None:
        return spec_flags.spec_from_flags(FIELDS)
    given = [f"--{name}" for name in FIELDS if FLAGS[name].present]
    if given:
        raise SpecError(f"--spec holds every setting of the run; drop {', '.join(given)} or edit {FLAGS.spec}")
    try:
        return RunSpec.from_json(read_json(FLAGS.spec))
    except FileNotFoundError:
        raise SpecError(f"--spec={FLAGS.spec}: no such file") from None
    except ValueError as err:
        raise SpecError(f"--spec={FLAGS.spec}: {err}") from None


def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from csr.distribute import make_strategy
    from csr.runner import execute

    spec = spec_from_command_line()
    make_strategy(spec.strategy)  # before any TensorFlow op: a multi-worker strategy configures the runtime
    places = spec_flags.data_places()
    if FLAGS.download:
        places.ensure([spec])
    result = execute(spec, places, FLAGS.out_dir, overwrite=FLAGS.overwrite, verbose=FLAGS.verbose)
    print(json.dumps({k: result[k] for k in ("method", "best", "last", "epochs") if k in result}))


def run() -> None:
    run_script(main)


if __name__ == "__main__":
    run()
