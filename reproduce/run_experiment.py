"""Run every missing run of a table of the paper, N at a time, then write the tables.

    python reproduce/run_experiment.py --table=table1 --profile=paper --jobs=2
    python reproduce/run_experiment.py --table=table1 --profile=quick \
        --esc50_root=ESC10_ONLY_FOLDER --us8k_root=data/datasets/synthetic/us8k

Each run is a subprocess of reproduce/run_fold.py, handed its whole RunSpec as <run_dir>.spec.json
(run_fold.py --spec), its output appended to <run_dir>.log. Any RunSpec setting given as a flag
(e.g. --joint_epochs=50, --mixed_precision) applies to every run, over the profile's. Runs with a
result.json are skipped, so the command is resumable (an interrupted run resumes from its last
epoch) and idempotent. With several GPUs each job gets one through CUDA_VISIBLE_DEVICES. A failed
run does not stop the others; failures are listed at the end and the exit status is 1. Datasets are
fetched once, before any job starts, so parallel jobs never download the same archive.
--runs_per_gpu=K puts K runs on each GPU; --executor=ray runs them as Ray tasks on a cluster
(csr.ray_jobs), retried when a node dies; the tables are written the same way at the end.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from absl import flags, logging

from csr import experiments as E
from csr import rundir
from csr.cli import UsageError, run_script, spec_flags
from csr.jobs import device_slots, make_jobs, run_jobs, visible_gpus
from csr.ray_jobs import cluster_jobs, import_ray, run_jobs_on_ray
from csr.runio import read_json
from csr.runner import check_runs
from csr.sources import DataPlaces
from csr.spec import RunSpec, SpecError

REPO = Path(__file__).resolve().parents[1]
MAKE_TABLES = REPO / "reproduce" / "make_tables.py"
CHOICES = E.TABLES + (E.FIGURE,)
# RunSpec fields a user may set for every run of the tables (the cells fix the rest).
OVERRIDES = E.PROFILE_OVERRIDES
FLAGS = flags.FLAGS


def define_flags() -> None:
    """Flags are defined only when run as a script, so tests can import this module."""
    spec_flags.define_data_flags()
    flags.DEFINE_list("table", None, f"One or more of {', '.join(CHOICES)}.")
    flags.DEFINE_enum("profile", "paper", list(E.PROFILES),
                      "paper: ResNet50V2/ImageNet/paper epochs; quick: small CPU check, not comparable.")
    flags.DEFINE_integer("jobs", 1, "Runs at a time (one GPU each when there are enough GPUs).")
    flags.DEFINE_integer("runs_per_gpu", None, "K concurrent runs on each visible GPU, sharing its memory "
                         "(TF_FORCE_GPU_ALLOW_GROWTH); replaces --jobs when GPUs are visible. With --executor=ray "
                         "each run asks for 1/K GPU. Choose K from reproduce/preflight.py's peak memory per run.")
    flags.DEFINE_enum("executor", "local", ["local", "ray"], "local: worker processes on this machine; ray: one "
                      "Ray task per run on the cluster at --ray_address (pip install -e \".[cluster]\"); --out_dir "
                      "and the data must then be on storage every node sees.")
    flags.DEFINE_string("ray_address", None, "--executor=ray: the cluster's address (default: $RAY_ADDRESS, else a "
                        "Ray started on this machine for the command).")
    flags.DEFINE_integer("max_retries", 3, "--executor=ray: how often a run whose node died or whose worker was "
                         "killed is started again (it resumes from its last checkpoint).")
    flags.DEFINE_string("out_dir", "results", "Results folder (the quick profile writes <out_dir>/quick).")
    flags.DEFINE_integer("max_folds", None, "Run only the first N folds of each target.")
    flags.DEFINE_list("seeds", ["0"], "Run every cell once per fold and seed; the tables then show mean ± std over "
                      "folds x seeds and REPORT.md paired differences with confidence intervals.")
    flags.DEFINE_bool("dry_run", False, "Print the plan and the commands, run nothing.")
    flags.DEFINE_bool("write_tables", True, "Write the tables and REPORT.md at the end.")
    flags.DEFINE_bool("rerun_stale", False, "Delete and run again the finished runs whose data changed since "
                      "they were trained (without it, such runs stop the command).")
    spec_flags.define_spec_flags(OVERRIDES, with_defaults=False)
    flags.mark_flag_as_required("table")


def plan(tables, profile: E.Profile, root) -> tuple[list[RunSpec], list[RunSpec]]:
    """(every run the tables need, the ones without result.json under root), deduplicated."""
    specs = {}
    for table in tables:
        for spec in E.runs_for(table, profile):
            specs.setdefault(spec, None)
    specs = list(specs)
    return specs, E.missing_runs(specs, root)


def _check_finished(specs, missing, places: DataPlaces, root) -> list[RunSpec]:
    """Adopt run folders written before run ids were unique, and refuse (or, with --rerun_stale,
    queue again) finished runs trained on other data than the data now given."""
    from csr.runner import stale_runs

    for spec in specs:
        rundir.adopt_legacy(root, spec)
    missing = E.missing_runs(specs, root)
    stale = stale_runs([s for s in specs if s not in missing], places, root)
    if stale and not FLAGS.rerun_stale:
        lines = "\n".join(f"  {rundir.path(root, s)}: {why}" for s, why in stale)
        raise UsageError(f"{len(stale)} finished run(s) used other data than the data given now; pass "
                         f"--rerun_stale to run them again, or point the data flags at the data they used:\n{lines}")
    for spec, why in stale:
        print(f"rerunning {rundir.path(root, spec)} ({why})")
        shutil.rmtree(rundir.path(root, spec))
    return missing + [s for s, _ in stale]


def main(argv):
    del argv
    unknown = [t for t in FLAGS.table if t not in CHOICES]
    if unknown:
        raise UsageError(f"--table: unknown {unknown}; choose from {', '.join(CHOICES)}")
    if FLAGS.jobs < 1 or (FLAGS.runs_per_gpu is not None and FLAGS.runs_per_gpu < 1):
        raise UsageError("--jobs and --runs_per_gpu must be at least 1")
    if FLAGS.executor == "ray":
        import_ray()  # before any download or plan: without Ray, say how to install it
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise UsageError(f"--seeds={','.join(FLAGS.seeds)}: give whole numbers, e.g. --seeds=0,1,2") from None
    try:
        profile = E.get_profile(FLAGS.profile, FLAGS.max_folds, seeds)
        profile = profile.with_overrides(**spec_flags.spec_values(OVERRIDES, given_only=True))
    except (SpecError, ValueError) as err:
        raise UsageError(str(err)) from None
    root = E.result_root(FLAGS.out_dir, profile)
    places = spec_flags.data_places()

    specs, _ = plan(FLAGS.table, profile, root)
    if FLAGS.download and not FLAGS.dry_run:
        places.ensure(specs)
    try:
        profile = E.with_standins(profile, places.roots(), FLAGS.table)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    specs, missing = plan(FLAGS.table, profile, root)
    if not FLAGS.dry_run:
        missing = _check_finished(specs, missing, places, root)
        check_runs(missing, places)
    print(f"{', '.join(FLAGS.table)} ({profile.name}): {len(specs)} runs, "
          f"{len(specs) - len(missing)} finished, {len(missing)} to run, under {root}")
    for note in profile.notes:
        print(f"note: {note}")
    jobs = cluster_jobs(missing, root, places) if FLAGS.executor == "ray" else make_jobs(missing, root, places)
    if FLAGS.dry_run:
        for job in jobs:
            print(shlex.join(job.command), "#", job.spec.run_id())
        return 0

    root.mkdir(parents=True, exist_ok=True)
    path = root / E.PROFILE_FILE
    if path.exists():
        previous = E.Profile.from_json(read_json(path))
        if previous != profile:
            logging.warning("%s: the profile changed (%s -> %s); the tables will use the new one",
                            path, previous, profile)
    E.save_profile(root, profile)
    if FLAGS.executor == "ray":
        failures = run_jobs_on_ray(jobs, runs_per_gpu=FLAGS.runs_per_gpu or 1, address=FLAGS.ray_address,
                                   max_retries=FLAGS.max_retries, root=root)
    else:
        gpus = visible_gpus()
        at_once = len(device_slots(gpus, FLAGS.jobs, FLAGS.runs_per_gpu))
        print(f"devices: {', '.join('GPU ' + g for g in gpus) if gpus else 'CPU only'}; {at_once} run(s) at a time")
        failures = run_jobs(jobs, FLAGS.jobs, gpus, root=root, runs_per_gpu=FLAGS.runs_per_gpu)

    status = 0
    if FLAGS.write_tables:
        tables_status = subprocess.run([sys.executable, str(MAKE_TABLES), f"--results={FLAGS.out_dir}",
                                        f"--profile={profile.name}",
                                        f"--tables={','.join(FLAGS.table)}"]).returncode
        if tables_status != 0:
            print(f"writing the tables failed (exit {tables_status})")
            status = 1
    if failures:
        print(f"\n{len(failures)} of {len(jobs)} run(s) failed; see their logs:")
        for job, code in failures:
            print(f"  exit {code}: {job.log}")
        status = 1
    return status


if __name__ == "__main__":
    define_flags()
    run_script(main)
