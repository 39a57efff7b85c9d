"""Never a wrong result from a stale run, never a dead end after a crash.

Run identity (a different computation never reuses a run folder), checkpoint recovery (a damaged
checkpoint costs one epoch), failed starts that leave nothing behind, one-line errors, and the
data edge cases as a run meets them. Every run here is tiny: 0.5 s clips at 8 kHz, the small
backbone, a few epochs.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from csr import rundir
from csr.checkpoint import CheckpointError, Checkpoints
from csr.errors import UserError
from csr.runner import execute
from csr.sources import DataPlaces
from csr.spec import RunSpec, SpecError

REPO = Path(__file__).resolve().parents[1]
SR = 8000
TINY = dict(sample_rate=SR, clip_samples=4000, n_fft=256, hop_length=64, n_mels=32, f_max=4000.0,
            backbone="small", weights=None, labeled_batch=4, unlabeled_batch=4, eval_batch=8, last_k=2,
            warmup_lr=3e-3, joint_lr=1e-3, supervised_lr=3e-3)


def _tone(freq, seed, seconds=0.5):
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    return (np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + 0.2 * rng.standard_normal(t.size)).astype(np.float32)


def write_data(folder: Path, clips_per_class=6, unlabeled=8, name="labels.csv"):
    """A two-class CSV target (low / high tones, folds 1-3) and a folder of unlabeled noise bursts."""
    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,fold"]
    for label, freq in (("low", 300.0), ("high", 2500.0)):
        for i in range(clips_per_class):
            path = audio / f"{label}{i}.wav"
            sf.write(path, _tone(freq * (1 + 0.02 * i), seed=i), SR)
            rows.append(f"audio/{path.name},{label},{i % 3 + 1}")
    csv = folder / name
    csv.write_text("\n".join(rows) + "\n")
    pile = folder / "pile"
    pile.mkdir(exist_ok=True)
    for i in range(unlabeled):
        sf.write(pile / f"u{i}.wav", _tone(700.0 + 150 * i, seed=100 + i), SR)
    return csv, pile


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path / "data")


def spec_for(csv, pile, **changes):
    base = dict(method="proposed", target=str(csv), unlabeled=str(pile), warmup_epochs=1, joint_epochs=1,
                supervised_epochs=2, **TINY)
    base.update(changes)
    if base["method"].startswith("supervised"):
        base["unlabeled"] = "none"
    return RunSpec(**base)


def places(tmp_path):
    return DataPlaces(data_root=str(tmp_path / "datasets"), cache_dir=str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------ run identity
def test_other_epochs_get_their_own_folder_not_the_first_runs_result(tmp_path, data):
    """Before: the second command printed the first run's result ("epochs": 1) and exited 0."""
    csv, pile = data
    out = tmp_path / "results"
    one = execute(spec_for(csv, pile, method="supervised", supervised_epochs=1), places(tmp_path), out, verbose=0)
    three = execute(spec_for(csv, pile, method="supervised", supervised_epochs=3), places(tmp_path), out, verbose=0)
    assert one["epochs"] == 1 and three["epochs"] == 3
    folders = sorted(p.name for p in (out / "custom").iterdir() if p.is_dir())
    assert len(folders) == 2 and all(f.startswith("labels-none-supervised-frac1-fold1-seed0-h") for f in folders)


def test_a_different_csv_of_the_same_name_is_refused_saying_what_differs(tmp_path, data):
    """Before: the second CSV's command returned the first CSV's result."""
    csv, pile = data
    out = tmp_path / "results"
    spec = spec_for(csv, pile, method="supervised", supervised_epochs=1)
    execute(spec, places(tmp_path), out, verbose=0)
    other_csv, _ = write_data(tmp_path / "other", clips_per_class=5)
    other = spec.replace(target=str(other_csv))
    assert other.run_id() == spec.run_id()  # same file name, same settings
    with pytest.raises(rundir.RunFolderError, match=r"holds another computation \(target data .*12 clips.*"
                                                    r"-> .*10 clips.*--overwrite.*--out_dir"):
        execute(other, places(tmp_path), out, verbose=0)
    replaced = execute(other, places(tmp_path), out, overwrite=True, verbose=0)
    assert replaced["data"]["train_clips"] + replaced["data"]["test_clips"] == 10


