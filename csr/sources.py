"""Names on the command line -> clip tables: which labeled and unlabeled data a run uses.

`--target esc10 --unlabeled esc40` has to become two DataFrames, and some combinations make no sense
(a supervised baseline with unlabeled data, unlabeled data that contains the target's test clips).
This module holds those rules once, for run_fold.py, the experiment registry and predict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TARGETS = ("esc10", "esc50", "us8k")
UNLABELED = ("esc40", "esc50", "us8k", "none")
SUPERVISED_METHODS = ("supervised", "supervised_imagenet")


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


def check_combination(method: str, target: str, unlabeled: str) -> None:
    """Refuse flag combinations that cannot be what the user meant, saying what would work."""
    if method in SUPERVISED_METHODS and unlabeled != "none":
        raise ValueError(f"--method={method} trains on labeled data only; pass --unlabeled=none, "
                         "or use --method=proposed to use unlabeled data")
    if method == "no_unlabeled" and unlabeled != "none":
        raise ValueError("--method=no_unlabeled is the -Unlabeled ablation (contrastive term on the "
                         "labeled batch alone); pass --unlabeled=none")
    if method in ("proposed", "no_mixing") and unlabeled == "none":
        raise ValueError(f"--method={method} needs unlabeled data (--unlabeled=esc40|esc50|us8k|FOLDER); "
                         "for the contrastive term on labeled data alone use --method=no_unlabeled")
    overlapping = {("esc10", "esc50"), ("esc50", "esc40"), ("esc50", "esc50"), ("us8k", "us8k")}
    if (target, unlabeled) in overlapping:
        raise ValueError(f"--unlabeled={unlabeled} contains the clips of --target={target}, test folds "
                         "included; use disjoint data (esc10 with esc40; esc50 with us8k; us8k with esc50)")


def target_table(target: str, roots: DataRoots):
    """The labeled dataset: a named one, or a user CSV of path,label[,fold]."""
    from csr import datasets

    if target in ("esc10", "esc50"):
        return datasets.esc50(roots.esc50, target)
    if target == "us8k":
        return datasets.urbansound8k(roots.us8k)
    if Path(target).suffix.lower() == ".csv":
        return datasets.from_csv(target)
    raise ValueError(f"unknown --target {target!r}: use esc10, esc50, us8k or a CSV of path,label[,fold]")


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
    raise ValueError(f"unknown --unlabeled {unlabeled!r}: use esc40, esc50, us8k, none or a folder of audio")


def needed_datasets(target: str, unlabeled: str) -> set[str]:
    """Which downloadable datasets ('esc50', 'us8k') a run needs."""
    names = set()
    for name in (target, unlabeled):
        if name in ("esc10", "esc40", "esc50"):
            names.add("esc50")
        elif name == "us8k":
            names.add("us8k")
    return names
