"""A first screen that does not look broken: TensorFlow/XLA start-up noise hidden, real errors kept."""

import os
import subprocess
import sys

SCRIPT = r"""
import os, sys
from csr.cli.quiet import filter_native_stderr
filter_native_stderr()
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
os.write(2, b"I0000 00:00:1796130856.589521   10231 service.cc:145] XLA service 0x7f2f initialized\n")
os.write(2, b"W0000 00:00:1796130856.589667   10231 service.cc:153]   StreamExecutor device (0): Host\n")
os.write(2, b"E0000 00:00:1796130856.5 10231 cuda_fft.cc:479] a real native error\n")
os.write(2, b"native text that is not a log line\n")
print("python stderr line", file=sys.stderr)
raise SystemExit("a python error message")
"""


def _run(env_extra):
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60)


def test_absl_info_and_warning_lines_are_dropped_everything_else_kept():
    done = _run({"CSR_VERBOSE": ""})
    assert done.returncode == 1
    assert "I0000" not in done.stderr and "W0000" not in done.stderr and "absl::InitializeLog" not in done.stderr
    for kept in ("a real native error", "native text that is not a log line", "python stderr line",
                 "a python error message"):
        assert kept in done.stderr, kept


def test_csr_verbose_shows_everything():
    done = _run({"CSR_VERBOSE": "1"})
    assert "I0000" in done.stderr and "absl::InitializeLog" in done.stderr


def test_a_command_starts_without_tensorflows_start_up_lines(tmp_path):
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "csr-predict"), "--run",
                           str(tmp_path / "nope"), "x.wav"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "CSR_VERBOSE": ""})
    assert done.stderr.splitlines() == [f"csr-predict: error: {tmp_path / 'nope'}: run directory not found"]