def test_a_changed_clip_makes_a_finished_run_stale(tmp_path, data):
    csv, pile = data
    out = tmp_path / "results"
    spec = spec_for(csv, pile, method="supervised", supervised_epochs=1)
    execute(spec, places(tmp_path), out, verbose=0)
    from csr.runner import stale_runs

    assert stale_runs([spec], places(tmp_path), out) == []
    sf.write(csv.parent / "audio" / "low0.wav", _tone(300.0, seed=9, seconds=0.4), SR)  # replaced clip
    ((stale, why),) = stale_runs([spec], places(tmp_path), out)
    assert stale == spec and "target data" in why
    with pytest.raises(rundir.RunFolderError, match="target data"):
        execute(spec, places(tmp_path), out, verbose=0)


def test_paper_setting_runs_keep_their_names_and_old_folders_keep_working(tmp_path):
    """Run folders written by earlier versions (config.json format 1, legacy names) stay usable."""
    from csr import experiments as E
    from csr.tables import read_checked_result

    paper = E.runs_for("table1", "paper")[0]
    assert paper.run_id() == paper.legacy_run_id() == "esc10-none-supervised-frac0.1-fold1-seed0"
    quick = E.runs_for("table1", "quick")[0]
    assert quick.run_id() != quick.legacy_run_id()
    for spec in (paper, quick):
        root = tmp_path / spec.backbone
        old = rundir.legacy_path(root, spec)
        old.mkdir(parents=True)
        first_format = {"method": spec.method, "num_classes": 10, "seed": 0, "backbone": spec.backbone,
                        "weights": None, "warmup_epochs": 20, "joint_epochs": spec.joint_epochs,
                        "supervised_epochs": spec.supervised_epochs, "warmup_lr": spec.warmup_lr,
                        "joint_lr": spec.joint_lr, "supervised_lr": spec.supervised_lr, "labeled_batch": 8,
                        "unlabeled_batch": 32, "eval_batch": 32, "reg_weight": 0.05, "temperature": 0.01,
                        "last_k": 20, "mix_snr_db": [-5.0, 20.0], "noise_snr_db": [0.0, 6.0],
                        "model_kwargs": {k: getattr(spec, k) for k in ("bn_momentum", "hop_length", "n_mels")
                                         if getattr(spec, k) != getattr(RunSpec(), k)},
                        "data": {"experiment": "table1", "target": "esc10", "unlabeled": "none",
                                 "fraction": 0.1, "fold": 1}}
        (old / "config.json").write_text(json.dumps(first_format))
        (old / "result.json").write_text(json.dumps({"best": 0.5, "last": 0.4, "method": spec.method}))
        assert rundir.read_config(old).spec.identity() == spec.identity()
        assert read_checked_result(root, spec)["best"] == 0.5  # tables find it where it is
    paper_root, quick_root = tmp_path / paper.backbone, tmp_path / quick.backbone
    assert not rundir.adopt_legacy(paper_root, paper)  # already at its own name
    # A legacy folder of another computation is left alone and not read as this run.
    other = quick.replace(supervised_epochs=5)
    assert rundir.legacy_path(quick_root, other) == rundir.legacy_path(quick_root, quick)
    assert read_checked_result(quick_root, other) is None and not rundir.adopt_legacy(quick_root, other)
    assert rundir.adopt_legacy(quick_root, quick)  # renamed to the id that names its settings
    assert rundir.path(quick_root, quick).is_dir() and not rundir.legacy_path(quick_root, quick).exists()


