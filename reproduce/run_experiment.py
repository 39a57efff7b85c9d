"""Run every missing run of a table of the paper, N at a time, then write the tables.

    python reproduce/run_experiment.py --table=table1 --profile=paper --jobs=2
    python reproduce/run_experiment.py --table=table1 --profile=quick \
        --esc50_root=../shared/data/esc10 --us8k_root=data/datasets/synthetic/us8k

Each run is a subprocess of reproduce/run_fold.py, its output appended to <run_dir>.log. Runs with a
result.json are skipped, so the command is resumable (an interrupted run resumes from its last
epoch) and idempotent. With several GPUs each job gets one through CUDA_VISIBLE_DEVICES. A failed
run does not stop the others; failures are listed at the end and the exit status is 1. Datasets are
fetched once, before any job starts, so parallel jobs never download the same archive.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from absl import app, flags, logging

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from csr import experiments as E  # noqa: E402
from csr import sources  # noqa: E402
from csr.runio import read_json  # noqa: E402
from csr.runner import EXECUTION_OPTIONS, RunSpec  # noqa: E402

_SPEC_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunSpec)}

RUN_FOLD = REPO / "reproduce" / "run_fold.py"
MAKE_TABLES = REPO / "reproduce" / "make_tables.py"
CHOICES = E.TABLES + (E.FIGURE,)
MODEL_KWARG_FLAGS = ("n_mels", "hop_length", "bn_momentum")
FLAGS = flags.FLAGS


def define_flags() -> None:
    """Flags are defined only when run as a script, so tests can import this module."""
    from shared_flags import define_data_flags, define_execution_flags  # reproduce/ is sys.path[0]

    define_data_flags()
    flags.DEFINE_list("table", None, f"One or more of {', '.join(CHOICES)}.")
    flags.DEFINE_enum("profile", "paper", list(E.PROFILES),
                      "paper: ResNet50V2/ImageNet/paper epochs; quick: small CPU check, not comparable.")
    flags.DEFINE_integer("jobs", 1, "Runs at a time (one GPU each when there are enough GPUs).")
    flags.DEFINE_string("out_dir", "results", "Results folder (the quick profile writes <out_dir>/quick).")
    flags.DEFINE_integer("max_folds", None, "Run only the first N folds of each target.")
    flags.DEFINE_integer("seed", None, "Seed of every run (default: the profile's, 0).")
    flags.DEFINE_bool("dry_run", False, "Print the plan and the commands, run nothing.")
    define_execution_flags()
    flags.DEFINE_bool("write_tables", True, "Write the tables and REPORT.md at the end.")
    flags.mark_flag_as_required("table")


@dataclass(frozen=True)
class DataArgs:
    """The data flags passed through to every run_fold.py subprocess."""

    data_root: str = "data/datasets"
    esc50_root: str | None = None
    us8k_root: str | None = None
    cache_dir: str | None = None

    def roots(self) -> sources.DataRoots:
        return sources.DataRoots.under(self.data_root, self.esc50_root, self.us8k_root)


@dataclass(frozen=True)
class Job:
    spec: RunSpec
    command: tuple
    log: Path


def plan(tables, profile: E.Profile, root) -> tuple[list[RunSpec], list[RunSpec]]:
    """(every run the tables need, the ones without result.json under root), deduplicated."""
    specs = {}
    for table in tables:
        for spec in E.runs_for(table, profile):
            specs.setdefault(spec, None)
    specs = list(specs)
    return specs, E.missing_runs(specs, root)


def run_fold_command(spec: RunSpec, root, data: DataArgs, python: str = sys.executable) -> list[str]:
    """The run_fold.py command line that reproduces `spec` (and so writes its run directory)."""
    cmd = [python, str(RUN_FOLD), f"--experiment={spec.experiment}", f"--method={spec.method}",
           f"--target={spec.target}", f"--unlabeled={spec.unlabeled}", f"--fraction={spec.fraction!r}",
           f"--fold={spec.fold}", f"--seed={spec.seed}", f"--backbone={spec.backbone}",
           f"--weights={spec.weights if spec.weights is not None else 'none'}",
           f"--data_root={data.data_root}", f"--out_dir={root}", "--nodownload", "--verbose=2"]
    for name in ("esc50_root", "us8k_root", "cache_dir"):
        if getattr(data, name):
            cmd.append(f"--{name}={getattr(data, name)}")
    for name in ("warmup_epochs", "joint_epochs", "supervised_epochs", "warmup_lr", "joint_lr",
                 "supervised_lr"):
        if getattr(spec, name) is not None:
            cmd.append(f"--{name}={getattr(spec, name)}")
    for name in EXECUTION_OPTIONS:  # how to run, not what: not part of the run id
        value = getattr(spec, name)
        if value != _SPEC_DEFAULTS[name]:
            cmd.append(f"--{name}" if value is True else f"--{name}={value}")
    for key, value in spec.model_kwargs:
        if key not in MODEL_KWARG_FLAGS:
            raise ValueError(f"run_fold.py has no flag for model setting {key!r} "
                             f"(it accepts {', '.join(MODEL_KWARG_FLAGS)})")
        cmd.append(f"--{key}={value}")
    return cmd


def make_jobs(specs, root, data: DataArgs, python: str = sys.executable) -> list[Job]:
    return [Job(s, tuple(run_fold_command(s, root, data, python)),
                E.run_dir(root, s).with_name(s.run_id() + ".log")) for s in specs]


def visible_gpus(env=None, runner=subprocess.run) -> list[str]:
    """GPU ids a job may be given: CUDA_VISIBLE_DEVICES if set, else those `nvidia-smi -L` lists."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
        return [] if ids in ([], ["-1"]) else ids
    try:
        out = runner(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.stdout.splitlines() if ln.startswith("GPU "))]


