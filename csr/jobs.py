"""Runs as jobs: one worker process per run, several at a time, each on its own device.

A `Job` is one RunSpec handed to a worker process (`python -m csr.cli.run_fold --spec=FILE`, the
same command reproduce/run_fold.py is): the spec is written to `<run>.spec.json` beside the run
folder and the worker's output appended to `<run>.log`. `run_jobs` runs jobs N at a time on this
machine, each worker given one GPU through CUDA_VISIBLE_DEVICES (or K workers per GPU with
`runs_per_gpu`, sharing its memory), and reports progress as runs finish: one line per run, and
how many are done, failed and left, with the time the rest should take at the pace so far.
csr.ray_jobs runs the same jobs as Ray tasks on a cluster, with the same launch and progress.
"""

from __future__ import annotations

import os
import queue
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from csr import rundir
from csr.runio import atomic_write_json
from csr.sources import DataPlaces
from csr.spec import RunSpec

WORKER_MODULE = "csr.cli.run_fold"


@dataclass(frozen=True)
class Job:
    """One run handed to a worker process: its RunSpec (written to `spec_file`) and command line."""

    spec: RunSpec
    command: tuple
    log: Path
    spec_file: Path

    @property
    def name(self) -> str:
        return f"{self.spec.experiment}/{self.spec.run_id()}"


def worker_command(spec_file, root, places: DataPlaces, python: str = sys.executable) -> list[str]:
    """The worker command that runs the RunSpec in `spec_file` into root."""
    cmd = [python, "-m", WORKER_MODULE, f"--spec={spec_file}", f"--data_root={places.data_root}",
           f"--out_dir={root}", "--nodownload", "--verbose=2"]
    for name in ("esc50_root", "us8k_root", "cache_dir"):
        if getattr(places, name):
            cmd.append(f"--{name}={getattr(places, name)}")
    return cmd


def make_jobs(specs, root, places: DataPlaces, python: str = sys.executable) -> list[Job]:
    jobs = []
    for spec in specs:
        spec_file = rundir.spec_path(root, spec)
        jobs.append(Job(spec, tuple(worker_command(spec_file, root, places, python)),
                        rundir.log_path(root, spec), spec_file))
    return jobs


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


def device_slots(gpus, jobs: int, runs_per_gpu: int | None = None) -> list[str | None]:
    """The device of each concurrent worker: None on a CPU-only machine (`jobs` workers).

    With GPUs: `runs_per_gpu` K gives K workers on every GPU (len(gpus) x K in all, `jobs` unused),
    dealt GPU by GPU so that the first runs spread over all of them; without it, `jobs` workers
    take the GPUs round-robin (shared when jobs > GPUs).
    """
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if runs_per_gpu is not None and runs_per_gpu < 1:
        raise ValueError(f"--runs_per_gpu must be >= 1, got {runs_per_gpu}")
    gpus = list(gpus)
    if not gpus:
        return [None] * jobs
    if runs_per_gpu is not None:
        return [gpu for _ in range(runs_per_gpu) for gpu in gpus]
    return [gpus[i % len(gpus)] for i in range(jobs)]


def job_env(base: dict, gpu: str | None, shared: bool) -> dict:
    """The worker's environment: its GPU, and memory growth when it shares that GPU with other
    runs (TensorFlow otherwise reserves nearly all of a GPU's memory for the first process)."""
    env = dict(base)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
        if shared:
            env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return env


def launch(job: Job, env: dict, die_with_parent: bool = False) -> int:
    """Write the job's spec file, run it, append its output to its log; returns the exit status
    (negative: killed by that signal).

    die_with_parent: the worker is killed when the process that started it dies (Linux), so a
    retried Ray task never finds the killed attempt's worker still writing the run folder.
    """
    atomic_write_json(job.spec_file, job.spec.to_json())
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n=== {stamp} CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '')} "
                  f"{shlex.join(job.command)}\n")
        log.flush()
        return subprocess.run(list(job.command), stdout=log, stderr=subprocess.STDOUT, env=env,
                              preexec_fn=_death_signal() if die_with_parent else None).returncode


def _death_signal():
    """A preexec_fn asking Linux to SIGKILL the child when its parent dies (PR_SET_PDEATHSIG), or
    None elsewhere. Prepared in the parent: between fork and exec the child must not import or
    take a lock that another thread of the parent may have held."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class Progress:
    """One line per finished run and a running count, with the time left at the pace so far."""

    def __init__(self, total: int, echo=print, clock=time.monotonic):
        self.total, self.echo, self.clock = total, echo, clock
        self.start, self.done, self.failed = clock(), 0, 0

    def finished(self, job: Job, status: int, result: dict | None = None) -> None:
        self.done += 1
        self.failed += status != 0
        outcome = "ok" if status == 0 else f"FAILED (exit {status}; see {job.log})"
        if status == 0 and result and "best" in result:
            outcome += f": best {100 * result['best']:.1f}%, last {100 * result['last']:.1f}%"
        self.echo(f"{job.name} {outcome}")
        self.echo(self.line())

    def line(self) -> str:
        elapsed = self.clock() - self.start
        left = self.total - self.done
        eta = f", about {_duration(elapsed / self.done * left)} left" if self.done and left else ""
        return (f"[{self.done}/{self.total} runs done, {self.failed} failed, {_duration(elapsed)} "
                f"elapsed{eta}]")


def _duration(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def run_jobs(jobs: list[Job], workers: int, gpus, launcher=launch, base_env=None, echo=print,
             root=None, runs_per_gpu: int | None = None) -> list[tuple[Job, int]]:
    """Run jobs `workers` at a time (or `runs_per_gpu` per GPU), each with one device slot; return
    the failed (job, status).

    With `root`, a finished run's result.json is read for its one-line summary.
    """
    devices = device_slots(gpus, workers, runs_per_gpu)
    slots = queue.Queue()
    for slot in devices:
        slots.put(slot)
    shared = len(set(devices)) < len(devices) and None not in devices
    base_env = dict(os.environ if base_env is None else base_env)
    progress = Progress(len(jobs), echo)

    def work(job: Job) -> int:
        gpu = slots.get()
        try:
            return launcher(job, job_env(base_env, gpu, shared))
        finally:
            slots.put(gpu)

    failures = []
    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        futures = {pool.submit(work, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                status = future.result()
            except Exception as err:  # noqa: BLE001 - could not even start: report and go on
                echo(f"{job.log}: could not start: {err}")
                status = -1
            progress.finished(job, status, read_result(root, job) if root is not None and status == 0 else None)
            if status != 0:
                failures.append((job, status))
    return failures


def read_result(root, job: Job) -> dict | None:
    """The run's result.json, or None when it has none (yet) or it cannot be read."""
    from csr.runio import read_json

    path = rundir.path(root, job.spec) / rundir.RESULT
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None
