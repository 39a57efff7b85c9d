"""The tables on a Ray cluster: every missing run as a Ray task, many GPU machines at once.

Each task runs the same worker command as the local executor (csr.jobs.launch: the RunSpec written
to its spec file, `python -m csr.cli.run_fold --spec=FILE ...` started, its output appended to the
run's log), so a run computes the same thing wherever it runs. What Ray adds:

  - placement: a task asks for 1/K of a GPU (`runs_per_gpu` K; none on a CPU-only cluster) and one
    CPU, and Ray starts it on a node with that much free, setting CUDA_VISIBLE_DEVICES for it;
    runs sharing a GPU get TensorFlow's memory growth so that they fit side by side;
  - retries: a task whose node dies, or whose worker is killed by a signal (the OOM killer, a
    preempted machine), is started again, up to `max_retries` times, and the worker resumes the run
    from its last checkpoint (csr.train). A worker that exits with a status is not retried: that
    is a failure to read in the run's log, as with the local executor.

Every node must see the same paths: `out_dir` (run folders, logs, checkpoints), the data and the
waveform cache on shared storage, and csr installed in the Python that runs Ray there (the task
starts the worker with that Python). The jobs are therefore made with absolute paths
(`cluster_jobs`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path

from csr import jobs as J
from csr.errors import UserError
from csr.sources import DataPlaces

log = logging.getLogger(__name__)

INSTALL = 'pip install -e ".[cluster]"'


class RayUnavailable(UserError, ImportError):
    """--executor=ray without Ray installed."""


class RunKilled(RuntimeError):
    """The worker of a run was killed by a signal: Ray retries the task, which resumes the run."""


def import_ray():
    """The ray module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--executor=ray needs Ray, which is not installed; install it with "
                             f"`{INSTALL}` (the cluster extra), or use the local executor") from None
    return ray


def cluster_jobs(specs, root, places: DataPlaces) -> list[J.Job]:
    """The jobs of `specs` with every path absolute: a task runs in Ray's working folder on
    another machine, where a relative results or data folder would name something else."""
    absolute = {k: str(Path(v).resolve()) if v else v for k, v in places.to_json().items()}
    return J.make_jobs(specs, Path(root).resolve(), DataPlaces(**absolute))


def task_resources(cluster_gpus: float, runs_per_gpu: int) -> dict:
    """Ray resources of one run: 1/K of a GPU when the cluster has GPUs, else none; one CPU."""
    if runs_per_gpu < 1:
        raise ValueError(f"--runs_per_gpu must be >= 1, got {runs_per_gpu}")
    return {"num_cpus": 1, "num_gpus": 1.0 / runs_per_gpu if cluster_gpus > 0 else 0}


def run_task(job: J.Job, share_gpu: bool) -> int:
    """Body of a Ray task, run on a node: the job's worker with this node's Python; its status.

    Ray sets CUDA_VISIBLE_DEVICES of the task's process to the GPU it was given; the worker inherits
    it. The worker dies with this process (a task whose process dies is retried, and two attempts
    must never write one run folder at once).
    """
    env = J.job_env(dict(os.environ), os.environ.get("CUDA_VISIBLE_DEVICES") or None, share_gpu)
    here = dataclasses.replace(job, command=(sys.executable, *job.command[1:]))
    status = J.launch(here, env, die_with_parent=True)
    if status < 0:
        raise RunKilled(f"{job.name}: worker killed by signal {-status}; retrying resumes it from its checkpoint")
    return status


def run_jobs_on_ray(jobs: list[J.Job], *, runs_per_gpu: int = 1, address: str | None = None,
                    max_retries: int = 3, echo=print, root=None) -> list[tuple[J.Job, int]]:
    """Run every job as a Ray task on the cluster at `address` (None: RAY_ADDRESS, or a Ray started
    on this machine for the call); return the failed (job, status) as csr.jobs.run_jobs does.

    Progress is reported as runs finish, in csr.jobs.Progress's lines.
    """
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0)
        per_run = task_resources(gpus, runs_per_gpu)
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        echo(f"Ray cluster: {nodes} node(s), {resources.get('CPU', 0):g} CPUs, {gpus:g} GPUs; each run takes "
             f"{per_run['num_gpus']:g} GPU and {per_run['num_cpus']} CPU; {len(jobs)} run(s) submitted")
        task = ray.remote(run_task).options(**per_run, max_retries=max_retries, retry_exceptions=[RunKilled])
        share = per_run["num_gpus"] < 1 and gpus > 0
        pending = {task.remote(job, share): job for job in jobs}
        progress = J.Progress(len(jobs), echo)
        failures = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                status = _status(ray, ref, job, echo)
                progress.finished(job, status, J.read_result(root, job) if root is not None and status == 0 else None)
                if status != 0:
                    failures.append((job, status))
        return failures
    finally:
        if started_here:
            ray.shutdown()


def _status(ray, ref, job: J.Job, echo) -> int:
    """The worker's exit status, or -1 when the task itself failed on its last attempt (its worker
    killed every time, its node lost) after saying why."""
    try:
        return int(ray.get(ref))
    except ray.exceptions.RayTaskError as err:  # run_task raised: RunKilled on every attempt
        cause = getattr(err, "cause", None) or err
        echo(f"{job.name}: {str(cause).splitlines()[0]} (no retries left)")
    except ray.exceptions.RayError as err:  # the task's process or node died, no retries left
        echo(f"{job.name}: Ray lost the task ({type(err).__name__}: {str(err).splitlines()[0]})")
    return -1