def gpu_slots(gpus, jobs: int) -> list[str | None]:
    """One device per worker: GPUs dealt round-robin (shared when jobs > GPUs), None on CPU."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    return [gpus[i % len(gpus)] if gpus else None for i in range(jobs)]


def job_env(base: dict, gpu: str | None, shared: bool) -> dict:
    env = dict(base)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
        if shared:  # several jobs on one GPU: TensorFlow must not take all its memory
            env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return env


def launch(job: Job, env: dict) -> int:
    """Run one job, appending its output to its log; returns the exit status."""
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n=== {stamp} CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '')} "
                  f"{shlex.join(job.command)}\n")
        log.flush()
        return subprocess.run(list(job.command), stdout=log, stderr=subprocess.STDOUT,
                              env=env).returncode


def run_jobs(jobs: list[Job], workers: int, gpus, launcher=launch, base_env=None,
             echo=print) -> list[tuple[Job, int]]:
    """Run jobs `workers` at a time, each with one device slot; return the failed (job, status)."""
    slots = queue.Queue()
    for slot in gpu_slots(list(gpus), workers):
        slots.put(slot)
    shared = bool(gpus) and workers > len(gpus)
    base_env = dict(os.environ if base_env is None else base_env)

    def work(job: Job) -> int:
        gpu = slots.get()
        try:
            return launcher(job, job_env(base_env, gpu, shared))
        finally:
            slots.put(gpu)

    failures = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(work, job): job for job in jobs}
        start = time.time()
        for done, future in enumerate(as_completed(futures), 1):
            job = futures[future]
            try:
                status = future.result()
            except Exception as err:  # could not even start: report and go on
                echo(f"{job.log}: could not start: {err}")
                status = -1
            name = f"{job.spec.experiment}/{job.spec.run_id()}"
            echo(f"[{done}/{len(jobs)}] {'ok' if status == 0 else f'FAILED ({status})'} {name} "
                 f"({(time.time() - start) / 60:.1f} min elapsed)")
            if status != 0:
                failures.append((job, status))
    return failures


def ensure_data(specs, data: DataArgs, download: bool) -> None:
    """Fetch the datasets the runs need (once, before parallel jobs), unless a root is given."""
    if not download:
        return
    from csr.download import ensure_dataset

    needed = set()
    for spec in specs:
        needed |= sources.needed_datasets(spec.target, spec.unlabeled)
    overrides = {"esc50": data.esc50_root, "us8k": data.us8k_root}
    for name in sorted(needed):
        if not overrides[name]:
            ensure_dataset(name, data.data_root)


def main(argv):
    del argv
    unknown = [t for t in FLAGS.table if t not in CHOICES]
    if unknown:
        raise app.UsageError(f"--table: unknown {unknown}; choose from {', '.join(CHOICES)}")
    profile = E.get_profile(FLAGS.profile, FLAGS.max_folds, FLAGS.seed)
    root = E.result_root(FLAGS.out_dir, profile)
    data = DataArgs(FLAGS.data_root, FLAGS.esc50_root, FLAGS.us8k_root, FLAGS.cache_dir)

    specs, _ = plan(FLAGS.table, profile, root)
    if not FLAGS.dry_run:
        ensure_data(specs, data, FLAGS.download)
    try:
        profile = E.with_standins(profile, data.roots(), FLAGS.table)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    specs, missing = plan(FLAGS.table, profile, root)
    print(f"{', '.join(FLAGS.table)} ({profile.name}): {len(specs)} runs, "
          f"{len(specs) - len(missing)} finished, {len(missing)} to run, under {root}")
    for note in profile.notes:
        print(f"note: {note}")
    execution = {name: getattr(FLAGS, name) for name in EXECUTION_OPTIONS}
    jobs = make_jobs([dataclasses.replace(s, **execution) for s in missing], root, data)
    if FLAGS.dry_run:
        for job in jobs:
            print(shlex.join(job.command))
        return 0

    root.mkdir(parents=True, exist_ok=True)
    path = root / E.PROFILE_FILE
    if path.exists():
        previous = E.Profile.from_json(read_json(path))
        if previous != profile:
            logging.warning("%s: the profile changed (%s -> %s); the tables will use the new one",
                            path, previous, profile)
    E.save_profile(root, profile)
    gpus = visible_gpus()
    print(f"devices: {', '.join('GPU ' + g for g in gpus) if gpus else 'CPU only'}; {FLAGS.jobs} job(s)")
    failures = run_jobs(jobs, FLAGS.jobs, gpus)

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
    app.run(main)