def test_tables_ignore_a_run_whose_config_shows_other_settings(tmp_path):
    from csr import experiments as E
    from csr.tables import read_checked_result

    spec = E.runs_for("table1", "quick")[0]
    run_dir = rundir.path(tmp_path, spec)
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({"best": 0.9, "last": 0.8}))
    rundir.write_config(run_dir, rundir.RunConfig(spec.replace(supervised_lr=0.5), 10))  # a hand-edited folder
    assert read_checked_result(tmp_path, spec) is None
    rundir.write_config(run_dir, rundir.RunConfig(spec, 10))
    assert read_checked_result(tmp_path, spec)["best"] == 0.9


# --------------------------------------------------------------------------------- checkpoints
def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"")


def test_a_damaged_checkpoint_costs_one_epoch_not_the_run(tmp_path, data, caplog):
    """Before: a truncated last.npz died with zipfile.BadZipFile (an empty one with EOFError)."""
    from csr.runner import describe_data, load_data, prepare_tables
    from csr.train import run

    csv, pile = data
    spec = spec_for(csv, pile, warmup_epochs=1, joint_epochs=2)
    tables = prepare_tables(spec, places(tmp_path).roots())
    info, classes = describe_data(spec, tables)
    run_data = load_data(spec, tables, tmp_path / "cache", info, classes)
    whole = run(spec, run_data, tmp_path / "whole", verbose=0)
    assert run(spec, run_data, tmp_path / "killed", verbose=0, stop_after_epoch=1) == {}
    for how in ("truncated", "empty"):
        shutil.copytree(tmp_path / "killed", tmp_path / how)
        _damage(tmp_path / how / "checkpoints" / "epoch-1.data-00000-of-00001", how)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            resumed = run(spec, run_data, tmp_path / how, verbose=0)
        assert any("epoch-1" in r.getMessage() and "damaged checkpoint" in r.getMessage()
                   for r in caplog.records), how
        assert resumed == whole, how  # epoch 1 was trained again from epoch 0's checkpoint


