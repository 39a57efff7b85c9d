"""The training procedure: phases, outputs, resume after a kill, NaN handling, summaries."""

import json

import numpy as np
import pandas as pd
import pytest

from csr.spec import RunSpec, SpecError
from csr.train import RunData, TrainingDiverged, run, summarize

SR, N = 8000, 4000
TINY = {"sample_rate": SR, "clip_samples": N, "n_fft": 256, "hop_length": 64, "n_mels": 32, "f_max": 4000.0}


def _tones(count, seed):
    """Two learnable classes: a low tone (class 0) or a high tone (class 1), random phase and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) / SR
    labels = np.arange(count) % 2
    freq = np.where(labels == 0, 300.0, 2500.0)[:, None] * rng.uniform(0.9, 1.1, (count, 1))
    waves = np.sin(2 * np.pi * freq * t + rng.uniform(0, 6, (count, 1))) + 0.3 * rng.standard_normal((count, N))
    return waves.astype(np.float16), labels.astype(np.int32)


@pytest.fixture(scope="module")
def data():
    train_w, train_y = _tones(16, 0)
    test_w, test_y = _tones(8, 1)
    unl = np.random.default_rng(2).standard_normal((40, N)).astype(np.float16)
    return RunData(train_w, train_y, test_w, test_y, unl)


def _config(**kw):
    base = dict(method="proposed", unlabeled="tones", seed=3, backbone="small", weights=None,
                warmup_epochs=1, joint_epochs=2, labeled_batch=8, unlabeled_batch=8, eval_batch=8,
                last_k=2, warmup_lr=3e-3, joint_lr=1e-3, **TINY)
    base.update(kw)
    if base["method"] in ("supervised", "supervised_imagenet", "no_unlabeled"):
        base["unlabeled"] = "none"
    return RunSpec(**base)


def test_summarize_best_and_last_k():
    acc = [0.1, 0.5, 0.4, 0.3, 0.2]
    assert summarize(acc, last_k=2) == {"best": 0.5, "last": pytest.approx(0.25), "epochs": 5}
    assert summarize(acc, last_k=20)["last"] == pytest.approx(0.3)
    with pytest.raises(ValueError):
        summarize([])


def test_best_is_taken_over_every_epoch_warm_up_included():
    """Table 1's caption: *best* is "the highest performance in the entire training epochs"."""
    warmup, joint = [0.2, 0.9], [0.5, 0.6, 0.7]
    summary = summarize(warmup + joint, last_k=2, final_phase=joint)
    assert summary == {"best": 0.9, "last": pytest.approx(0.65), "epochs": 3}


def test_phases_follow_the_paper():
    proposed = RunSpec(method="proposed").phases()
    assert [(p.name, p.mode, p.epochs, p.learning_rate) for p in proposed] == [
        ("warmup", "supervised", 20, 1e-4), ("joint", "proposed", 100, 1e-5)]
    assert [(p.name, p.epochs, p.learning_rate)
            for p in RunSpec(method="supervised", unlabeled="none").phases()] == [("supervised", 200, 1e-4)]
    assert [p.epochs for p in RunSpec(target="us8k", unlabeled="esc50").phases()] == [10, 100]
    assert RunSpec(method="no_mixing").augment_config().mixing is False
    assert RunSpec(method="no_unlabeled", unlabeled="none").augment_config().use_unlabeled is False
    with pytest.raises(SpecError, match="--method='fixmatch' is not one of"):
        RunSpec(method="fixmatch")


