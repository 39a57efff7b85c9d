"""kill -9 soak: a run killed at random moments, again and again, ends with the result of a run never killed.

A tiny run (CSV target, a folder of unlabeled clips, the small backbone, 2 warm-up + 2 joint epochs)
is started with reproduce/run_fold.py and killed with SIGKILL at random moments: during the waveform
cache's build, the warm-up, joint training and the final writes. After each kill the same command
is started again. Its result.json must equal, byte for byte, that of an uninterrupted run of the same
command in another folder. Slow (minutes): `make test-all`.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
KILLS = 10


def _write_data(folder: Path):
    """60 labeled clips (3 tones), 60 unlabeled noise bursts, at 44.1 kHz: the cache resamples them."""
    rng = np.random.default_rng(0)
    sr, t = 44100, np.arange(44100) / 44100
    (folder / "audio").mkdir(parents=True)
    (folder / "pile").mkdir()
    rows = ["path,label,fold"]
    for i in range(60):
        label, freq = [("low", 300.0), ("mid", 1200.0), ("high", 2500.0)][i % 3]
        sf.write(folder / "audio" / f"{label}{i}.wav", np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) * 0.5
                 + 0.05 * rng.standard_normal(t.size), sr)
        rows.append(f"audio/{label}{i}.wav,{label},{i % 3 + 1}")
        sf.write(folder / "pile" / f"u{i}.wav", 0.3 * rng.standard_normal(t.size), sr)
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def _command(data: Path, out: Path, cache: Path):
    return [sys.executable, str(REPO / "reproduce" / "run_fold.py"), f"--target={data / 'labels.csv'}",
            f"--unlabeled={data / 'pile'}", "--backbone=small", "--weights=none", "--sample_rate=8000",
            "--clip_samples=4000", "--n_fft=256", "--hop_length=64", "--n_mels=32", "--f_max=4000",
            "--warmup_epochs=2", "--joint_epochs=2", "--labeled_batch=4", "--unlabeled_batch=4", "--eval_batch=8",
            "--last_k=2", "--warmup_lr=3e-3", "--joint_lr=1e-3", f"--out_dir={out}", f"--cache_dir={cache}",
            "--verbose=0"]


def _epochs(out: Path) -> int:
    runs = [p for p in (out / "custom").glob("*") if p.is_dir()]
    history = runs[0] / "history.csv" if runs else None
    return len(history.read_text().splitlines()) - 1 if history and history.exists() else -1


# Kill targets, in order: what must have happened ("cache": the cache build started; "trained": both
# caches complete, so training is under way; N: N epochs in history.csv), then the most seconds waited
# after it. Epochs 1-2 are the warm-up, 3-4 joint training; the last targets fall in the final writes
# (checkpoint, weights, result.json).
SCHEDULE = [("cache", 0.3), ("cache", 1.0), ("trained", 1.0), ("trained", 2.5), (1, 1.0), (2, 0.5), (2, 2.0),
            (3, 1.0), (4, 0.2), (4, 0.5)]


def _reached(target, out: Path, cache: Path) -> bool:
    manifests = list(cache.glob("waveforms-*.json"))
    if target == "cache":
        return bool(list(cache.glob("waveforms-*.npy")))
    if target == "trained":
        return len(manifests) == 2 and all(json.loads(m.read_text() or "{}").get("complete") for m in manifests)
    return _epochs(out) >= target


def _stage(out: Path, cache: Path) -> str:
    """Where a killed run was: nothing cached, cache built, epochs done, or finished."""
    runs = [p for p in (out / "custom").glob("*") if p.is_dir()]
    if runs and (runs[0] / "result.json").exists():
        return "finished"
    if runs and (runs[0] / "history.csv").exists():
        return f"{len((runs[0] / 'history.csv').read_text().splitlines()) - 1} epochs"
    manifests = list(cache.glob("waveforms-*.json"))
    complete = [m for m in manifests if json.loads(m.read_text() or "{}").get("complete")]
    return f"cache {len(complete)}/{len(manifests)} complete" if manifests else "no cache"


@pytest.mark.slow
def test_kill_9_soak_ends_with_the_uninterrupted_result(tmp_path):
    data = tmp_path / "data"
    _write_data(data)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.monotonic()
    whole = subprocess.run(_command(data, tmp_path / "whole", tmp_path / "cache_whole"), env=env,
                           capture_output=True, text=True, timeout=1200)
    assert whole.returncode == 0, whole.stderr[-3000:]
    duration = time.monotonic() - start
    rng = random.Random(7)
    out, cache, stages = tmp_path / "killed", tmp_path / "cache_killed", []
    for target, most in SCHEDULE:
        process = subprocess.Popen(_command(data, out, cache), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        while process.poll() is None:  # wait for the target moment, then a random moment after it
            if _reached(target, out, cache):
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, most))
        if process.poll() is not None:  # it finished before the kill: nothing left to interrupt
            continue
        process.send_signal(signal.SIGKILL)
        process.wait()
        stages.append(_stage(out, cache))
    final = subprocess.run(_command(data, out, cache), env=env, capture_output=True, text=True, timeout=1200)
    assert final.returncode == 0, final.stderr[-3000:]
    print(f"uninterrupted run {duration:.0f} s; killed at: {stages}")
    assert len(stages) >= KILLS, stages
    (whole_dir,) = [p for p in (tmp_path / "whole" / "custom").iterdir() if p.is_dir()]
    (killed_dir,) = [p for p in (out / "custom").iterdir() if p.is_dir()]
    assert (killed_dir / "result.json").read_text() == (whole_dir / "result.json").read_text()
