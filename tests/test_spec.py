"""Every knob of the method is a flag: each changes what a run computes, a bad value is refused.

The method's settings (temperature, lambda_reg, mixing and noise SNR ranges, noise colours,
projection size) are RunSpec fields, so flags of run_fold.py and run_experiment.py, recorded in
config.json, and part of the run id only when they differ from the paper's.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from scipy import signal

from csr.augment import batch_split_mix
from csr.spec import RunSpec, SpecError

REPO = Path(__file__).resolve().parents[1]
N = 2**15


def white_clips(rows, seed):
    return np.random.default_rng(seed).standard_normal((rows, N)).astype(np.float32)


def views(spec: RunSpec, seed=3, **changes):
    """(s1, s1~) of batch-split mixing with the spec's augmentation (optionally changed)."""
    import dataclasses

    config = dataclasses.replace(spec.augment_config(), **changes)
    s1, s1_aug, _, _ = batch_split_mix(white_clips(8, 0), white_clips(8, 1), config, seed=seed)
    return s1.numpy().astype(np.float64), s1_aug.numpy().astype(np.float64)


def slope(x, sr=22050):
    freqs, psd = signal.welch(x, fs=sr, nperseg=2048)
    band = (freqs >= 100) & (freqs <= 8000)
    return np.polyfit(np.log10(freqs[band]), np.log10(psd[band]), 1)[0]


def test_noise_snr_of_100_db_makes_the_views_noise_free():
    loud, quiet = RunSpec(), RunSpec(noise_snr_db=(100, 100))
    _, noiseless = views(quiet, noise=False)
    _, nearly = views(quiet)
    _, noisy = views(loud)
    assert np.max(np.abs(nearly - noiseless)) < 1e-3 * np.max(np.abs(noiseless))
    assert np.max(np.abs(noisy - noiseless)) > 0.1 * np.max(np.abs(noiseless))


@pytest.mark.parametrize("snr", [0.0, 10.0])
def test_mix_snr_sets_the_measured_snr(snr):
    """Uncorrelated white clips: P(view) = P(anchor) (1 + 10^(-SNR/10)) up to chance correlation."""
    s1, view = views(RunSpec(mix_snr_db=(snr, snr)), noise=False)
    ratio = np.mean(view**2, axis=1) / np.mean(s1**2, axis=1)
    assert ratio == pytest.approx(np.full(8, 1 + 10 ** (-snr / 10)), rel=0.03)


@pytest.mark.parametrize("color, expected", [("white", 0.0), ("brown", -2.0)])
def test_noise_colors_choose_the_noise(color, expected):
    spec = RunSpec(noise_colors=(color,), noise_snr_db=(0, 0))
    _, with_noise = views(spec)
    _, without = views(spec, noise=False)
    noise = (with_noise - without).ravel()  # mixing is additive: the difference is the noise alone
    assert slope(noise) == pytest.approx(expected, abs=0.3)


def _step_logs(spec: RunSpec, batch):
    import keras

    from csr.model import build_model

    model = build_model(2, **{**spec.model_settings(), "seed": 0})
    model.configure(mode="proposed", options=spec.step_options())
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    return {k: float(v) for k, v in model.train_on_batch(batch, return_dict=True).items()}, model


@pytest.fixture(scope="module")
def tiny_batch():
    from csr import pipeline

    tiny = RunSpec(sample_rate=8000, clip_samples=4000, n_fft=256, hop_length=64, n_mels=32, f_max=4000.0,
                   backbone="small", weights=None)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4000)).astype(np.float32)
    u = rng.standard_normal((8, 4000)).astype(np.float32)
    ds = pipeline.proposed_dataset(x, np.arange(8) % 2, u, epoch=0, seed=0, labeled_batch=8, unlabeled_batch=8,
                                   mix_on="host")
    return tiny, {k: v.numpy() for k, v in next(iter(ds)).items()}


def test_temperature_reg_weight_and_projection_dim_change_the_step(tiny_batch):
    tiny, batch = tiny_batch
    base, model = _step_logs(tiny, batch)
    hotter, _ = _step_logs(tiny.replace(temperature=0.5), batch)
    heavier, _ = _step_logs(tiny.replace(reg_weight=0.5), batch)
    wider, wide_model = _step_logs(tiny.replace(projection_dim=32), batch)
    assert hotter["reg_loss"] != pytest.approx(base["reg_loss"], rel=1e-3)
    assert base["loss"] == pytest.approx(base["clf_loss"] + 0.05 * base["reg_loss"], rel=1e-5)
    assert heavier["loss"] == pytest.approx(heavier["clf_loss"] + 0.5 * heavier["reg_loss"], rel=1e-5)
    assert model.project(tf.zeros((1, 4000))).shape[-1] == 64
    assert wide_model.project(tf.zeros((1, 4000))).shape[-1] == 32


@pytest.mark.parametrize("changes, message", [
    (dict(temperature=0.0), "--temperature must be positive"),
    (dict(temperature=-1.0), "--temperature must be positive"),
    (dict(reg_weight=-0.1), "--reg_weight must not be negative"),
    (dict(mix_snr_db=(20, -5)), "--mix_snr_db: LOW must not exceed HIGH"),
    (dict(noise_snr_db="0"), "--noise_snr_db must be two numbers LOW,HIGH"),
    (dict(noise_colors=("white", "purple")), "--noise_colors must be one or more of"),
    (dict(noise_colors=()), "--noise_colors must be one or more of"),
    (dict(projection_dim=0), "--projection_dim must be positive"),
])
def test_bad_values_are_refused_naming_the_flag(changes, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        RunSpec(**changes)


def test_a_bad_value_is_refused_before_any_data_loads(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(REPO / "reproduce" / "run_fold.py"), "--temperature=0",
                           f"--target={tmp_path / 'nowhere.csv'}", "--unlabeled=none", "--method=no_unlabeled",
                           f"--out_dir={tmp_path / 'out'}"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == "run_fold.py: error: --temperature must be positive, got 0.0"
    assert not (tmp_path / "out").exists()


def test_knobs_are_recorded_and_named_in_the_run_id_only_when_not_the_papers():
    paper = RunSpec()
    assert paper.run_id() == "esc10-esc40-proposed-frac1-fold1-seed0"
    changed = paper.replace(temperature=0.1, reg_weight=0.025)
    assert changed.run_id() == "esc10-esc40-proposed-frac1-fold1-seed0-tau0.1-lambda0.025"
    hashed = {paper.replace(**c).run_id() for c in (dict(mix_snr_db=(0, 10)), dict(noise_snr_db=(3, 6)),
                                                       dict(noise_colors=("white",)), dict(projection_dim=128))}
    assert len(hashed) == 4 and all("-h" in i for i in hashed)
    assert json.loads(json.dumps(changed.to_json()))["reg_weight"] == 0.025
    assert RunSpec.from_json(json.loads(json.dumps(changed.to_json()))) == changed
    # A baseline never reads the contrastive settings: they do not make it another run.
    baseline = RunSpec(method="supervised", unlabeled="none")
    assert baseline.replace(temperature=0.5).run_id() == baseline.run_id()
