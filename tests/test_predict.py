"""Prediction from a run directory: top-k, windows, class names, embeddings, unfinished runs, errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from csr.audio import load_audio
from csr.checkpoint import Checkpoints
from csr.cli.predict import run as main
from csr.predict import PredictError, load_run, predict_files, sidecar_path
from csr.spec import RunSpec
from csr.train import RunData, run

SR, N = 8000, 4000
TINY = {"sample_rate": SR, "clip_samples": N, "n_fft": 256, "hop_length": 64, "n_mels": 32, "f_max": 4000.0}
FREQS = (300.0, 1200.0, 2500.0)


def _tones(count, seed):
    """Three classes: a low, middle or high tone with random phase and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) / SR
    labels = np.arange(count) % 3
    freq = np.asarray(FREQS)[labels][:, None] * rng.uniform(0.9, 1.1, (count, 1))
    waves = np.sin(2 * np.pi * freq * t + rng.uniform(0, 6, (count, 1))) + 0.3 * rng.standard_normal((count, N))
    return waves.astype(np.float16), labels.astype(np.int32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(unfinished, finished): the same 2-epoch run, stopped after epoch 0 and run to the end."""
    root = tmp_path_factory.mktemp("runs")
    cfg = RunSpec(method="supervised", target="tones.csv", unlabeled="none", seed=3, backbone="small",
                  weights=None, supervised_epochs=2, supervised_lr=3e-3, labeled_batch=8, eval_batch=8,
                  last_k=1, **TINY)
    train_w, train_y = _tones(12, 0)
    test_w, test_y = _tones(6, 1)
    data = RunData(train_w, train_y, test_w, test_y, num_classes=3, info={"target": "tones"})
    unfinished, finished = root / "unfinished", root / "finished"
    run(cfg, data, unfinished, verbose=0, stop_after_epoch=0)
    shutil.copytree(unfinished, finished)
    run(cfg, data, finished, verbose=0)
    assert (finished / "model.weights.h5").exists() and not (unfinished / "model.weights.h5").exists()
    return unfinished, finished


def _write(path, wave, sr=SR):
    sf.write(str(path), np.asarray(wave, np.float32), sr, subtype="FLOAT")
    return str(path)


def _tone(freq, seconds, sr=SR, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * freq * t)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    low = _write(d / "low.wav", _tone(300, 0.5))
    # Stereo, 16 kHz, shorter than a clip: exercises mixing, resampling and padding.
    high = _write(d / "high.wav", np.stack([_tone(2500, 0.4, 16000), _tone(2400, 0.4, 16000)], 1), 16000)
    return low, high


def _softmax(logits):
    import tensorflow as tf

    return tf.nn.softmax(tf.cast(logits, tf.float64), axis=-1).numpy()


def _clip(path):
    return load_audio(path, sr=SR, seconds=N / SR)[None]


def test_top_k_is_the_softmax_of_the_models_logits(runs, audio):
    model, names, info = load_run(runs[1])
    assert info["finished"] and info["weights"].endswith("model.weights.h5") and not info["named"]
    assert names == ["class_0", "class_1", "class_2"]
    from csr.model import build_model

    from_checkpoint = build_model(3, backbone="small", weights=None, **TINY)
    checkpoints = Checkpoints(runs[1])
    checkpoints.restore(checkpoints.latest(), from_checkpoint)  # the final checkpoint == the final weights
    for a, b in zip(model.weights, from_checkpoint.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    results = predict_files(model, list(audio), top_k=2, class_names=names)
    for result, path in zip(results, audio):
        assert result.ok and result.path == path and result.windows == 1
        reference = _softmax(model(_clip(path), training=False))[0]
        np.testing.assert_allclose(result.probabilities, reference, atol=1e-6)
        probs = [p for _, _, p in result.top]
        assert len(result.top) == 2 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9
        assert [i for i, _, _ in result.top] == list(np.argsort(-reference)[:2])
        assert [n for _, n, _ in result.top] == [f"class_{i}" for i in np.argsort(-reference)[:2]]
    # Files share batches; the answer must not depend on how they are grouped.
    one_by_one = predict_files(model, list(audio), top_k=5, batch_size=1)
    assert all(len(r.top) == 3 for r in one_by_one)  # top_k beyond the class count gives every class
    for a, b in zip(results, one_by_one):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_windows_average_the_softmax_over_the_whole_file(runs, tmp_path):
    model, _, _ = load_run(runs[1])
    # 2.75 clips: low, high, then 3/4 of a clip of the middle tone -> 3 windows, the last zero-padded.
    wave = np.concatenate([_tone(300, 0.5), _tone(2500, 0.5), _tone(1200, 0.375)])
    path = _write(tmp_path / "long.wav", wave)
    normalised = wave / np.sqrt(np.mean(wave ** 2))  # RMS over the whole file, as load_audio does
    windows = np.concatenate([normalised, np.zeros(N // 4)]).reshape(3, N).astype(np.float32)
    per_window = _softmax(model(windows, training=False))

    (whole,) = predict_files(model, [path], top_k=3, windows=True, batch_size=2)
    assert whole.windows == 3
    np.testing.assert_allclose(whole.probabilities, per_window.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(whole.embedding, model.embed(windows).numpy().mean(axis=0), atol=1e-5)
    (first,) = predict_files(model, [path], top_k=3)  # default: the first clip, as in training
    assert first.windows == 1
    np.testing.assert_allclose(first.probabilities, per_window[0], atol=1e-5)
    assert not np.allclose(first.probabilities, whole.probabilities, atol=1e-4)

    # A remainder under half a clip (here 1/4) is dropped, not padded into a mostly silent window;
    # the RMS is still that of the whole file.
    wave = np.concatenate([_tone(300, 0.5), _tone(2500, 0.5), _tone(1200, 0.125)])
    (short_tail,) = predict_files(model, [_write(tmp_path / "tail.wav", wave)], windows=True)
    kept = (wave[:2 * N] / np.sqrt(np.mean(wave ** 2))).reshape(2, N).astype(np.float32)
    assert short_tail.windows == 2
    np.testing.assert_allclose(short_tail.probabilities,
                               _softmax(model(kept, training=False)).mean(axis=0), atol=1e-5)


def test_class_names_json_names_the_classes(runs, audio, tmp_path, capsys):
    named = tmp_path / "named"
    shutil.copytree(runs[1], named)
    (named / "class_names.json").write_text(json.dumps(["low", "mid", "high"]))
    model, names, info = load_run(named)
    assert names == ["low", "mid", "high"] and info["named"]
    expected = predict_files(model, list(audio), top_k=2, class_names=names)

    assert main(["--run", str(named), *audio, "--top_k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == audio[0] and out[3] == audio[1] and len(out) == 6
    for result, lines in zip(expected, (out[1:3], out[4:6])):
        for rank, ((_, name, p), line) in enumerate(zip(result.top, lines), 1):
            assert line.split() == [f"{rank}.", name, f"{p:.4f}"]

    (named / "class_names.json").write_text(json.dumps(["low", "high"]))
    with pytest.raises(PredictError, match=r"class_names\.json: lists 2 class names.*3 classes"):
        load_run(named)


def test_embed_writes_backbone_features_in_file_order(runs, audio, tmp_path, capsys):
    model, _, _ = load_run(runs[1])
    out = tmp_path / "emb.npy"
    assert main(["--run", str(runs[1]), audio[1], audio[0], "--embed", str(out)]) == 0
    embeddings = np.load(out)
    assert embeddings.shape == (2, 128) and embeddings.dtype == np.float32  # "small": 128-d
    for row, path in zip(embeddings, (audio[1], audio[0])):
        np.testing.assert_allclose(row, model.embed(_clip(path)).numpy()[0], atol=1e-5)
    assert sidecar_path(out) == tmp_path / "emb.files.txt"
    assert sidecar_path(out).read_text().splitlines() == [audio[1], audio[0]]


def test_unfinished_run_falls_back_to_its_checkpoint(runs, audio, capsys):
    from csr.model import build_model

    model, _, info = load_run(runs[0])
    assert not info["finished"] and info["epoch"] == 0 and info["phase"] == "supervised"
    assert "not finished" in info["note"] and str(runs[0]) in info["note"]
    reference = build_model(3, backbone="small", weights=None, **TINY)
    checkpoints = Checkpoints(runs[0])
    checkpoints.restore(checkpoints.latest(), reference)  # the trainer's own reader
    (result,) = predict_files(model, [audio[0]])
    expected = _softmax(reference(_clip(audio[0]), training=False))[0]
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    finished = predict_files(load_run(runs[1])[0], [audio[0]])[0]
    assert not np.allclose(result.probabilities, finished.probabilities, atol=1e-4)

    assert main(["--run", str(runs[0]), audio[0]]) == 0
    assert "not finished" in capsys.readouterr().err


def test_missing_run_or_weights_is_a_clear_error(runs, audio, tmp_path, capsys):
    with pytest.raises(PredictError, match=r"nope: run directory not found"):
        load_run(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PredictError, match=r"empty: not a run directory \(no config\.json\)"):
        load_run(empty)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(runs[1] / "config.json", no_weights)
    with pytest.raises(PredictError, match=r"no_weights: no trained weights: neither model\.weights\.h5"):
        load_run(no_weights)
    assert main(["--run", str(no_weights), audio[0]]) == 2
    captured = capsys.readouterr()
    assert str(no_weights) in captured.err and captured.out == ""


@pytest.mark.parametrize("windows", [False, True])
def test_bad_files_are_reported_and_the_others_still_predicted(runs, audio, tmp_path, capsys, windows):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x01 definitely not audio" * 8)
    missing = tmp_path / "missing.ogg"
    out = tmp_path / "emb.npy"
    argv = ["--run", str(runs[1]), audio[0], str(bad), str(missing), audio[1], "--embed", str(out)]
    assert main(argv + (["--windows"] if windows else [])) == 1
    captured = capsys.readouterr()
    assert f"{bad}: cannot decode audio" in captured.err
    assert f"{missing}: file not found" in captured.err
    assert "2 of 4 files failed" in captured.err
    printed = [line for line in captured.out.splitlines() if not line.startswith(" ")]
    assert printed == [audio[0], audio[1]]
    assert np.load(out).shape == (2, 128)
    assert sidecar_path(out).read_text().splitlines() == [audio[0], audio[1]]


def test_runs_as_an_installed_command(tmp_path):
    command = Path(sys.executable).with_name("csr-predict")  # the console script pip installed
    done = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--[no]windows" in done.stdout and "--embed" in done.stdout
    done = subprocess.run([str(command), "--run", str(tmp_path / "nope"), "x.wav"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"csr-predict: error: {tmp_path / 'nope'}: run directory not found"