def test_no_usable_checkpoint_is_one_error_naming_the_files_and_the_choices(tmp_path, data):
    from csr.runner import describe_data, load_data, prepare_tables
    from csr.train import run

    csv, pile = data
    spec = spec_for(csv, pile, method="supervised", supervised_epochs=3)
    tables = prepare_tables(spec, places(tmp_path).roots())
    info, classes = describe_data(spec, tables)
    run_data = load_data(spec, tables, tmp_path / "cache", info, classes)
    run(spec, run_data, tmp_path / "run", verbose=0, stop_after_epoch=1)
    for data_file in (tmp_path / "run" / "checkpoints").glob("*.data-*"):
        _damage(data_file, "truncated")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint \(epoch-1, epoch-0 damaged.*--overwrite"):
        run(spec, run_data, tmp_path / "run", verbose=0)


def test_predict_uses_the_same_loader_and_falls_back(tmp_path, data):
    from csr.predict import load_run
    from csr.runner import describe_data, load_data, prepare_tables
    from csr.train import run

    csv, pile = data
    spec = spec_for(csv, pile, method="supervised", supervised_epochs=3)
    tables = prepare_tables(spec, places(tmp_path).roots())
    info, classes = describe_data(spec, tables)
    run(spec, load_data(spec, tables, tmp_path / "cache", info, classes), tmp_path / "run", verbose=0,
        stop_after_epoch=1)
    _damage(tmp_path / "run" / "checkpoints" / "epoch-1.data-00000-of-00001", "truncated")
    _, _, info = load_run(tmp_path / "run")
    assert info["epoch"] == 0 and not info["finished"] and info["phase"] == "supervised"
    assert (tmp_path / "run" / "checkpoints" / "epoch-1.index").exists()  # predict removes nothing


def test_a_run_checkpointed_as_last_npz_still_resumes(tmp_path, data):
    """Runs of earlier versions kept one checkpoints/last.npz of arrays by position."""
    import keras

    from csr.model import build_model
    from csr.runner import describe_data, load_data, prepare_tables
    from csr.train import run

    csv, pile = data
    spec = spec_for(csv, pile, method="supervised", supervised_epochs=2)
    tables = prepare_tables(spec, places(tmp_path).roots())
    info, classes = describe_data(spec, tables)
    run_data = load_data(spec, tables, tmp_path / "cache", info, classes)
    whole = run(spec, run_data, tmp_path / "whole", verbose=0)
    run(spec, run_data, tmp_path / "old", verbose=0, stop_after_epoch=0)
    # Turn the new checkpoint into the old format, written the way earlier versions wrote it.
    model = build_model(classes, **{**spec.model_settings(), "weights": None})
    model.compile(optimizer=keras.optimizers.Adam(spec.supervised_lr))
    checkpoints = Checkpoints(tmp_path / "old")
    checkpoints.restore(checkpoints.latest(), model, model.optimizer)
    arrays = {f"w{i}": v.numpy() for i, v in enumerate(model.weights)}
    arrays.update({f"o{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)})
    for file in (tmp_path / "old" / "checkpoints").iterdir():
        file.unlink()
    np.savez(tmp_path / "old" / "checkpoints" / "last.npz", epoch=np.int64(0), phase=np.array("supervised"),
             **arrays)
    assert run(spec, run_data, tmp_path / "old", verbose=0) == whole
    assert not (tmp_path / "old" / "checkpoints" / "last.npz").exists()


# --------------------------------------------------------------------------------- failed starts
def test_a_failed_start_leaves_nothing_that_blocks_the_fixed_command(tmp_path, data):
    """Before: config.json was written before the model was built, and the fixed command was refused
    ("a different configuration already lives in this run directory")."""
    csv, pile = data
    out = tmp_path / "results"
    bad = spec_for(csv, pile, weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(UserError, match="missing.weights.h5.*does not exist"):
        execute(bad, places(tmp_path), out, verbose=0)
    assert not rundir.path(out, bad).exists() and not (tmp_path / "cache").exists()  # checked before caching
    fixed = bad.replace(weights=None)
    assert execute(fixed, places(tmp_path), out, verbose=0)["epochs"] == 1


def test_small_backbone_with_imagenet_weights_is_refused_before_anything(data):
    csv, pile = data
    with pytest.raises(SpecError, match="--backbone=small has no ImageNet weights; pass --weights=none"):
        spec_for(csv, pile, weights="imagenet")


def test_offline_imagenet_weights_name_the_file_and_where_keras_looks(tmp_path, monkeypatch):
    import keras

    from csr.model import WeightsError, check_weights

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- no route to host")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(WeightsError) as err:
        check_weights("resnet50v2", "imagenet")
    message = str(err.value)
    assert "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "keras" / "models") in message and "--weights=PATH" in message


def test_an_unwritable_out_dir_is_named_before_any_work(tmp_path, data, monkeypatch):
    csv, pile = data
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="--out_dir: cannot write to"):
        execute(spec_for(csv, pile), places(tmp_path), blocker / "results", verbose=0)
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------------- one-line errors
def run_fold(*args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(REPO / "reproduce" / "run_fold.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_user_mistakes_are_one_line_and_exit_status_2(tmp_path, data):
    """Before: a 17-90 line Python traceback (exit status 1)."""
    csv, pile = data
    (tmp_path / "empty").mkdir()
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("path,label,fold\naudio/low0.wav,low,1\naudio/high0.wav\n")
    base = [f"--target={csv}", f"--unlabeled={pile}", "--backbone=small", "--weights=none",
            f"--out_dir={tmp_path / 'out'}", f"--cache_dir={tmp_path / 'cache'}"]
    cases = {
        "fraction": (["--fraction=2"], "--fraction must be in (0, 1], got 2.0"),
        "fold": (["--fold=7"], "fold 7"),
        "malformed CSV": ([f"--target={bad_csv}"], "bad.csv"),
        "empty unlabeled folder": ([f"--unlabeled={tmp_path / 'empty'}"], "empty"),
        "bad flag value": (["--temperature=abc"], "temperature"),
        "unknown target": (["--target=esc99"], "--target=esc99: not esc10, esc50, us8k or a .csv"),
        "missing unlabeled folder": ([f"--unlabeled={tmp_path / 'nowhere'}"], "no such folder"),
        "unlabeled holds the labeled clips": ([f"--unlabeled={csv.parent / 'audio'}"], "clip(s) of --target="),
    }
    for name, (extra, needle) in cases.items():
        done = run_fold(*base, *extra, cwd=tmp_path)
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert done.returncode == 2, (name, done.stderr[-2000:])
        errors = [i for i, ln in enumerate(lines) if ln.startswith("run_fold.py: error: ")]
        assert len(errors) == 1 and needle in lines[errors[0]], (name, lines)
        assert all(ln.startswith("  ") for ln in lines[errors[0] + 1:]), (name, lines)  # only the list of rows
        assert "Traceback" not in done.stderr, name


def test_a_table_checks_what_its_runs_share_before_any_starts(tmp_path, data):
    """Before: run_experiment started every run, and each failed in turn on the same missing file."""
    from csr.model import WeightsError
    from csr.runner import check_runs

    csv, pile = data
    good = spec_for(csv, pile)
    check_runs([good, good.replace(seed=1)], places(tmp_path))
    with pytest.raises(WeightsError, match="nowhere.weights.h5' does not exist"):
        check_runs([good, good.replace(weights=str(tmp_path / "nowhere.weights.h5"))], places(tmp_path))
    with pytest.raises(UserError, match="holds 12 clip"):
        check_runs([good.replace(unlabeled=str(csv.parent / "audio"))], places(tmp_path))


def test_a_resumed_history_reads_back_every_digit(tmp_path):
    """Before: pandas' default float parser read 0.10000000149011612 back as 0.1000000014901161, so a
    resumed run's result.json differed from an uninterrupted one's in the last digit."""
    from csr.train import HISTORY_COLUMNS, _read_history, _write_history

    row = {k: 0 for k in HISTORY_COLUMNS}
    row.update(phase="joint", loss=1.8456249237060547, test_accuracy=0.10000000149011612)
    _write_history(tmp_path / "history.csv", [row])
    (back,) = _read_history(tmp_path / "history.csv")
    assert back["loss"] == row["loss"] and back["test_accuracy"] == row["test_accuracy"]


# --------------------------------------------------------------------------- data edge cases in a run
def test_an_unreadable_unlabeled_file_is_skipped_and_counted(tmp_path, data, caplog):
    csv, pile = data
    (pile / "cut.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")  # a download cut short
    spec = spec_for(csv, pile)
    with caplog.at_level(logging.WARNING):
        result = execute(spec, places(tmp_path), tmp_path / "results", verbose=0)
    assert result["data"]["unlabeled_skipped"] == 1 and result["data"]["unlabeled_clips"] == 8
    assert any("cut.wav" in r.getMessage() for r in caplog.records)


def test_an_unreadable_labeled_file_stops_the_run_naming_it(tmp_path, data):
    csv, pile = data
    (csv.parent / "audio" / "low1.wav").write_bytes(b"not audio at all")
    with pytest.raises(UserError, match="low1.wav"):
        execute(spec_for(csv, pile), places(tmp_path), tmp_path / "results", verbose=0)


def test_thin_splits_are_warned_about_in_the_run(tmp_path, caplog):
    csv, pile = write_data(tmp_path / "data", clips_per_class=2)
    with caplog.at_level(logging.WARNING):
        execute(spec_for(csv, pile, method="supervised", supervised_epochs=1), places(tmp_path),
                tmp_path / "results", verbose=0)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "1 training clip" in text and "test clips" in text


def test_result_files_respect_the_umask(tmp_path, data):
    """Before: config.json, result.json, history.csv and class_names.json were written 0600."""
    csv, pile = data
    previous = os.umask(0o022)
    try:
        spec = spec_for(csv, pile, method="supervised", supervised_epochs=1)
        execute(spec, places(tmp_path), tmp_path / "results", verbose=0)
    finally:
        os.umask(previous)
    run_dir = rundir.path(tmp_path / "results", spec)
    for name in ("config.json", "result.json", "history.csv", "class_names.json", "model.weights.h5"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o644, name
