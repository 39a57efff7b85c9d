"""--executor=ray on a real Ray cluster of two nodes on this machine, against the local executor.

The test starts a Ray head node and one worker node (`ray start --block`, CPU only, one CPU each,
each in its own temp dir and process session, on 127.0.0.1), runs Table 3's four runs of the quick
profile on the project's synthetic data with the local executor (epochs and clips shortened through
RunSpec flags so that the whole file takes a few minutes on 2 cores), then with Ray, two of them
already finished (copied: Ray must skip them) and two run as Ray tasks. It kills the worker process
of one of those with SIGKILL once its first epoch's checkpoint is written, and checks that Ray
starts that run again, that it resumes from the checkpoint, and that every run ends with the same
result.json, and the table with the same text, as with the local executor. Skipped when Ray is not installed
(`pip install -e ".[cluster]"`).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[cluster]")')

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Table 3 of the quick profile, fold 1, two epochs per run, 1 s clips at 8 kHz: a few seconds of
# training per run, so that process start-up and tracing dominate.
RUN_FLAGS = ["--table=ablation", "--profile=quick", "--max_folds=1", "--warmup_epochs=1", "--joint_epochs=1",
             "--supervised_epochs=2", "--sample_rate=8000", "--clip_samples=8000", "--n_fft=256",
             "--hop_length=128", "--n_mels=32", "--f_max=4000"]
KILLED_RUN = "table2/esc50-us8k-proposed"  # a proposed run: warm-up epoch, then the joint epoch
FINISHED_RUNS = ("ablation/esc50-us8k-no_mixing", "ablation/esc50-none-no_unlabeled")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNode:
    """One `ray start --block` process in its own session; stopped by its id (SIGTERM to it, which
    stops the node's processes, then SIGKILL to its process group for anything left)."""

    def __init__(self, args, log: Path):
        ports = {name: _free_port() for name in ("node-manager-port", "object-manager-port",
                                                 "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                 "runtime-env-agent-port", "metrics-export-port")}
        self.temp = tempfile.mkdtemp(prefix="csr-ray-", dir="/tmp")  # short: Ray's socket paths
        self.log = log
        cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
               "--num-gpus=0", f"--temp-dir={self.temp}", "--object-store-memory=80000000",
               "--disable-usage-stats", *args, *(f"--{k}={v}" for k, v in ports.items())]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        with open(log, "w") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def wait_started(self, timeout=120) -> None:
        end = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"ray start failed:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the node's processes share its session
        except ProcessLookupError:
            pass
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The address of a two-node CPU-only Ray cluster on 127.0.0.1."""
    logs = tmp_path_factory.mktemp("ray")
    port = _free_port()
    head = RayNode(["--head", f"--port={port}", "--include-dashboard=false",
                    f"--ray-client-server-port={_free_port()}"], logs / "head.log")
    nodes = [head]
    try:
        head.wait_started()
        nodes.append(RayNode([f"--address=127.0.0.1:{port}"], logs / "worker.log"))
        nodes[-1].wait_started()
        yield f"127.0.0.1:{port}"
    finally:
        for node in reversed(nodes):
            node.stop()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    subprocess.run([sys.executable, "-m", "csr.cli.synthesize", "--out", str(out)], check=True,
                   capture_output=True)
    return out


def _run_experiment(out_dir: Path, synthetic: Path, cache: Path, *extra) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "reproduce" / "run_experiment.py"), *RUN_FLAGS, f"--out_dir={out_dir}",
           f"--esc50_root={synthetic / 'esc'}", f"--us8k_root={synthetic / 'us8k'}", f"--cache_dir={cache}",
           f"--data_root={out_dir / 'data'}", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def _worker_pid(spec_file: Path) -> int | None:
    """The pid of the csr.cli.run_fold process running `spec_file`, if one runs."""
    wanted = f"--spec={spec_file}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"csr.cli.run_fold" in args and wanted in args:
                return int(entry.name)
    return None


def _kill_after_first_checkpoint(root: Path, killed: list, stop: threading.Event) -> None:
    """SIGKILL the worker of KILLED_RUN once its epoch-0 checkpoint exists and before it ends."""
    while not stop.is_set():
        runs = [p for p in root.glob(KILLED_RUN + "*") if p.is_dir()]
        if runs and (runs[0] / "checkpoints" / "epoch-0.index").exists() and not killed:
            pid = _worker_pid(runs[0].with_name(runs[0].name + ".spec.json"))
            if pid is not None and not (runs[0] / "result.json").exists():
                os.kill(pid, signal.SIGKILL)
                killed.append(_identity(runs[0] / "checkpoints" / "epoch-0.index"))
                return
        time.sleep(0.05)


def _identity(path: Path) -> tuple:
    """Which file this is: a checkpoint written again (a run restarted from scratch) is another."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, info.st_size


def _results(root: Path) -> dict:
    return {str(p.parent.relative_to(root)): json.loads(p.read_text()) for p in root.glob("*/*/result.json")}


def test_ray_executor_matches_the_local_one_and_resumes_a_killed_run(tmp_path, cluster, synthetic):
    cache = tmp_path / "cache"
    local = _run_experiment(tmp_path / "local", synthetic, cache, "--jobs=2")
    local_out, _ = local.communicate(timeout=400)
    assert local.returncode == 0, local_out
    expected = _results(tmp_path / "local" / "quick")
    assert len(expected) == 4

    # Two of the four runs are finished already (copied from the local results): Ray skips them.
    ray_root = tmp_path / "ray" / "quick"
    for run in FINISHED_RUNS:
        (found,) = [p for p in (tmp_path / "local" / "quick").glob(run + "*") if p.is_dir()]
        shutil.copytree(found, ray_root / found.relative_to(tmp_path / "local" / "quick"))

    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_after_first_checkpoint, args=(ray_root, killed, stop), daemon=True)
    killer.start()
    ray_run = _run_experiment(tmp_path / "ray", synthetic, cache, "--executor=ray", f"--ray_address={cluster}",
                              "--max_retries=2")
    try:
        ray_out, _ = ray_run.communicate(timeout=400)
    finally:
        stop.set()
        if ray_run.poll() is None:
            ray_run.kill()
    assert ray_run.returncode == 0, ray_out
    assert "4 runs, 2 finished, 2 to run" in ray_out
    assert "Ray cluster: 2 node(s), 2 CPUs, 0 GPUs; each run takes 0 GPU and 1 CPU; 2 run(s) submitted" in ray_out
    assert "[2/2 runs done, 0 failed" in ray_out and "FAILED" not in ray_out

    # The run whose worker was killed was started again (a second command line in its log) and
    # resumed from its first epoch's checkpoint, which it therefore did not write again.
    assert killed, f"the worker of {KILLED_RUN} was never seen running:\n{ray_out}"
    (log,) = ray_root.glob(KILLED_RUN + "*.log")
    assert log.read_text().count("\n=== ") == 2, log.read_text()[-3000:]
    (run,) = [p for p in ray_root.glob(KILLED_RUN + "*") if p.is_dir()]
    assert _identity(run / "checkpoints" / "epoch-0.index") == killed[0]

    # Same results, same table as the local executor.
    assert _results(ray_root) == expected
    assert (ray_root / "table3.md").read_text() == (tmp_path / "local" / "quick" / "table3.md").read_text()
