"""csr.jobs' device placement (several runs per GPU) and what csr.ray_jobs does without a cluster:
the task body, its resources, portable commands, and the one-line error when Ray is missing."""

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from csr import experiments as E
from csr import jobs as J
from csr import ray_jobs as R
from csr.sources import DataPlaces

REPO = Path(__file__).resolve().parents[1]


def _jobs(tmp_path, count):
    return J.make_jobs(E.runs_for("table1", "quick")[:count], tmp_path, DataPlaces())


def test_device_slots():
    assert J.device_slots(["0", "1"], 1, runs_per_gpu=3) == ["0", "1", "0", "1", "0", "1"]
    assert J.device_slots(["0", "1"], 3) == ["0", "1", "0"]  # without runs_per_gpu: --jobs, round-robin
    assert J.device_slots([], 2, runs_per_gpu=4) == [None, None]  # CPU only: --jobs decides
    for bad in (dict(jobs=0), dict(jobs=1, runs_per_gpu=0)):
        with pytest.raises(ValueError):
            J.device_slots(["0"], **bad)


@pytest.mark.parametrize("per_gpu", [1, 2, 3])
def test_runs_per_gpu_runs_k_at_once_on_each_gpu(tmp_path, per_gpu):
    """Fake GPUs 0 and 1: the launcher holds every job until 2 x K run at once (a barrier), and
    records how many run on each device; K may never be exceeded, and each job sees one GPU."""
    gpus = J.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"})
    jobs = _jobs(tmp_path, 4 * per_gpu)
    together = threading.Barrier(2 * per_gpu, timeout=20)
    lock, running, peak, envs = threading.Lock(), Counter(), Counter(), []

    def launcher(job, env):
        device = env["CUDA_VISIBLE_DEVICES"]
        with lock:
            envs.append(env)
            running[device] += 1
            peak[device] = max(peak[device], running[device])
        together.wait()  # raises (the job then fails) unless 2 x K jobs run at once
        time.sleep(0.05)
        with lock:
            running[device] -= 1
        return 0

    failures = J.run_jobs(jobs, 1, gpus, launcher=launcher, base_env={"PATH": "/bin"}, echo=lambda m: None,
                          runs_per_gpu=per_gpu)
    assert failures == []
    assert dict(peak) == {"0": per_gpu, "1": per_gpu}
    assert Counter(e["CUDA_VISIBLE_DEVICES"] for e in envs) == {"0": 2 * per_gpu, "1": 2 * per_gpu}
    growth = {e.get("TF_FORCE_GPU_ALLOW_GROWTH") for e in envs}
    assert growth == ({"true"} if per_gpu > 1 else {None})  # sharing a GPU: memory grows as needed
    assert all(e["PATH"] == "/bin" for e in envs)


def test_a_worker_started_to_die_with_its_parent_does(tmp_path):
    """launch(die_with_parent=True): killing the process that launched the worker (a Ray worker
    process, when its node goes) kills the worker too, so a retry never runs beside it."""
    pid_file = tmp_path / "worker.pid"
    (job,) = _jobs(tmp_path, 1)
    command = (sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
               "time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", (
        "import pickle, sys; from csr.jobs import launch; "
        "launch(pickle.loads(bytes.fromhex(sys.argv[1])), {'PATH': '/bin'}, die_with_parent=True)"),
        pickle.dumps(J.Job(job.spec, command, job.log, job.spec_file)).hex()])
    try:
        end = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < end and parent.poll() is None, "the worker never started"
            time.sleep(0.05)
        worker = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        end = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < end:
            time.sleep(0.05)
        assert not _alive(worker)
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid_file.exists() and pid_file.read_text() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a killed child not yet reaped by its (dead) parent is a zombie


# ----------------------------------------------------------------------------------- csr.ray_jobs

def test_task_resources():
    assert R.task_resources(0, 1) == {"num_cpus": 1, "num_gpus": 0}
    assert R.task_resources(0, 4) == {"num_cpus": 1, "num_gpus": 0}  # CPU-only cluster
    assert R.task_resources(8, 1) == {"num_cpus": 1, "num_gpus": 1.0}
    assert R.task_resources(8, 4) == {"num_cpus": 1, "num_gpus": 0.25}
    with pytest.raises(ValueError):
        R.task_resources(8, 0)


def test_cluster_jobs_name_every_path_absolutely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    places = DataPlaces(data_root="data", esc50_root="esc", cache_dir="cache")
    (job,) = R.cluster_jobs(E.runs_for("table1", "quick")[:1], "results/quick", places)
    assert job.spec_file.is_absolute() and job.log.is_absolute()
    flags = dict(arg[2:].split("=", 1) for arg in job.command if arg.startswith("--") and "=" in arg)
    for name, folder in (("out_dir", "results/quick"), ("data_root", "data"), ("esc50_root", "esc"),
                         ("cache_dir", "cache")):
        assert flags[name] == str(tmp_path / folder)
    assert "us8k_root" not in flags


def test_run_task_retries_only_a_killed_worker(tmp_path, monkeypatch):
    """A worker killed by a signal raises RunKilled (Ray retries it); an exit status is returned;
    the worker runs with this process's Python and sees the task's GPU, with memory growth when
    the GPU is shared."""
    (job,) = _jobs(tmp_path, 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    report = tmp_path / "env.txt"
    code = ("import os, sys; open({!r}, 'w').write(sys.executable + ' ' + os.environ['CUDA_VISIBLE_DEVICES'] "
            "+ ' ' + os.environ.get('TF_FORCE_GPU_ALLOW_GROWTH', '-')); sys.exit(3)").format(str(report))
    status = R.run_task(J.Job(job.spec, ("/nonexistent/python", "-c", code), job.log, job.spec_file), True)
    assert status == 3 and report.read_text() == f"{sys.executable} 3 true"
    assert job.spec_file.exists()  # written first, as the worker reads it
    killed = J.Job(job.spec, ("python", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
                   job.log, job.spec_file)
    with pytest.raises(R.RunKilled, match="signal 9"):
        R.run_task(killed, False)


def test_executor_ray_without_ray_says_how_to_install_it(tmp_path):
    blocked = ("import runpy, sys; sys.modules['ray'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", blocked, str(REPO / "reproduce" / "run_experiment.py"),
                          "--table=ablation", "--profile=quick", "--executor=ray", f"--out_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        'run_experiment.py: error: --executor=ray needs Ray, which is not installed; install it with '
        '`pip install -e ".[cluster]"` (the cluster extra), or use the local executor']
    assert not list(tmp_path.iterdir())  # refused before planning or writing anything
