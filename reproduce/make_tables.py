"""Aggregate finished runs into the paper's tables, Figure 3 and a REPORT.md.

    python reproduce/make_tables.py --results results --profile paper --tables table1,table2,ablation,figure3

Reads <results>/<profile dir>/<experiment>/<run-id>/result.json (the profile dir is empty for
`paper`, `quick` for the quick profile) and writes table1.md, table2.md, table3.md (the ablation),
figure3.png and REPORT.md there (or in --out). Missing runs are listed, never fatal.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path

from absl import flags

from csr import experiments as E
from csr import figures, rundir, tables
from csr.cli import UsageError, run_script
from csr.runio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]

FLAGS = flags.FLAGS
CHOICES = E.TABLES + (E.FIGURE,)


def define_flags() -> None:
    """Flags are defined only when run as a script, so tests can import this module."""
    flags.DEFINE_string("results", "results", "The --out_dir the runs were written to.")
    flags.DEFINE_enum("profile", "paper", list(E.PROFILES), "Which profile's runs to aggregate.")
    flags.DEFINE_list("tables", None, f"Any of {', '.join(CHOICES)} (default: all; sensitivity when its runs exist).")
    flags.DEFINE_string("out", None, "Output folder (default: the profile's results folder).")
    flags.DEFINE_integer("ddof", 0, "Std estimator: 0 population (numpy default), 1 sample.")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    if out.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def environment() -> dict:
    """The software and devices of the machine writing the report."""
    import keras
    import numpy
    import tensorflow as tf

    devices = [f"{d.device_type}: {d.name}" for d in tf.config.list_physical_devices()]
    return {"python": platform.python_version(), "platform": platform.platform(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": numpy.__version__,
            "devices": devices, "git commit": git_commit(),
            "written": datetime.datetime.now().isoformat(timespec="seconds")}


def run_seeds(root: Path) -> list[int]:
    """The seeds recorded in the config.json of every run under root."""
    seeds = set()
    for path in root.glob(f"*/*/{rundir.CONFIG}"):
        try:
            seeds.add(rundir.read_config(path.parent).spec.seed)
        except ValueError:
            continue
    return sorted(seeds)


def write_outputs(root: Path, out: Path, profile: E.Profile, which, ddof: int = 0) -> list[Path]:
    """Write the requested tables (and figure) into out; returns the written files."""
    written = []
    for name in which:
        if name == E.FIGURE:
            written.append(figures.figure3(root, profile, out / "figure3.png"))
            continue
        path = out / tables.TABLE_FILES[name]
        atomic_write_text(path, tables.render(name, root, profile, ddof) + "\n")
        written.append(path)
        if name == "sensitivity":
            written.append(figures.sensitivity_heatmap(root, profile, out / "sensitivity.png"))
    return written


def render_report(out: Path, profile: E.Profile, env: dict, seeds, reproduction_md: str | None,
                  paired: str | None = None) -> str:
    """REPORT.md: every table and figure present in out, the paired comparisons, the environment
    and the deviations."""
    lines = ["# csr: reproduction report", "",
             "Lee & Lee, *Cross-domain semi-supervised audio event classification using contrastive "
             "regularization*, ICASSP 2022, reproduced in TensorFlow/Keras.", "",
             profile.describe(), ""]
    for name in E.TABLES:
        path = out / tables.TABLE_FILES[name]
        if path.exists():
            lines += [path.read_text().rstrip(), ""]
    if (out / "sensitivity.png").exists():
        lines += ["![Sensitivity](sensitivity.png)", ""]
    if (out / "figure3.png").exists():
        lines += ["## Figure 3: learning curves", "", "![Figure 3](figure3.png)", ""]
    if paired:
        lines += [paired.rstrip(), ""]
    lines += ["## Environment", ""]
    lines += [f"- {k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in env.items()]
    lines += [f"- run seeds: {', '.join(map(str, seeds)) if seeds else 'no runs found'} "
              f"(the profile's: {', '.join(map(str, profile.seeds))}; every cell is run once per fold and seed)", ""]
    lines += ["## Deviations and choices the paper leaves open", ""]
    if reproduction_md is None:
        lines += ["docs/reproduction.md was not found beside this script.", ""]
    else:
        lines += ["From `docs/reproduction.md` at the time of writing:", ""]
        # Demote its headings one level so they nest under this section.
        lines += [("#" + ln) if ln.startswith("#") else ln for ln in reproduction_md.rstrip().splitlines()]
        lines.append("")
    return "\n".join(lines)


def main(argv):
    del argv
    unknown = [t for t in FLAGS.tables or [] if t not in CHOICES]
    if unknown:
        raise UsageError(f"--tables: unknown {unknown}; choose from {', '.join(CHOICES)}")
    root = E.result_root(FLAGS.results, E.get_profile(FLAGS.profile))
    profile = E.load_profile(root, FLAGS.profile)
    out = Path(FLAGS.out) if FLAGS.out else root
    out.mkdir(parents=True, exist_ok=True)
    which = FLAGS.tables or [t for t in CHOICES if t != "sensitivity" or (root / "sensitivity").is_dir()]
    for path in write_outputs(root, out, profile, which, FLAGS.ddof):
        print(path)
    docs = REPO / "docs" / "reproduction.md"
    present = [t for t in E.TABLES if (out / tables.TABLE_FILES[t]).exists()]
    report = render_report(out, profile, environment(), run_seeds(root),
                           docs.read_text() if docs.exists() else None, tables.render_paired(root, profile, present))
    atomic_write_text(out / "REPORT.md", report + "\n")
    print(out / "REPORT.md")


if __name__ == "__main__":
    define_flags()
    run_script(main)
