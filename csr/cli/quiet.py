"""A newcomer's first screen should not look broken: TensorFlow's harmless start-up lines hidden.

TensorFlow prints, on every start, CUDA/cuDNN/cuBLAS "Unable to register factory" errors, CPU
feature notes and TensorRT warnings, and XLA prints absl INFO lines (`I0000 ... service.cc:145] XLA
service ... initialized`) the first time it compiles, preceded by "WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR". None of them means anything is wrong.

`quiet_tensorflow` sets TF_CPP_MIN_LOG_LEVEL=3, which silences TensorFlow's own logging but not
XLA's absl lines (TensorFlow 2.16 never initialises absl logging, and absl reads no environment
variable). `filter_native_stderr` therefore routes the process's native stderr (file descriptor 2,
what C++ code writes to) through a small filter process that drops absl INFO/WARNING lines and that
notice and passes everything else; Python's own stderr (logging, progress bars, tracebacks) keeps
the original stream directly. The filter is a separate process, so it drains every line even when
this process is killed. CSR_VERBOSE=1 turns both off.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

# Lines the filter drops: absl's INFO/WARNING format (`I0000 00:00:1796130856.589521   10231 service.cc:145] ...`)
# and absl's notice that it was never initialised.
NOISE = r"^([IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] |WARNING: All log messages before absl::InitializeLog)"

_FILTER = f"""
import re, sys
noise = re.compile({NOISE!r})
for line in sys.stdin.buffer:
    if not noise.match(line.decode("utf-8", "replace")):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


def verbose() -> bool:
    return os.environ.get("CSR_VERBOSE", "") not in ("", "0")


def quiet_tensorflow() -> None:
    """TF_CPP_MIN_LOG_LEVEL=3 unless CSR_VERBOSE=1. Call before TensorFlow loads."""
    if not verbose():
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


def filter_native_stderr() -> subprocess.Popen | None:
    """Send file descriptor 2 through the noise filter (see the module docstring); returns the filter
    process, or None when CSR_VERBOSE=1. Call once, early, before TensorFlow loads."""
    if verbose():
        return None
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    filter_process = subprocess.Popen([sys.executable, "-c", _FILTER], stdin=read_end, stdout=original,
                                      close_fds=True)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    # Python's stderr writes to the original stream: tracebacks and progress bars never wait on the filter.
    sys.stderr = io.TextIOWrapper(os.fdopen(original, "wb", buffering=0), write_through=True,
                                  encoding=sys.stderr.encoding, errors="backslashreplace")
    return filter_process
