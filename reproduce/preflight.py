"""Check that this machine can run the paper's tables, and how long they would take here.

    python reproduce/preflight.py                        # make preflight
    python reproduce/preflight.py --weights=none         # offline: skip fetching the ImageNet weights
    python reproduce/preflight.py --mixed_precision --jit_compile --jobs=4 --runs_per_gpu=2

Takes the flags of run_fold.py (every RunSpec field, the data flags) with the same meaning, plus
--tables, --profile, --jobs and --runs_per_gpu of run_experiment.py, and prints one line per check
(csr.preflight), PASS, FAIL or SKIP, with what to do on a failure: TensorFlow, CUDA, cuDNN and the
GPUs; the backbone's weights; the data sets the tables need; a few real training steps of each
kind with these execution flags (finite losses, peak memory, seconds per step; on a CPU at a
reduced input size); on a GPU, --mix_on=device against host; the hours each table takes here.
Exit status 1 when a check failed, 2 on a mistake on the command line.
"""

from __future__ import annotations

import sys
import time

from absl import flags

from csr import experiments as E
from csr import preflight as P
from csr.cli import UsageError, run_script, spec_flags
from csr.errors import UserError
from csr.jobs import device_slots, visible_gpus
from csr.spec import FIELDS, RunSpec, SpecError

FLAGS = flags.FLAGS
# RunSpec fields that apply to every run of a table (the cells fix the rest), as in run_experiment.py.
OVERRIDES = E.PROFILE_OVERRIDES


def define_flags() -> None:
    """Flags are defined only when run as a script, so tests can import this module."""
    spec_flags.define_spec_flags(FIELDS)
    spec_flags.define_data_flags()
    flags.DEFINE_list("tables", list(E.TABLES), f"Tables to check data for and project: {', '.join(E.TABLES)}.")
    flags.DEFINE_enum("profile", "paper", list(E.PROFILES), "The profile the tables would run with; the "
                      "RunSpec flags given apply over it, as with run_experiment.py.")
    flags.DEFINE_integer("max_folds", None, "Project only the first N folds of each target.")
    flags.DEFINE_integer("jobs", 1, "Runs at a time, as run_experiment.py --jobs.")
    flags.DEFINE_integer("runs_per_gpu", None, "Runs per GPU, as run_experiment.py --runs_per_gpu.")
    flags.DEFINE_integer("steps", 3, "Timed training steps of each kind (one more is run first to trace).")


def report(check: P.Check) -> P.Check:
    lines = check.detail.splitlines() or [""]
    print(f"{check.status}  {check.name}: {lines[0]}".rstrip())
    for line in lines[1:]:
        print(f"      {line}")
    if check.fix:
        print(f"      what to do: {check.fix}")
    sys.stdout.flush()
    return check


def settings():
    """(the measured RunSpec, the profile the tables would run with), from the flags."""
    given = {name: FLAGS[name].value for name in FIELDS if FLAGS[name].present}
    try:
        profile = E.get_profile(FLAGS.profile, FLAGS.max_folds)
        spec = profile.apply(RunSpec()).replace(**given)
        profile = profile.with_overrides(**{k: v for k, v in given.items() if k in OVERRIDES})
    except (SpecError, ValueError) as err:
        raise UsageError(str(err)) from None
    return spec, profile


def data_checks(profile, places) -> tuple[list[P.Check], E.Profile]:
    try:
        profile = E.with_standins(profile, places.roots(), FLAGS.tables)
    except FileNotFoundError as err:
        return [P.Check("data", P.FAIL, str(err), "give the stand-in with --us8k_root, or the full ESC-50")], profile
    specs = [s for table in FLAGS.tables for s in E.runs_for(table, profile)]
    return P.dataset_checks(specs, places, FLAGS.download), profile


def step_checks(spec: RunSpec, on_gpu: bool) -> tuple[list[P.Check], list, float]:
    """The training-steps and mix_on checks, the measured times and their scale to the run's size."""
    import tensorflow as tf

    from csr.preflight import gpu_memory_bytes

    measured_spec, scale = (spec, 1.0) if on_gpu else P.cpu_input(spec)
    measured_spec = measured_spec.replace(weights=None)  # timing needs no weights (checked above)
    try:
        measured = P.measure_steps(measured_spec, FLAGS.steps)
    except (UserError, ValueError, tf.errors.OpError) as err:
        fix = ("the GPU ran out of memory: try --mixed_precision, or fewer runs per GPU"
               if isinstance(err, tf.errors.ResourceExhaustedError) else "the message above names the setting")
        return [P.Check("training steps", P.FAIL, f"{type(err).__name__}: {err}".splitlines()[0], fix)], [], scale
    checks = [P.steps_check(measured, spec, measured_spec, scale, gpu_memory_bytes() if on_gpu else ())]
    try:
        checks.append(P.mix_on_check(spec.replace(weights=None), on_gpu))
    except (UserError, ValueError, tf.errors.OpError) as err:
        checks.append(P.Check("mix_on device = host", P.FAIL, f"{type(err).__name__}: {err}".splitlines()[0],
                              "train with --mix_on=host"))
    return checks, measured, scale


def main(argv):
    del argv
    start = time.monotonic()
    unknown = [t for t in FLAGS.tables if t not in E.TABLES]
    if unknown:
        raise UsageError(f"--tables: unknown {unknown}; choose from {', '.join(E.TABLES)}")
    if FLAGS.jobs < 1 or (FLAGS.runs_per_gpu is not None and FLAGS.runs_per_gpu < 1) or FLAGS.steps < 1:
        raise UsageError("--jobs, --runs_per_gpu and --steps must be at least 1")
    spec, profile = settings()
    places = spec_flags.data_places()
    from csr.distribute import StrategyError, make_strategy

    try:
        make_strategy(spec.strategy)  # before TensorFlow's first op: a multi-worker strategy needs that
    except StrategyError as err:
        raise UsageError(str(err)) from None
    import tensorflow as tf

    gpus = visible_gpus()
    checks = [report(P.tensorflow_check(gpus))]
    on_gpu = bool(tf.config.list_logical_devices("GPU"))
    checks.append(report(P.weights_check(spec.backbone, spec.weights, P.image_shape(spec))))
    found, profile = data_checks(profile, places)
    checks += [report(c) for c in found]
    found, measured, scale = step_checks(spec, on_gpu)
    checks += [report(c) for c in found]
    if measured:
        slots = device_slots(gpus if on_gpu else [], FLAGS.jobs, FLAGS.runs_per_gpu)
        devices = len(set(slots))
        note = (f"{len(slots)} run(s) at a time on {devices} {'GPU(s)' if on_gpu else 'CPU'}"
                + (", runs sharing a device counted at one run's speed" if len(slots) > devices else ""))
        checks.append(report(P.projection_check(FLAGS.tables, profile, measured, scale, devices, note)))
    else:
        checks.append(report(P.Check("projected hours", P.SKIP, "no step times: the training steps failed")))
    failed = sum(c.failed for c in checks)
    counts = ", ".join(f"{sum(c.status == s for c in checks)} {s}" for s in (P.PASS, P.FAIL, P.SKIP))
    print(f"preflight: {counts} in {time.monotonic() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    define_flags()
    run_script(main)
