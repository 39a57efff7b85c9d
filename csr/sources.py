"""Names on the command line -> clip tables: which labeled and unlabeled data a run uses.

`--target esc10 --unlabeled esc40` has to become two DataFrames; this module holds that mapping once
(which combinations make sense is checked by csr.spec).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from csr.errors import UserError


@dataclass(frozen=True)
class DataRoots:
    """Where each dataset lives: ESC-50's layout (meta/esc50.csv, audio/) and UrbanSound8K's."""

    esc50: Path
    us8k: Path

    @classmethod
    def under(cls, data_root, esc50=None, us8k=None) -> "DataRoots":
        from csr.download import DATASETS

        root = Path(data_root)
        return cls(Path(esc50) if esc50 else root / DATASETS["esc50"].folder,
                   Path(us8k) if us8k else root / DATASETS["us8k"].folder)


@dataclass(frozen=True)
class DataPlaces:
    """Where the data sets and the waveform cache are: what a run needs besides its RunSpec.

    Named data sets live under `data_root` (downloaded there when missing) unless `esc50_root` /
    `us8k_root` point elsewhere; the waveform cache is `cache_dir`, by default <data_root>/cache.
    """

    data_root: str = "data/datasets"
    esc50_root: str | None = None
    us8k_root: str | None = None
    cache_dir: str | None = None

    def roots(self) -> DataRoots:
        return DataRoots.under(self.data_root, self.esc50_root, self.us8k_root)

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.data_root) / "cache"

    def ensure(self, specs, progress: bool = True) -> None:
        """Download the named data sets the runs need into data_root (once, before any run starts),
        unless a root of their own is given."""
        from csr.download import ensure_dataset

        needed = set().union(*(needed_datasets(s.target, s.unlabeled) for s in specs))
        given = {"esc50": self.esc50_root, "us8k": self.us8k_root}
        for name in sorted(needed):
            if not given[name]:
                ensure_dataset(name, self.data_root, progress=progress)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)



class SourceError(UserError, ValueError):
    """A --target or --unlabeled value that names no data set, CSV or folder."""


def target_table(target: str, roots: DataRoots):
    """The labeled dataset: a named one, or a user CSV of path,label[,fold]."""
    from csr import datasets

    if target in ("esc10", "esc50"):
        return datasets.esc50(roots.esc50, target)
    if target == "us8k":
        return datasets.urbansound8k(roots.us8k)
    if Path(target).suffix.lower() == ".csv":
        return datasets.from_csv(target)
    raise SourceError(f"--target={target}: not esc10, esc50, us8k or a .csv file of path,label[,fold]")


def unlabeled_table(unlabeled: str, roots: DataRoots):
    """The unlabeled dataset (labels ignored), or None for 'none'."""
    from csr import datasets

    if unlabeled == "none":
        return None
    if unlabeled in ("esc40", "esc50"):
        return datasets.esc50(roots.esc50, unlabeled)
    if unlabeled == "us8k":
        return datasets.urbansound8k(roots.us8k)
    if Path(unlabeled).is_dir():
        return datasets.unlabeled_folder(unlabeled)
    what = ("is a file, not a folder" if Path(unlabeled).is_file() else
            "no such folder" if os.sep in unlabeled or Path(unlabeled).suffix else
            "not esc40, esc50, us8k or none")
    raise SourceError(f"--unlabeled={unlabeled}: {what}; pass esc40, esc50, us8k, none or a folder of audio files")


def needed_datasets(target: str, unlabeled: str) -> set[str]:
    """Which downloadable datasets ('esc50', 'us8k') a run needs."""
    names = set()
    for name in (target, unlabeled):
        if name in ("esc10", "esc40", "esc50"):
            names.add("esc50")
        elif name == "us8k":
            names.add("us8k")
    return names