def test_run_writes_outputs_and_resumes_to_the_same_result(tmp_path, data):
    cfg = _config()
    whole = run(cfg, data, tmp_path / "whole", verbose=0)
    assert whole["epochs"] == 2 and whole["phase"] == ["warmup", "joint", "joint"]
    assert whole["best"] == max(whole["test_accuracy"]) == whole["test_accuracy"][whole["best_epoch"]]
    assert whole["last"] == pytest.approx(np.mean(whole["test_accuracy"][-2:]))
    history = pd.read_csv(tmp_path / "whole" / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2]
    assert history["reg_loss"].iloc[1:].notna().all() and np.isnan(history["reg_loss"].iloc[0])
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["spec"]["method"] == "proposed"
    assert sorted(p.name for p in (tmp_path / "whole" / "checkpoints").glob("*.index")) == [
        "epoch-1.index", "epoch-2.index"]  # the last two

    # Killed after the warm-up, then after the first joint epoch: resuming gives the same numbers.
    assert run(cfg, data, tmp_path / "killed", verbose=0, stop_after_epoch=0) == {}
    assert run(cfg, data, tmp_path / "killed", verbose=0, stop_after_epoch=1) == {}
    resumed = run(cfg, data, tmp_path / "killed", verbose=0)
    assert resumed == whole
    assert (tmp_path / "killed" / "result.json").read_text() == (tmp_path / "whole" / "result.json").read_text()


def test_mixing_in_the_step_trains_like_mixing_in_the_pipeline(tmp_path, data):
    host = run(_config(mix_on="host", joint_epochs=1), data, tmp_path / "host", verbose=0)
    device = run(_config(mix_on="device", joint_epochs=1), data, tmp_path / "device", verbose=0)
    host_hist = pd.read_csv(tmp_path / "host" / "history.csv")
    device_hist = pd.read_csv(tmp_path / "device" / "history.csv")
    # Same views from the same seeds: the joint epoch's losses agree to float rounding.
    for column in ("loss", "clf_loss", "reg_loss", "test_loss"):
        np.testing.assert_allclose(device_hist[column], host_hist[column], rtol=1e-4, err_msg=column)
    assert device["test_accuracy"] == host["test_accuracy"]


def test_supervised_run_learns_the_tones(tmp_path, data):
    result = run(_config(method="supervised", supervised_epochs=6, supervised_lr=3e-3, last_k=2),
                 data, tmp_path, verbose=0)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    # Training accuracy (BatchNorm in training mode): its moving statistics need far more than these
    # few steps before the held-out accuracy means anything.
    assert history["accuracy"].iloc[-1] >= 0.75  # chance is 0.5
    assert result["test_accuracy"] == list(history["test_accuracy"])


def test_a_different_config_in_the_same_run_dir_is_refused(tmp_path, data):
    run(_config(joint_epochs=1, warmup_epochs=0), data, tmp_path, verbose=0, stop_after_epoch=0)
    with pytest.raises(ValueError, match=r"holds another computation \(seed 3 -> 4\); rerun with --overwrite"):
        run(_config(joint_epochs=1, warmup_epochs=0, seed=4), data, tmp_path, verbose=0)


def _weights_of(checkpoint_prefix):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint_prefix))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("backbone")}


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data):
    cfg = _config(method="supervised", supervised_epochs=3)
    run(cfg, data, tmp_path, verbose=0, stop_after_epoch=0)
    good = _weights_of(tmp_path / "checkpoints" / "epoch-0")
    poisoned = RunData(np.full_like(data.train_waves, np.nan), data.train_labels,
                       data.test_waves, data.test_labels)
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        run(cfg, poisoned, tmp_path, verbose=0)
    assert [p.name for p in (tmp_path / "checkpoints").glob("*.index")] == ["epoch-0.index"]
    kept = _weights_of(tmp_path / "checkpoints" / "epoch-0")
    assert kept.keys() == good.keys() and all(np.array_equal(kept[k], good[k]) for k in good)
    assert len(pd.read_csv(tmp_path / "history.csv")) == 1


def test_each_epoch_prints_where_the_run_is_and_how_it_scores(tmp_path, data, capsys):
    run(_config(), data, tmp_path, verbose=2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if " · epoch " in ln]
    assert [ln.split(" · ")[:2] for ln in lines] == [["warm-up 1/1", "epoch 1/3"], ["joint 1/2", "epoch 2/3"],
                                                     ["joint 2/2", "epoch 3/3"]]
    history = pd.read_csv(tmp_path / "history.csv")
    assert f"test acc {100 * history['test_accuracy'].iloc[-1]:.1f}%" in lines[-1]
    assert "reg " in lines[-1] and "contrastive " in lines[-1] and "reg " not in lines[0]
