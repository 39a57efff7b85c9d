"""Progress bars on a terminal only: a log file or a pipe gets one final line instead.

tqdm redraws its bar with carriage returns; written into `make table1 > log` or a run's .log file
that is thousands of half-lines. `bar` is tqdm when stderr is a terminal, else an object with the
same `update`/`close` that prints one line when the work is done.
"""

from __future__ import annotations

import sys
import time


class _FinalLine:
    """tqdm's interface, printing `desc: n unit in s` once, on close."""

    def __init__(self, total, desc: str, initial: int = 0, unit: str = "it", unit_scale: bool = False):
        self.total, self.desc, self.n, self.unit, self.scale = total, desc, initial, unit, unit_scale
        self.start, self.closed = time.monotonic(), False

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        plural = "s" if self.n != 1 and len(self.unit) > 1 else ""
        amount = (f"{self.n / 1e6:.1f} M{self.unit}" if self.scale and self.n >= 1e6
                  else f"{self.n} {self.unit}{plural}")
        of = f" of {self.total}" if self.total and not self.scale and self.total != self.n else ""
        print(f"{self.desc}: {amount}{of} in {time.monotonic() - self.start:.1f} s", file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def bar(total, desc: str, *, enabled: bool = True, initial: int = 0, unit: str = "it", unit_scale: bool = False):
    """A tqdm bar on a terminal, one final line elsewhere, nothing when not `enabled`."""
    if enabled and sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale)
    if not enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, disable=True)
    return _FinalLine(total, desc, initial, unit, unit_scale)
